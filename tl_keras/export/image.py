"""SavedModel export of an image classifier for TF Serving.

Signatures:
- `serving_default`: `image_bytes` (DT_STRING, [-1]: encoded JPEG, PNG, BMP
  or GIF) to `probabilities` [-1, C], `label_id` (int64 [-1]) and `label`
  (DT_STRING [-1]); decoding and resizing run inside the graph with the
  same ops as `tl_keras.data.images.decode_and_resize`.
- `serve_pixels`: `pixels` (uint8 [-1, H, W, 3], already resized) to the
  same outputs.

Augmentation is never part of the graph: it lives in the training input
pipeline, not in the model.
"""

import tensorflow as tf

from tl_keras.data.images import decode_and_resize
from tl_keras.export.saved_model import ServingModule
from tl_keras.export.text import labelled_outputs


def decode_batch(image_bytes, image_size):
    """Encoded images `[N]` to uint8 pixels `[N, h, w, 3]` in the graph, one
    `decode_and_resize` an image (the offline ops)."""
    return tf.map_fn(lambda encoded: decode_and_resize(encoded, image_size), image_bytes,
                     fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8))


class ImageServingModule(ServingModule):
    """The serving graph: decode, resize, model and label lookup.

    Args:
        model: the trained image model (float32 pixels 0-255 in).
        vocabulary: the `LabelVocabulary` stored in the graph.
        image_size: `(height, width)` the model was trained at.
    """

    def __init__(self, model, vocabulary, image_size):
        super().__init__("image_serving")
        self._model = self.track(model)
        self.task = vocabulary.task
        self.class_names = tf.constant(list(vocabulary.names) or [""], tf.string)
        self.image_size = tuple(image_size)
        self.endpoint("serving_default", self._serve_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.endpoint("serve_pixels", self._serve_pixels,
                      [tf.TensorSpec([None, *self.image_size, 3], tf.uint8, name="pixels")])

    def _serve_pixels(self, pixels):
        outputs = self._model.value(tf.cast(pixels, tf.float32), training=False)
        return labelled_outputs(outputs, self.task, self.class_names)

    def _serve_bytes(self, image_bytes):
        return self._serve_pixels(decode_batch(image_bytes, self.image_size))


def export_image_model(model, vocabulary, image_size, export_dir, model_name, version=None, warmup_images=(),
                       card=None):
    """Exports a trained image model as a TF Serving SavedModel, atomically.

    Args:
        model: the trained image model.
        vocabulary: the `LabelVocabulary` of the training data.
        image_size: `(height, width)` the model was trained at.
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        version: an integer version; the next free one if `None`.
        warmup_images: a few encoded images (bytes) for warm-up requests.
        card: extra JSON-ready facts for `model_card.json`.

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> export_image_model(model, vocabulary, (224, 224), "exports", "products",
    ...                    warmup_images=[open("shoe.jpg", "rb").read()])
    PosixPath('exports/products/1')
    """
    module = ImageServingModule(model, vocabulary, image_size)
    card = {"task": vocabulary.task, "labels": list(vocabulary.names), "image_size": list(image_size),
            "parameters": int(model.count_params()), **(card or {})}
    return module.write(export_dir, model_name, version, [{"image_bytes": [encoded]} for encoded in warmup_images],
                        card, batching=True)
