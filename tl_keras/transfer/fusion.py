"""Model fusion: weight soups and prediction ensembles of fine-tuned models
(and ensembles of image classifiers on different backbones).

A soup averages the weights of models fine-tuned from the same backbone with
the same architecture (Wortsman et al. 2022, "Model soups"), so it costs one
model's inference; an ensemble averages their probabilities and costs all of
them. Both return a plain functional `keras.Model` that exports like any
other.
"""


import keras
import numpy as np


class FusionError(ValueError):
    """Models that cannot be fused, with what differs."""


def _signature(model):
    """The layer classes and weight shapes, in order (names differ between
    models built in one session, so they are left out)."""
    layers = [type(layer).__name__ for layer in model._flatten_layers()]
    return layers + [tuple(weight.shape) for weight in model.weights]


def check_compatible(models, vocabularies=None, same_architecture=True):
    """Raises `FusionError` unless all `models` share one architecture (the
    same layers and weight shapes) and, if given, one label vocabulary."""
    if len(models) < 2:
        raise FusionError(f"Fusion needs at least two models, received {len(models)}.")
    reference = _signature(models[0])
    for index, model in enumerate(models[1:], start=1):
        signature = _signature(model)
        if same_architecture and signature != reference:
            different = next(
                (f"{a} vs {b}" for a, b in zip(reference, signature) if a != b),
                f"{len(reference)} vs {len(signature)} layers and weights",
            )
            raise FusionError(f"Model {index} has another architecture than model 0: {different}.")
        if model.output.shape[-1] != models[0].output.shape[-1]:
            raise FusionError(
                f"Model {index} has {model.output.shape[-1]} outputs, model 0 has {models[0].output.shape[-1]}."
            )
    if vocabularies is not None:
        for index, vocabulary in enumerate(vocabularies[1:], start=1):
            if vocabulary != vocabularies[0]:
                raise FusionError(
                    f"Model {index} predicts other labels than model 0: "
                    f"{list(vocabulary.names)} ({vocabulary.task}) vs "
                    f"{list(vocabularies[0].names)} ({vocabularies[0].task})."
                )


def uniform_soup(models, vocabularies=None):
    """Returns a copy of `models[0]` holding the mean of all their weights.

    Example:
    >>> soup = uniform_soup([model_seed_1, model_seed_2, model_seed_3])
    """
    check_compatible(models, vocabularies)
    weights = [model.get_weights() for model in models]
    soup = keras.models.clone_model(models[0])
    soup.set_weights([np.mean(group, axis=0).astype(group[0].dtype) for group in zip(*weights)])
    return soup


def greedy_soup(models, score, vocabularies=None):
    """The greedy soup: models sorted by `score` (higher is better, e.g.
    validation accuracy), each added to the soup only if the soup's score
    does not drop.

    Args:
        models: fine-tuned models of one architecture.
        score: a function from a model to a number.

    Returns:
        `(soup, kept)`: the soup model and the indices of the models in it.

    Example:
    >>> soup, kept = greedy_soup(models, lambda m: accuracy(m, validation))
    """
    check_compatible(models, vocabularies)
    scores = [score(model) for model in models]
    order = sorted(range(len(models)), key=lambda i: scores[i], reverse=True)
    kept = [order[0]]
    soup, best = models[order[0]], scores[order[0]]
    for index in order[1:]:
        candidate = uniform_soup([models[i] for i in kept + [index]])
        candidate_score = score(candidate)
        if candidate_score >= best:
            kept.append(index)
            soup, best = candidate, candidate_score
    if len(kept) == 1:
        soup = keras.models.clone_model(soup)
        soup.set_weights(models[kept[0]].get_weights())
    return soup, kept


def ensemble(models, vocabularies=None, image_size=None):
    """Returns one functional model averaging the outputs of `models`.

    Text models share their token inputs. Image models (float pixels
    `[N, h, w, 3]`, such as `ImageClassifier`s) may each take their own
    size, as EfficientNet-Lite0, Lite1 and Lite2 do at 224, 240 and 260:
    the ensemble takes pixels at `image_size` (the member's of the most
    pixels when `None`) and resizes them (bilinear) for each member of another size.

    Args:
        models: the trained Keras models, with one output width.
        vocabularies: their `LabelVocabulary`s, checked to be equal.
        image_size: `(height, width)` of an image ensemble's input.

    Example:
    >>> averaged = ensemble([model_a, model_b])
    >>> photos = ensemble([lite0_classifier, lite1_classifier, lite2_classifier])  # Pixels at 260 x 260.
    >>> export_image_model(photos, lite0_classifier.vocabulary, (260, 260), "exports", "products")
    """
    check_compatible(models, vocabularies, same_architecture=False)
    # Each member in a wrapper of its own name: the members share layer names.
    members = [keras.Model(model.input, model.output, name=f"member_{i}") for i, model in enumerate(models)]
    if isinstance(models[0].input, dict):
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in models[0].input}
        outputs = [member(inputs) for member in members]
    else:
        sizes = [tuple(model.input.shape[1:3]) for model in models]
        if any(None in size or len(size) != 2 for size in sizes):
            raise FusionError(f"An image ensemble needs members of a fixed image size, received sizes {sizes}.")
        image_size = tuple(int(side) for side in (image_size or max(sizes, key=lambda size: size[0] * size[1])))
        inputs = keras.Input(shape=(*image_size, 3), name="pixels")
        outputs = [member(inputs if size == image_size else
                          keras.layers.Resizing(*size, interpolation="bilinear", name=f"resize_{i}")(inputs))
                   for i, (member, size) in enumerate(zip(members, sizes))]
    return keras.Model(inputs, keras.layers.Average(name="ensemble_mean")(outputs), name="ensemble")
