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


def self_train_head(head, source_features, source_targets, target_features, shares=(0.6, 0.9), epochs=10,
                    batch_size=32, learning_rate=1e-3, min_change=0.01, seed=1234, verbose=0):
    """Self-training over frozen features: each round `head` predicts the
    target features, their most confident `share` (balanced over the
    predicted classes) take its predictions as labels, and `head` trains
    on the labelled source rows and those for `epochs` epochs. Rounds take
    `shares` in turn and stop early when fewer than `min_change` of the
    target predictions changed since the last round (no target labels).

    Args:
        head: a Keras model from features to class probabilities, trained
            on the source (`domain_adaptation.adapt`); trained in place.
        source_features, source_targets: the labelled source rows.
        target_features: the unlabelled target rows.
        shares, epochs, batch_size, learning_rate, min_change: as above.
        seed: the shuffling seed.

    Returns:
        A list with a dict a round: `share`, `selected`, `changed`.

    Example:
    >>> head, _ = adapt(books, books_targets, kitchen, 2, "source_only")
    >>> self_train_head(head, books, books_targets, kitchen)
    """
    import keras  # Kept local: the two pure pieces above need no Keras.

    keras.utils.set_random_seed(seed)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy())
    rounds, previous = [], None
    for share in shares:
        probabilities = head.predict(target_features, batch_size=256, verbose=0)
        predictions = probabilities.argmax(-1)
        changed = 1.0 if previous is None else changed_share(previous, predictions)
        if previous is not None and changed < min_change:
            break
        rows, labels = confident_pseudo_labels(probabilities, share)
        head.fit(np.concatenate([source_features, target_features[rows]]),
                 np.concatenate([np.asarray(source_targets), labels]),
                 batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
        rounds.append({"share": share, "selected": int(len(rows)), "changed": changed})
        previous = predictions
    return rounds
