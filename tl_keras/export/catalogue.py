"""SavedModel export of a `CatalogueRecognizer` for TF Serving: shop photos
in, catalogue entries (products) out, new entries included without
retraining.

Signatures:
- `serving_default`: `image_bytes` (DT_STRING, [-1]: encoded JPEG, PNG, BMP
  or GIF) to `product` (DT_STRING [-1], the best entry), `score` (float
  [-1]), and the top `k`: `products` (DT_STRING [-1, k]) and `scores`
  (float [-1, k]). Decoding and resizing run in the graph with the ops of
  `tl_keras.data.images.decode_and_resize`.
- `embed_entries`: `catalogue_image_bytes` (DT_STRING [-1]) and
  `description` (DT_STRING [-1]) to `image_features` [-1, Di] and
  `text_features` [-1, Dt], the backbone features a new entry is stored as
  (`CatalogueRecognizer.add_entries` computes the same, then export again).

The entries (names and backbone features) are variables of the graph; the
score of a photo for an entry is the matcher's weighted image and text
cosine (`tl_keras.models.catalogue_matching`), less the recognizer's
`seen_bias` for the entries it was trained on.
"""

import numpy as np
import tensorflow as tf

from tl_keras.export.image import decode_batch
from tl_keras.export.saved_model import ServingModule, Untracked
from tl_keras.export.text import token_inputs


class CatalogueServingModule(ServingModule):
    """The serving graph of a `CatalogueRecognizer`; see the module docstring.

    Args:
        recognizer: the `CatalogueRecognizer` (its current entries are stored).
        k: how many entries a request returns.
    """

    def __init__(self, recognizer, k):
        super().__init__("catalogue_serving")
        if not 1 <= k <= len(recognizer.entry_names):
            raise ValueError(f"`k` must be in [1, {len(recognizer.entry_names)}] (the number of entries), "
                             f"received {k!r}.")
        self.k, self.image_size = k, tuple(recognizer.image_size)
        self.entry_names = tf.constant(list(recognizer.entry_names))
        self.entry_images = tf.Variable(recognizer.entry_image_features.astype(np.float32), trainable=False,
                                        name="entry_image_features")
        self.entry_texts = tf.Variable(recognizer.entry_text_features.astype(np.float32), trainable=False,
                                       name="entry_text_features")
        self.entry_bias = tf.constant(recognizer.entry_bias)
        self.preprocessor = recognizer.preprocessor
        self.track(recognizer.image_encoder, recognizer.text_encoder, recognizer.matcher)
        self._recognizer = Untracked(recognizer)  # The graph calls its parts, tracked above.
        self.endpoint("serving_default", self._serve, [tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.endpoint("embed_entries", self._embed_entries, [
            tf.TensorSpec([None], tf.string, name="catalogue_image_bytes"),
            tf.TensorSpec([None], tf.string, name="description")])

    def _image_features(self, image_bytes):
        pixels = decode_batch(image_bytes, self.image_size)
        return self._recognizer.value.image_encoder(tf.cast(pixels, tf.float32), training=False)

    def _serve(self, image_bytes):
        scores = self._recognizer.value.matcher.scores(self._image_features(image_bytes), self.entry_images,
                                                       self.entry_texts)
        best = tf.math.top_k(scores - self.entry_bias, k=self.k)
        products = tf.gather(self.entry_names, best.indices)
        return {"product": products[:, 0], "score": best.values[:, 0], "products": products, "scores": best.values}

    def _embed_entries(self, catalogue_image_bytes, description):
        encoder = self._recognizer.value.text_encoder
        text = encoder(token_inputs(self.preprocessor(description), encoder), training=False)
        return {"image_features": self._image_features(catalogue_image_bytes), "text_features": text}


def export_catalogue_recognizer(recognizer, export_dir, model_name, k=5, version=None, warmup_images=(),
                                card=None):
    """Exports a `CatalogueRecognizer` as a TF Serving SavedModel, atomically.

    Args:
        recognizer: the `CatalogueRecognizer` (its current entries are stored).
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        k: how many entries `serving_default` returns.
        version: an integer version; the next free one if `None`.
        warmup_images: a few encoded photos (bytes) for warm-up requests.
        card: extra JSON-ready facts for `model_card.json`.

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> recognizer.add_entries(new_products)
    >>> export_catalogue_recognizer(recognizer, "exports", "products", k=5)
    PosixPath('exports/products/2')
    """
    module = CatalogueServingModule(recognizer, k)
    card = {"task": "catalogue_recognition", "k": k, "entries": list(recognizer.entry_names),
            "image_size": list(recognizer.image_size), "image_weight": float(recognizer.matcher.image_weight),
            "trained_entries": recognizer.num_trained, "seen_bias": recognizer.seen_bias, **(card or {})}
    return module.write(export_dir, model_name, version, [{"image_bytes": [encoded]} for encoded in warmup_images],
                        card)
