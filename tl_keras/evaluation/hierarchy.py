"""Fine and coarse labels: a fine classifier scored at both levels, and
falling back to the coarse class when the fine one is unsure.

A coarse class's probability is the sum of its fine classes' (`Apple` =
`Granny-Smith` + `Golden-Delicious` + ...). With a threshold t, a prediction
names the fine class when its probability is at least t, else only the
coarse class; it is right when the level it answers at is right. The
accuracy/coverage curve over t shows what the fallback buys.

Example:
>>> report = hierarchical_report(probabilities, targets, classifier.vocabulary.names, catalogue.coarse_of)
>>> report["fine_accuracy"], report["coarse_accuracy"]
"""

import numpy as np

from tl_keras.evaluation.plots import pyplot

THRESHOLDS = tuple(np.round(np.linspace(0, 1, 21), 2))


def hierarchical_report(probabilities, targets, fine_names, coarse_of, thresholds=THRESHOLDS):
    """Fine and coarse accuracy, and the fallback's accuracy and fine
    coverage at each threshold.

    Args:
        probabilities: `[N, F]` fine class probabilities.
        targets: `[N]` fine class indices.
        fine_names: the fine class names, in the columns' order.
        coarse_of: each fine name's coarse name.
        thresholds: the fallback thresholds.

    Returns:
        A dict: `fine_accuracy`, `coarse_accuracy` (argmax of the summed
        probabilities), `coarse_classes`, and `fallback`: a list of
        `{"threshold", "accuracy", "fine_coverage"}`.
    """
    missing = [name for name in fine_names if name not in coarse_of]
    if missing:
        raise ValueError(f"No coarse class for {missing[:5]!r}.")
    coarse_names = sorted(set(coarse_of[name] for name in fine_names))
    member = np.array([[coarse_of[name] == coarse for coarse in coarse_names] for name in fine_names], float)
    probabilities, targets = np.asarray(probabilities, float), np.asarray(targets)
    fine_right = probabilities.argmax(axis=1) == targets
    coarse_right = (probabilities @ member).argmax(axis=1) == member[targets].argmax(axis=1)
    confidence = probabilities.max(axis=1)
    fallback = []
    for threshold in thresholds:
        fine = confidence >= threshold
        fallback.append({"threshold": float(threshold),
                         "accuracy": float(np.mean(np.where(fine, fine_right, coarse_right))),
                         "fine_coverage": float(np.mean(fine))})
    return {"fine_accuracy": float(fine_right.mean()), "coarse_accuracy": float(coarse_right.mean()),
            "coarse_classes": len(coarse_names), "fallback": fallback}


def plot_fallback(report, path, title="Falling back to the coarse class"):
    """The fallback's accuracy against its fine coverage, a point a
    threshold, with the fine-only and coarse-only accuracies as lines.

    Example:
    >>> plot_fallback(report, "runs/grocery/fallback.png")
    """
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4))
    coverage = [point["fine_coverage"] for point in report["fallback"]]
    accuracy = [point["accuracy"] for point in report["fallback"]]
    axes.plot(coverage, accuracy, marker="o", label="fine when sure, else coarse")
    axes.axhline(report["fine_accuracy"], linestyle="--", color="grey", label="fine always")
    axes.axhline(report["coarse_accuracy"], linestyle=":", color="grey", label="coarse always")
    for number, point in enumerate(report["fallback"][::5]):
        # Labels alternate above and below the curve so neighbours do not overlap.
        axes.annotate(f"t={point['threshold']:.2f}", (point["fine_coverage"], point["accuracy"]), fontsize=7,
                      xytext=(8, 6 if number % 2 else -14), textcoords="offset points", annotation_clip=False,
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    axes.set_xlim(-0.05, 1.1)
    axes.set(xlabel="share answered with the fine class", ylabel="accuracy (at the level answered)", title=title)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
