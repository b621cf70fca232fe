"""Held-out metrics, the confusion matrix and learning-curve plots."""

import pathlib

import numpy as np

from tl_keras.core.files import write_json
from tl_keras.data.texts import MULTILABEL_THRESHOLD
from tl_keras.evaluation.plots import pyplot


def confusion_matrix(targets, predicted, num_classes):
    """Returns the `[true, predicted]` count matrix."""
    matrix = np.zeros((num_classes, num_classes), "int64")
    np.add.at(matrix, (np.asarray(targets), np.asarray(predicted)), 1)
    return matrix


def _precision_recall_f1(true_positive, predicted_positive, actual_positive):
    precision = np.divide(true_positive, predicted_positive, out=np.zeros(len(true_positive)), where=predicted_positive > 0)
    recall = np.divide(true_positive, actual_positive, out=np.zeros(len(true_positive)), where=actual_positive > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(total)), where=total > 0)
    return precision, recall, f1


def _per_class(names, precision, recall, f1, support):
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }


def evaluate_predictions(outputs, targets, vocabulary):
    """Computes held-out metrics from model outputs.

    Args:
        outputs: the model's outputs: probabilities `[N, C]`, or `[N, 1]`
            values for regression.
        targets: the encoded targets (`LabelVocabulary.encode`).
        vocabulary: the `LabelVocabulary`.

    Returns:
        A JSON-ready dict. Classification: accuracy, macro precision, recall
        and F1, a per-class report and the confusion matrix. Multi-label: the
        same per class at threshold 0.5, with micro F1 and exact-match
        accuracy. Regression: MSE, MAE and R².

    Example:
    >>> evaluate_predictions(np.array([[0.9, 0.1]]), np.array([0]), vocab)["accuracy"]
    1.0
    """
    outputs = np.asarray(outputs)
    targets = np.asarray(targets)
    if vocabulary.task == "regression":
        values = outputs.reshape(-1)
        error = values - targets
        variance = np.var(targets)
        return {
            "task": "regression",
            "examples": int(len(targets)),
            "mse": float(np.mean(error**2)),
            "mae": float(np.mean(np.abs(error))),
            "r2": float(1 - np.mean(error**2) / variance) if variance > 0 else 0.0,
        }
    names = list(vocabulary.names)
    if vocabulary.task == "multilabel":
        predicted = outputs >= MULTILABEL_THRESHOLD
        actual = targets >= 0.5
        true_positive = (predicted & actual).sum(axis=0)
        precision, recall, f1 = _precision_recall_f1(true_positive, predicted.sum(axis=0), actual.sum(axis=0))
        _, _, micro_f1 = _precision_recall_f1(
            np.array([true_positive.sum()]), np.array([predicted.sum()]), np.array([actual.sum()])
        )
        return {
            "task": "multilabel",
            "examples": int(len(targets)),
            "exact_match_accuracy": float(np.mean(np.all(predicted == actual, axis=1))),
            "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()),
            "micro_f1": float(micro_f1[0]),
            "per_class": _per_class(names, precision, recall, f1, actual.sum(axis=0)),
        }
    predicted = outputs.argmax(axis=1)
    matrix = confusion_matrix(targets, predicted, len(names))
    true_positive = np.diag(matrix)
    precision, recall, f1 = _precision_recall_f1(true_positive, matrix.sum(axis=0), matrix.sum(axis=1))
    return {
        "task": "classification",
        "examples": int(len(targets)),
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": _per_class(names, precision, recall, f1, matrix.sum(axis=1)),
        "confusion_matrix": {"labels": names, "rows_true_columns_predicted": matrix.tolist()},
    }


def summary_line(metrics):
    """One line of the headline metrics, naming their split."""
    keys = {
        "classification": ("accuracy", "macro_f1", "macro_precision", "macro_recall"),
        "multilabel": ("exact_match_accuracy", "macro_f1", "micro_f1"),
        "regression": ("mse", "mae", "r2"),
    }[metrics["task"]]
    parts = [f"{key}={metrics[key]:.4f}" for key in keys]
    return f"{metrics.get('split', 'held-out')} ({metrics['examples']} examples): " + " ".join(parts)


def plot_confusion_matrix(metrics, path):
    """Writes the confusion matrix as a PNG heat map with counts."""
    plt = pyplot()
    names = metrics["confusion_matrix"]["labels"]
    matrix = np.array(metrics["confusion_matrix"]["rows_true_columns_predicted"])
    size = 2.5 + 0.5 * len(names)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{metrics.get('split', 'held-out')} accuracy {metrics['accuracy']:.3f} ({metrics['examples']} examples)")
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_learning_curve(history, path):
    """Writes training and validation curves a metric, one panel each, with
    the training phases (e.g. head warm-up, then full) shaded apart."""
    plt = pyplot()
    metrics = [key for key in history if key != "phase" and not key.startswith("val_")]
    figure, panels = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    epochs = np.arange(1, len(history["phase"]) + 1)
    for axes, key in zip(panels[0], metrics):
        axes.plot(epochs, history[key], marker="o", label=f"train {key}")
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], marker="o", label=f"validation {key}")
        for epoch, (before, after) in enumerate(zip(history["phase"], history["phase"][1:]), start=1):
            if before != after:
                axes.axvline(epoch + 0.5, color="grey", linestyle="--")
                axes.text(epoch + 0.5, axes.get_ylim()[1], f" {after}", va="top", color="grey")
        axes.set_xticks(epochs)
        axes.set_xlabel("epoch")
        axes.set_title(key)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(metrics, history, directory, write_metrics=True):
    """Writes `metrics.json` (unless `write_metrics` is false: a workflow
    writes all its splits in one), `confusion_matrix.png` (classification)
    and `learning_curve.png` into `directory`; returns the paths written.
    The plots name the split the metrics come from (`metrics["split"]`)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    if write_metrics:
        paths.append(write_json(directory / "metrics.json", {"metrics": metrics, "history": history}))
    if "confusion_matrix" in metrics:
        paths.append(directory / "confusion_matrix.png")
        plot_confusion_matrix(metrics, paths[-1])
    if history.get("phase"):
        paths.append(directory / "learning_curve.png")
        plot_learning_curve(history, paths[-1])
    return paths
