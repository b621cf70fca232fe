"""The lexical question-answering baseline: no learning, word overlap only.

It picks the context sentence sharing the most (normalised, non-stop) words
with the question, then, in that sentence, the span of at most
`max_words` words that holds no question word and has the most question
words within `window` words around it (ties: the shorter, then the
earlier span). A learned reader must beat this to be worth its cost.
"""

import re

from tl_keras.data.squad import normalize_answer, sentence_spans

STOP_WORDS = frozenset(
    "a an the of in on at to for by with from and or is was are were be been what which who whom whose when "
    "where why how did do does that this these those it its as than into".split())
_WORD = re.compile(r"\S+")


def content_words(words):
    """The normalised words of `words` that are not stop words, as a set."""
    return {word for word in (normalize_answer(word) for word in words) if word and word not in STOP_WORDS}


class LexicalAnswerer:
    """The word-overlap baseline (see the module's docstring).

    Args:
        max_words: the longest span it answers.
        window: words either side of a span that count its question words.

    Example:
    >>> LexicalAnswerer().answer("Who won Super Bowl 50?", context)
    'Denver Broncos'
    """

    def __init__(self, max_words=4, window=5):
        self.max_words, self.window = max_words, window

    def best_sentence(self, question, context):
        """The context sentence sharing the most content words with the question."""
        wanted = content_words(question.split())
        sentences = [context[start:end] for start, end in sentence_spans(context)] or [context]
        return max(sentences, key=lambda sentence: len(wanted & content_words(sentence.split())))

    def answer(self, question, context):
        """The baseline's answer: a span of the best sentence."""
        wanted = content_words(question.split())
        words = _WORD.findall(self.best_sentence(question, context))
        normalised = [normalize_answer(word) for word in words]
        in_question = [word in wanted for word in normalised]
        best, best_key = "", None
        for first in range(len(words)):
            for last in range(first, min(first + self.max_words, len(words))):
                if in_question[last] or not normalised[last]:
                    break
                around = set(normalised[max(0, first - self.window):first]) | set(
                    normalised[last + 1:last + 1 + self.window])
                key = (len(around & wanted), -(last - first), -first)
                if best_key is None or key > best_key:
                    best, best_key = " ".join(words[first:last + 1]), key
        return best.strip(".,;:!?\"'()")

    def predict(self, questions):
        """A dict of question id to answer for `Question`s."""
        return {question.id: self.answer(question.question, question.context) for question in questions}

    def predict_sentences(self, questions):
        """A dict of question id to its best sentence (the sentence itself as the answer)."""
        return {question.id: self.best_sentence(question.question, question.context) for question in questions}
