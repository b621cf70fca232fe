"""Reading SQuAD-format question answering data and splitting it by article.

A SQuAD file is `{"data": [{"title": ..., "paragraphs": [{"context": ...,
"qas": [{"id": ..., "question": ..., "answers": [{"text": ...,
"answer_start": ...}], "is_impossible": ...}]}]}]}` (v1.1; v2.0 adds
`is_impossible` and questions with no answer). Every record is checked as it
is read: a bad one raises `DataError` naming the file, the question id (or
its place in the file) and the value.

Example:
>>> questions = read_squad("data/squad/squad_v1.1_12_articles.json")
>>> questions[0].question
'To whom did the Virgin Mary allegedly appear in 1858 in Lourdes France?'
"""

import dataclasses
import json
import pathlib
import re
import string

import numpy as np

from tl_keras.data.texts import DataError, decode_utf8

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s|$)|$)", re.DOTALL)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """SQuAD's answer normalisation (its official evaluation script's):
    lower case, no punctuation, no articles, single spaces.

    Example:
    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    """
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def sentence_spans(context):
    """The `(start, end)` character spans of a context's sentences: runs
    ending in `.`, `!` or `?` before whitespace (or the text's end).

    Example:
    >>> sentence_spans("Denver won. Carolina lost!")
    [(0, 11), (12, 26)]
    """
    return [match.span() for match in _SENTENCE.finditer(context)]


@dataclasses.dataclass(frozen=True)
class Question:
    """One question on one context, with its gold answers.

    Args:
        id: the question's id.
        title: the article's title.
        question: the question's text.
        context: the paragraph the answer is a span of.
        answers: `(text, character_start)` pairs; empty for a question with
            no answer in the context (SQuAD v2.0).
    """

    id: str
    title: str
    question: str
    context: str
    answers: tuple

    @property
    def answer_texts(self):
        return [text for text, _ in self.answers]


def _string(value, where, name):
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: `{name}` must be a non-empty string, received {str(value)[:80]!r}.")
    return value


def _list(value, where, name):
    if not isinstance(value, list):
        raise DataError(f"{where}: `{name}` must be a list, received {str(value)[:80]!r}.")
    return value


def read_squad(path):
    """Reads a SQuAD-format JSON file (v1.1 or v2.0) into `Question`s.

    Args:
        path: the `.json` file.

    Returns:
        A list of `Question`s, in file order.

    Raises:
        DataError: naming the file, the question (id, or article/paragraph
            number) and the value, for a file that is not SQuAD JSON, a
            context or question with no text, an answer whose
            `answer_start` is not an offset into the context, or whose text
            differs from the context at that offset.

    Example:
    >>> [q.answers for q in read_squad("dev-v1.1.json")[:1]]
    [(('Denver Broncos', 177), ('Denver Broncos', 177), ('Denver Broncos', 177))]
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    try:
        document = json.loads(decode_utf8(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply.") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: expected a SQuAD object with a `data` list, received {str(document)[:80]!r}.")
    questions, ids = [], set()
    for article_number, article in enumerate(document["data"], start=1):
        where = f"{path}: article {article_number}"
        if not isinstance(article, dict):
            raise DataError(f"{where}: expected an object, received {str(article)[:80]!r}.")
        title = str(article.get("title", f"article {article_number}"))
        for paragraph_number, paragraph in enumerate(_list(article.get("paragraphs"), where, "paragraphs"), start=1):
            where = f"{path}: article {title!r}, paragraph {paragraph_number}"
            if not isinstance(paragraph, dict):
                raise DataError(f"{where}: expected an object, received {str(paragraph)[:80]!r}.")
            context = _string(paragraph.get("context"), where, "context")
            for number, record in enumerate(_list(paragraph.get("qas"), where, "qas"), start=1):
                question = _question(record, f"{where}, question {number}", title, context)
                if question.id in ids:
                    raise DataError(f"{path}: question id {question.id!r} appears twice.")
                ids.add(question.id)
                questions.append(question)
    if not questions:
        raise DataError(f"{path}: the file holds no questions.")
    return questions


def _question(record, where, title, context):
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, received {str(record)[:80]!r}.")
    identifier = record.get("id")
    if identifier is not None:  # Named by its id rather than its place.
        where = f"{where.rsplit(', question', 1)[0]}, question {identifier!r}"
    identifier = _string(identifier, where, "id")
    text = _string(record.get("question"), where, "question")
    answers = []
    for answer in _list(record.get("answers", []), where, "answers"):
        if not isinstance(answer, dict):
            raise DataError(f"{where}: an answer must be an object, received {str(answer)[:80]!r}.")
        answer_text = _string(answer.get("text"), where, "answers.text")
        start = answer.get("answer_start")
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= len(context) - len(answer_text):
            raise DataError(f"{where}: `answer_start` {start!r} is not an offset of {answer_text!r} in a context "
                            f"of {len(context)} characters.")
        found = context[start:start + len(answer_text)]
        if found != answer_text:
            raise DataError(f"{where}: the answer {answer_text!r} does not match the context at `answer_start` "
                            f"{start} (the context has {found!r} there).")
        answers.append((answer_text, start))
    if not answers and not record.get("is_impossible", False):
        raise DataError(f"{where}: no answers, and `is_impossible` is not true.")
    return Question(identifier, title, text, context, tuple(answers))


def split_by_article(questions, fractions=(0.8, 0.2), seed=1234):
    """Splits questions by article: every article's questions go to one
    part, so no context is shared between training and test. Articles are
    shuffled with `seed` and dealt out until each part holds about its
    fraction of the questions.

    Args:
        questions: `Question`s.
        fractions: each part's share of the questions (summing to 1).
        seed: the shuffle's seed.

    Returns:
        A list of lists of `Question`s, a list a fraction.

    Example:
    >>> train, validation, test = split_by_article(questions, (0.7, 0.1, 0.2))
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or len(fractions) < 2 or (fractions <= 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"`fractions` must be two or more positive shares summing to 1, received "
                         f"{tuple(fractions.tolist())!r}.")
    titles = sorted({question.title for question in questions})
    if len(titles) < len(fractions):
        raise ValueError(f"{len(titles)} article(s) cannot be split into {len(fractions)} parts by article.")
    order = np.random.default_rng(seed).permutation(len(titles))
    sizes = {title: 0 for title in titles}
    for question in questions:
        sizes[question.title] += 1
    goals = fractions * len(questions)
    part_of, counts, part = {}, np.zeros(len(fractions)), len(fractions) - 1
    # The last part (the test) is filled first; each part moves on to the one
    # before it once it holds its share, or when the articles left are only
    # enough for one each of the parts still empty.
    for rank, index in enumerate(order):
        if part > 0 and (counts[part] >= goals[part] or len(titles) - rank <= part):
            part -= 1
        part_of[titles[index]] = part
        counts[part] += sizes[titles[index]]
    return [[question for question in questions if part_of[question.title] == number]
            for number in range(len(fractions))]
