"""SQuAD's metrics, as its official evaluation script (v1.1) defines them.

Answers are normalised (lower case, punctuation and the articles "a", "an",
"the" removed, whitespace collapsed); exact match is 1 when the normalised
prediction equals a normalised gold answer, F1 is the harmonic mean of token
precision and recall against a gold answer; each takes the best over the
question's gold answers, and both are averaged over questions, x 100. A
question with no gold answer (SQuAD v2.0) counts 1 only for an empty
prediction.
"""

import collections

from tl_keras.data.squad import normalize_answer
from tl_keras.evaluation.plots import pyplot

def exact_match(prediction, gold):
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction, gold):
    """Token-overlap F1 of the normalised answers.

    Example:
    >>> token_f1("Denver Broncos", "the Broncos")
    0.6666666666666666
    """
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions, golds):
    """Exact match and F1 (x 100) of answer texts against their gold
    answers, the best over each row's golds.

    Args:
        predictions: answer strings, one a row.
        golds: a gold answer string a row, or a list of them (an empty
            list: only `""` is right).

    Returns:
        `{"exact_match": ..., "f1": ..., "examples": N}`.

    Example:
    >>> answer_scores(["Denver Broncos"], [["Denver Broncos", "Broncos"]])
    {'exact_match': 100.0, 'f1': 100.0, 'examples': 1}
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers; one each.")
    exact = f1 = 0.0
    for prediction, wanted in zip(predictions, golds):
        wanted = [wanted] if isinstance(wanted, str) else (list(wanted) or [""])
        exact += max(exact_match(prediction, gold) for gold in wanted)
        f1 += max(token_f1(prediction, gold) for gold in wanted)
    count = max(len(golds), 1)
    return {"exact_match": 100 * exact / count, "f1": 100 * f1 / count, "examples": len(golds)}


def squad_scores(predictions, questions):
    """Exact match and F1 (x 100) of `predictions` over `questions`.

    Args:
        predictions: a dict of question id to answer text (every question
            must have one; `""` for no answer).
        questions: `tl_keras.data.squad.Question`s.

    Returns:
        `{"exact_match": ..., "f1": ..., "questions": N}`.

    Example:
    >>> squad_scores({"q1": "Denver Broncos"}, [question])
    {'exact_match': 100.0, 'f1': 100.0, 'questions': 1}
    """
    missing = [question.id for question in questions if question.id not in predictions]
    if missing:
        raise ValueError(f"No prediction for {len(missing)} question(s), e.g. {missing[0]!r}.")
    scores = answer_scores([predictions[question.id] for question in questions],
                           [question.answer_texts for question in questions])
    return {"exact_match": scores["exact_match"], "f1": scores["f1"], "questions": scores["examples"]}


def plot_squad_scores(metrics, history, path):
    """Two panels: validation F1 after each epoch beside the lexical
    baseline's (dashed), and the test split's F1 and exact match of the
    reader and of the baseline's variants.

    Args:
        metrics: `{"test": ..., "lexical": ...}` as the question answering
            workflow writes them.
        history: the `fit` history (with `val_f1`).
        path: the PNG to write.

    Example:
    >>> plot_squad_scores(result.metrics, result.history, "runs/squad/squad.png")
    """
    plt = pyplot()
    lexical = metrics["lexical"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    f1 = history.get("val_f1", [])
    left.plot(range(1, len(f1) + 1), f1, marker="o", label="reader")
    left.axhline(lexical[lexical["chosen"]]["validation"]["f1"], linestyle="--", color="grey",
                 label=f"lexical ({lexical['chosen']})")
    left.set(xlabel="epoch", ylabel="F1", title="Validation F1 after each epoch", ylim=(0, 100))
    left.legend()
    names = ["reader", "lexical span", "lexical sentence"]
    figures = [metrics["test"], lexical["span"]["test"], lexical["sentence"]["test"]]
    positions = range(len(names))
    right.bar([p - 0.2 for p in positions], [f["f1"] for f in figures], width=0.4, label="F1")
    right.bar([p + 0.2 for p in positions], [f["exact_match"] for f in figures], width=0.4, label="exact match")
    right.set_xticks(list(positions), names)
    right.set(title=f"Test split ({metrics['test']['questions']} questions)", ylim=(0, 100))
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_answer_scores(metrics, history, path):
    """Two panels: the loss on the answer tokens after each epoch (training
    and validation pairs), and the exact match and F1 of the fine-tuned
    decoder beside the same decoder prompted before training, on validation
    and test.

    Args:
        metrics: `{"validation": ..., "test": ..., "prompted": {...}}` as
            the generation workflow writes them.
        history: the `fit` history (with `loss`, `val_loss`).
        path: the PNG to write.

    Example:
    >>> plot_answer_scores(result.metrics, result.history, "runs/qa/answers.png")
    """
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "training pairs"), ("val_loss", "validation pairs")):
        values = history.get(key, [])
        left.plot(range(1, len(values) + 1), values, marker="o", label=label)
    left.set(xlabel="epoch", ylabel="loss on the answer tokens", title="Answer loss after each epoch")
    left.legend()
    bars = [(f"{split}\n{name}", split, measure)
            for split in ("validation", "test") for measure, name in (("exact_match", "exact match"), ("f1", "F1"))]
    positions = range(len(bars))
    right.bar([p - 0.2 for p in positions], [metrics["prompted"][s][m] for _, s, m in bars], width=0.4,
              color="grey", label="prompted, before training")
    right.bar([p + 0.2 for p in positions], [metrics[s][m] for _, s, m in bars], width=0.4, label="fine-tuned")
    right.set_xticks(list(positions), [name for name, _, _ in bars])
    right.set(ylabel="score (x 100)", ylim=(0, 118), yticks=range(0, 101, 20),
              title=f"Answers ({metrics['test']['examples']} test pairs)")
    right.legend(loc="upper center", ncol=2)  # Above the bars: the scores stop at 100.
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
