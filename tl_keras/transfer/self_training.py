"""Self-training on unlabelled target texts: pick the examples a classifier
is most sure of, take its predictions as their labels, train on them, and
repeat with a growing share, stopping when the predictions settle (a rule
that needs no target labels).

`Classifier.self_train` runs the loop; this module holds its two pure
pieces.

Example:
>>> rows, labels = confident_pseudo_labels(probabilities, share=0.6)
>>> changed_share(previous_predictions, probabilities.argmax(-1))
0.004
"""

import numpy as np


def confident_pseudo_labels(probabilities, share):
    """The most confident `share` of the rows, the same number for each
    predicted class (so a classifier leaning to one class does not pull the
    pseudo-labels further that way), with their predicted classes.

    Args:
        probabilities: `[rows, classes]` predicted probabilities.
        share: the share of rows to keep, in (0, 1].

    Returns:
        `(rows, labels)`: sorted row indices and their predicted class ids.
    """
    if not 0 < share <= 1:
        raise ValueError(f"`share` must be in (0, 1], received {share!r}.")
    probabilities = np.asarray(probabilities)
    predicted, confidence = probabilities.argmax(-1), probabilities.max(-1)
    per_class = int(share * len(probabilities) / probabilities.shape[-1])
    rows = []
    for label in range(probabilities.shape[-1]):
        members = np.flatnonzero(predicted == label)
        rows.extend(members[np.argsort(-confidence[members], kind="stable")][:per_class].tolist())
    rows = np.array(sorted(rows), dtype=np.int64)
    return rows, predicted[rows]


def changed_share(previous, current):
    """The share of rows whose predicted class changed between two rounds."""
    previous, current = np.asarray(previous), np.asarray(current)
    return float(np.mean(previous != current)) if len(current) else 0.0
