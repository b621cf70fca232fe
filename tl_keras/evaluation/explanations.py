"""Why a model decided: integrated gradients (Sundararajan et al. 2017), and
pages people read instead of numbers.

Integrated gradients attribute `f(x) - f(x')` (the predicted class's
probability at the input minus at a baseline `x'`) to the input's parts:
`(x - x') * mean over alpha of grad f(x' + alpha (x - x'))`, summed over an
embedding's or a pixel's channels. By completeness the attributions add up
to `f(x) - f(x')`; the Riemann sum (trapezoids, `steps` points) misses it by
a gap that shrinks with more steps, reported as `completeness_gap`.

Baselines: for text, every token's input embedding replaced by the
embedding of the padding token, except the special tokens (`[CLS]`,
`[SEP]`), which stay; for images, a black image.
"""

import dataclasses
import html
import pathlib
import textwrap

import keras
import numpy as np
import tensorflow as tf

from tl_keras.evaluation.plots import pyplot


@dataclasses.dataclass
class Explanation:
    """The attributions of one input.

    Args:
        label: the class explained (the predicted one unless asked).
        probability: `f(x)`, its probability at the input.
        baseline_probability: `f(x')`.
        attributions: per token (text) or `[h, w]` per pixel (images).
        tokens: the tokens (text), or `None`.
        image: the uint8 image (images), or `None`.
        completeness_gap: `|sum(attributions) - (f(x) - f(x'))|`.
    """

    label: str
    probability: float
    baseline_probability: float
    attributions: np.ndarray
    tokens: list = None
    image: np.ndarray = None
    completeness_gap: float = 0.0


def integrated_gradients(function, inputs, baseline, target, steps=64):
    """Integrated gradients of `function(x)[:, target]` from `baseline` to
    `inputs` (one example, no batch axis), trapezoid rule over `steps`
    intervals. Returns `(attributions like inputs, f(inputs), f(baseline))`.

    Example:
    >>> attributions, f_x, f_base = integrated_gradients(model, x, np.zeros_like(x), target=1)
    """
    inputs, baseline = tf.constant(inputs, tf.float32), tf.constant(baseline, tf.float32)
    alphas = tf.reshape(tf.linspace(0.0, 1.0, steps + 1), [-1] + [1] * len(inputs.shape))
    gradients = []
    for start in range(0, steps + 1, 16):  # 16 interpolation points a batch.
        path = baseline + alphas[start:start + 16] * (inputs - baseline)
        with tf.GradientTape() as tape:
            tape.watch(path)
            outputs = function(path)[:, target]
        gradients.append(tape.gradient(outputs, path))
    gradients = tf.concat(gradients, axis=0)
    average = tf.reduce_mean((gradients[:-1] + gradients[1:]) / 2.0, axis=0)
    ends = function(tf.stack([inputs, baseline]))[:, target]
    return ((inputs - baseline) * average).numpy(), float(ends[0]), float(ends[1])


def text_embedding_model(backbone, outputs_of_sequence):
    """A functional model from a KerasHub text backbone's token embeddings
    (and its other inputs) to a task's outputs: the same layers and
    weights, entered after the token embedding lookup, so gradients reach
    the embeddings. `outputs_of_sequence(sequence_output, padding_mask)` is
    the task's own pooling and head."""
    others = [name for name in backbone.input if name != "token_ids"]
    tail = keras.Model([backbone.token_embedding.output, *[backbone.input[n] for n in others]], backbone.output)
    embeddings = keras.Input((None, backbone.token_embedding.output.shape[-1]), name="token_embeddings")
    extra = {name: keras.Input((None,), dtype="int32", name=name) for name in others}
    outputs = outputs_of_sequence(tail([embeddings, *extra.values()]), extra["padding_mask"])
    return keras.Model({"token_embeddings": embeddings, **extra}, outputs)


def explain_texts(backbone, preprocessor, outputs_of_sequence, class_names, texts, labels=None, steps=64):
    """`Explanation`s of a text classifier's decisions, one a text: each
    token's share of the explained class's probability.

    Args:
        backbone, preprocessor: the KerasHub text backbone and its
            preprocessor.
        outputs_of_sequence: `(sequence_output, padding_mask) ->
            probabilities`, the task's pooling and head.
        class_names: the names of the outputs.
        texts: the texts.
        labels: the class to explain for each text; the predicted one if
            `None`.
        steps: integration intervals.

    Example:
    >>> explain_texts(backbone, preprocessor, lambda sequence, mask: head(pool(sequence, mask, "mean")),
    ...               ["bad", "good"], ["broke in a week"])
    """
    model = text_embedding_model(backbone, outputs_of_sequence)
    vocabulary = preprocessor.tokenizer
    special = set(vocabulary.special_token_ids)
    pad_id = vocabulary.pad_token_id
    embedding = backbone.token_embedding
    names = list(class_names)
    explanations = []
    for row, text in enumerate(texts):
        tokens = {name: np.asarray(value)[:1] for name, value in preprocessor([text]).items()}
        length = int(tokens["padding_mask"].sum())
        tokens = {name: value[:, :length].astype("int32") for name, value in tokens.items()}
        ids = tokens["token_ids"][0]
        x = np.asarray(embedding(ids[None]))[0]
        baseline_ids = np.where(np.isin(ids, list(special)), ids, pad_id)
        baseline = np.asarray(embedding(baseline_ids[None]))[0]
        others = {name: tf.constant(value) for name, value in tokens.items() if name != "token_ids"}
        probabilities = np.asarray(model({"token_embeddings": tf.constant(x[None]), **others}))[0]
        target = names.index(str(labels[row])) if labels is not None else int(probabilities.argmax())

        def function(path):
            batch = tf.shape(path)[0]
            return model({"token_embeddings": path, **{n: tf.repeat(v, batch, axis=0) for n, v in others.items()}})

        attributions, f_x, f_base = integrated_gradients(function, x, baseline, target, steps)
        per_token = attributions.sum(axis=-1)
        explanations.append(Explanation(
            names[target], f_x, f_base, per_token, tokens=[vocabulary.id_to_token(int(i)) for i in ids],
            completeness_gap=float(abs(per_token.sum() - (f_x - f_base)))))
    return explanations


def explain_images(model, class_names, images, labels=None, steps=64):
    """`Explanation`s of an image classifier's decisions: each pixel's share
    (summed over channels) of the explained class's probability, from a
    black baseline.

    Args:
        model: pixels (float `[N, h, w, 3]`, 0-255) to probabilities.
        class_names: the names of the outputs.
        images: uint8 `[N, h, w, 3]` at the model's size.
        labels: the class to explain for each image; the predicted one if
            `None`.
        steps: integration intervals.

    Example:
    >>> explain_images(classifier, classifier.vocabulary.names, photos[:2])
    """
    names = list(class_names)
    explanations = []
    for row, image in enumerate(np.asarray(images)):
        x = image.astype("float32")
        probabilities = np.asarray(model(x[None], training=False))[0]
        target = names.index(str(labels[row])) if labels is not None else int(probabilities.argmax())
        attributions, f_x, f_base = integrated_gradients(lambda path: model(path, training=False), x,
                                                         np.zeros_like(x), target, steps)
        per_pixel = attributions.sum(axis=-1)
        explanations.append(Explanation(names[target], f_x, f_base, per_pixel, image=image.astype("uint8"),
                                        completeness_gap=float(abs(per_pixel.sum() - (f_x - f_base)))))
    return explanations


def _shade(value, scale):
    """A CSS background: green for evidence for the class, red against."""
    strength = min(abs(value) / scale, 1.0) if scale else 0.0
    color = "0,150,60" if value >= 0 else "200,30,30"
    return f"background: rgba({color},{strength:.2f})"


def word_attributions(explanation):
    """`(words, attributions)` of a text explanation: word pieces (`##ing`)
    joined to their word with their attributions summed, special tokens
    (`[CLS]`, `<s>`, ...) left out, so people read words."""
    words, values = [], []
    for token, value in zip(explanation.tokens, np.asarray(explanation.attributions, float)):
        if (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">")):
            continue
        if token.startswith("##") and words:
            words[-1], values[-1] = words[-1] + token[2:], values[-1] + value
        else:
            words.append(token)
            values.append(value)
    return words, np.asarray(values)


def _title(explanation, caption):
    text = (f"{caption} · " if caption else "") + f"explained {explanation.label}: p = {explanation.probability:.3f}"
    return textwrap.fill(text, 60)


def write_explanations(explanations, folder, title="Why the model decided", captions=None):
    """Writes `explanations.html` (every example: tokens shaded by their
    attribution, or the image beside its heat map) and one PNG an example
    into `folder`, each titled with its caption (such as the true and the
    predicted label) and the explained class; returns the paths written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for index, explanation in enumerate(explanations):
        caption = captions[index] if captions else ""
        head = (f"{html.escape(caption) + ' · ' if caption else ''}explained class <b>{html.escape(explanation.label)}"
                f"</b>: p = {explanation.probability:.3f} (baseline {explanation.baseline_probability:.3f}; "
                f"attributions sum to the difference within {explanation.completeness_gap:.4f})")
        png = folder / f"explanation_{index}.png"
        if explanation.tokens is not None:
            words, values = word_attributions(explanation)
            scale = float(np.abs(values).max()) if len(values) else 1.0
            spans = " ".join(f'<span title="{a:+.4f}" style="{_shade(a, scale or 1.0)}; padding: 2px">'
                             f"{html.escape(w)}</span>" for w, a in zip(words, values))
            rows.append(f"<p>{head}</p><p style='font-size: 1.3em'>{spans}</p>")
            _plot_words(explanation, png, caption)
        else:
            rows.append(f"<p>{head}</p><img src='{png.name}'>")
            _plot_heat_map(explanation, png, caption)
        paths.append(png)
    page = folder / "explanations.html"
    page.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<h1>{html.escape(title)}</h1><p>Integrated gradients: green words or pixels push toward the "
                    f"explained class, red ones away.</p>" + "<hr>".join(rows))
    return [page, *paths]


def _plot_words(explanation, path, caption=""):
    plt = pyplot()
    words, values = word_attributions(explanation)
    figure, axis = plt.subplots(figsize=(min(max(5, 0.5 * len(values) + 1.5), 16), 3.4))
    axis.bar(range(len(values)), values, color=["#00963c" if v >= 0 else "#c81e1e" for v in values])
    axis.set_xticks(range(len(values)), words, rotation=60, ha="right")
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel("attribution (share of p)")
    axis.set_title(_title(explanation, caption), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _smoothed(heat, size=5):
    # A box filter over rows then columns: pixel-level integrated gradients
    # are speckle; regions are what a person reads (no SciPy dependency).
    kernel = np.ones(size) / size
    rows = np.apply_along_axis(np.convolve, 1, heat, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 0, rows, kernel, mode="same")


def _plot_heat_map(explanation, path, caption=""):
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.9), gridspec_kw={"width_ratios": [1, 1.2]})
    left.imshow(explanation.image)
    left.set_title("the photo", fontsize=9)
    heat = _smoothed(np.asarray(explanation.attributions, float))
    limit = float(np.percentile(np.abs(heat), 99)) or 1.0  # The brightest 1% saturate, not the whole map fades.
    right.imshow(explanation.image, alpha=0.3)
    shown = right.imshow(heat, cmap="RdYlGn", vmin=-limit, vmax=limit, alpha=0.8)
    right.set_title("integrated gradients", fontsize=9)
    bar = figure.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    bar.set_label("toward the class (green) / away (red)", fontsize=8)
    for axis in (left, right):
        axis.axis("off")
    figure.suptitle(_title(explanation, caption), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def most_confident_errors(probabilities, targets, count=3):
    """Indices of the `count` wrong predictions made with the highest
    probability, most confident first."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(targets))
    confidence = np.asarray(probabilities)[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count].tolist()
