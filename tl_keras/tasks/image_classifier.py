"""`ImageClassifier`: a pretrained image backbone with a trainable head, in
KerasHub's style: `from_preset`, `fit` on image bytes, files or pixel
arrays, `predict_labels`, `save_to_preset`, `export`.
"""

import pathlib

import keras
import tensorflow as tf

from tl_keras.core.choices import IMAGE_STRATEGY
from tl_keras.data.images import ImageArray, as_pixels, build_augmentation
from tl_keras.data.texts import LabelVocabulary
from tl_keras.evaluation.explanations import explain_images
from tl_keras.export.image import export_image_model
from tl_keras.models.backbones import load_image_backbone
from tl_keras.models.heads import EncoderHeadModel, build_head, build_image_encoder
from tl_keras.tasks.base import Classifier, class_names, deserialized, head_changes, read_task_config
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.strategies import parse_strategy


@keras.saving.register_keras_serializable(package="tl_keras")
class ImageClassifier(Classifier, EncoderHeadModel):
    """An image backbone, average pooling and a trainable head, as one Keras
    model taking float32 pixels (0-255) `[N, h, w, 3]`.

    `fit` and `predict` take encoded images (bytes), image file paths,
    uint8 pixel arrays or `ImageArray`s, decoded and resized once with the
    serving graph's ops; `augmentation` runs on training batches only.

    Args:
        backbone: a KerasHub image `Backbone`.
        vocabulary: the `LabelVocabulary` (class names).
        image_size: `(height, width)` images are resized to.
        image_converter: the preset's KerasHub `ImageConverter` (its scale
            and offset become a `Rescaling` layer), or `None`.
        strategy: `"frozen"`, `"partial:N"` or `"full"`.
        augmentation: comma-separated augmentations (see
            `tl_keras.data.images.build_augmentation`) or `"none"`.
        hidden_dim, dropout: the head's shape.
        test_time_augmentation: `"flip"` averages the features of each image
            and its mirror image at inference (`predict`, evaluation, the
            SavedModel; twice the backbone's cost), or `"none"`.

    Example:
    >>> classifier = ImageClassifier.from_preset("presets/efficientnet_lite0", labels=["bag", "shoe"])
    >>> classifier.fit([open("shoe.jpg", "rb").read(), ...], ["shoe", ...], epochs=5)
    >>> classifier.predict_labels(["photos/new.jpg"])
    ['shoe']
    """

    def __init__(self, backbone, vocabulary, image_size=(224, 224), image_converter=None, strategy=IMAGE_STRATEGY,
                 augmentation="none", hidden_dim=0, dropout=0.1, seed=None, test_time_augmentation="none",
                 **kwargs):
        strategy = parse_strategy(strategy)
        if strategy.kind == "lora":
            raise ValueError(f"Strategy {str(strategy)!r} needs a transformer backbone; use frozen, partial:N or full.")
        image_size = tuple(int(size) for size in image_size)
        scale = getattr(image_converter, "scale", None)
        offset = getattr(image_converter, "offset", None)
        encoder = build_image_encoder(backbone, image_size, scale, offset, test_time_augmentation)
        head = build_head(encoder.output.shape[-1], vocabulary.num_outputs, "classification", hidden_dim, dropout)
        super().__init__(encoder, head, "classification", name=kwargs.pop("name", "image_classifier"), **kwargs)
        self.backbone, self.vocabulary, self.image_size = backbone, vocabulary, image_size
        self.image_converter = image_converter
        self.strategy, self.augmentation_names, self.seed = strategy, augmentation, seed
        build_augmentation(augmentation)  # Checks the names now; the layers are made outside any scope.
        self._augmentation = None
        self.hidden_dim, self.dropout = hidden_dim, dropout
        self.test_time_augmentation = test_time_augmentation
        self.feature_cache = FeatureCache()

    def config_parts(self):
        return {"backbone": self.backbone, "image_converter": self.image_converter}

    def get_config(self):
        return {**super().get_config(), "augmentation": self.augmentation_names, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        parts, settings = deserialized(config, "backbone", "image_converter")
        vocabulary = LabelVocabulary("classification", tuple(settings.pop("labels")))
        return cls(parts["backbone"], vocabulary, image_converter=parts["image_converter"], **settings)

    @classmethod
    def from_preset(cls, preset, labels=None, num_classes=None, image_size=None, strategy=IMAGE_STRATEGY,
                    augmentation="none", hidden_dim=None, dropout=None, seed=None, test_time_augmentation=None):
        """A classifier on a KerasHub image preset (Kaggle handle, preset
        folder, timm folder) or on a folder written by `save_to_preset`.

        A saved classifier comes back whole (head, labels, image size,
        test-time augmentation); `image_size`, `strategy`, `augmentation`,
        `dropout`, `seed` and `test_time_augmentation` apply to it. Head
        settings that differ from its own (`labels`/`num_classes`,
        `hidden_dim`) give its fine-tuned backbone a new head instead
        (sequential transfer), as for `TextClassifier`.

        Args:
            preset: the preset.
            labels: the class names (not needed for a saved classifier).
            num_classes: KerasHub's alternative to `labels` (names `"0"` ...).
            image_size: an int or `(height, width)`: the saved one, else
                the preset's image converter's (a Lite2 preset's 260),
                else 224.
            strategy, augmentation, test_time_augmentation: see
                `ImageClassifier`.
            hidden_dim, dropout: the head's shape (0 and 0.1, or the saved
                ones).
            seed: the augmentation's seed.

        Example:
        >>> ImageClassifier.from_preset("presets/efficientnet_lite0", labels=["bag", "shoe"], image_size=224)
        >>> ImageClassifier.from_preset("presets/shop_a_photos", labels=["bottle", "can", "jar"])  # A new head.
        """
        labels = class_names(labels, num_classes)
        backbone, converter = load_image_backbone(preset, with_converter=True)
        stored = read_task_config(preset, cls) or {}
        changes = head_changes(stored, labels=labels, hidden_dim=hidden_dim) if stored else {}
        if not stored and not labels:
            raise ValueError(f"`labels` (or `num_classes`) must name the classes, received {labels!r}.")
        vocabulary = LabelVocabulary.from_labels(list(labels)) if not stored or "labels" in changes \
            else LabelVocabulary("classification", tuple(stored["labels"]))
        native = getattr(converter, "image_size", None)
        size = image_size or stored.get("image_size") or native or 224
        size = (size, size) if isinstance(size, int) else tuple(size)
        hidden_dim = stored.get("hidden_dim", 0) if hidden_dim is None else hidden_dim
        dropout = stored.get("dropout", 0.1) if dropout is None else dropout
        test_time_augmentation = test_time_augmentation or stored.get("test_time_augmentation", "none")
        classifier = cls(backbone, vocabulary, size, converter, strategy, augmentation, hidden_dim, dropout, seed,
                         test_time_augmentation)
        if stored and not changes:
            classifier.head.load_weights(str(pathlib.Path(str(preset)) / "head.weights.h5"))
        classifier.preset = str(preset)
        return classifier

    @property
    def augmentation(self):
        """The augmentation layers, made on first use, outside the
        distribution scope the classifier was built in: under it their
        random state would become mirrored variables, which the `tf.data`
        pipeline cannot run. (Prepare inputs outside any scope.)"""
        if self._augmentation is None:
            self._augmentation = build_augmentation(self.augmentation_names, self.seed)
        return self._augmentation

    def transfer_inputs(self, x, verbose=0):
        """Raw images as an `ImageArray` (training batches augmented), or
        `None` for what Keras' own `fit`/`predict` take."""
        pixels = x.pixels if isinstance(x, ImageArray) else as_pixels(x, self.image_size)
        return None if pixels is None else ImageArray(pixels, self.augmentation)

    def explain(self, x, labels=None, steps=64):
        """Per-pixel integrated-gradients attributions of the decision for
        each image (bytes, files or uint8 arrays), from a black baseline."""
        return explain_images(self, self.vocabulary.names, self.transfer_inputs(x).pixels, labels, steps)

    def task_config(self):
        return {"labels": list(self.vocabulary.names), "image_size": list(self.image_size),
                "hidden_dim": self.hidden_dim, "dropout": self.dropout, "strategy": str(self.strategy),
                "test_time_augmentation": self.test_time_augmentation}

    def write_preset_parts(self, folder):
        self.backbone.save_to_preset(str(folder))
        if self.image_converter is not None:
            self.image_converter.save_to_preset(str(folder))
        self.head.save_weights(str(folder / "head.weights.h5"))

    def export(self, export_dir, model_name, version=None, warmup=(), card=None):
        """Writes the TF Serving SavedModel (image bytes or pixels in, labels
        out) as `export_dir/model_name/<version>/`; see
        `tl_keras.export.image`."""
        card = self.card(augmentation=self.augmentation_names, test_time_augmentation=self.test_time_augmentation,
                         **(card or {}))
        # A warm-up request even when none is given: one grey image.
        warmup = list(warmup) or [tf.io.encode_png(tf.fill([*self.image_size, 3], tf.constant(128, tf.uint8))).numpy()]
        return export_image_model(self, self.vocabulary, self.image_size, export_dir, model_name, version,
                                  warmup_images=warmup, card=card)

