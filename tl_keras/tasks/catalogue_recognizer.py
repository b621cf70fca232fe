"""`CatalogueRecognizer`: shop photos recognised as catalogue entries, and new
products added from their catalogue entry alone (one catalogue image and a
description, no photos, no retraining), in KerasHub's style: `from_preset`,
`fit`, `add_entries`, `predict_labels`, `save_to_preset`, `export`.

A frozen image backbone embeds photos and catalogue images, a frozen text
backbone embeds descriptions, and a `CatalogueMatcher` trained on the
classes that have photos projects them into one space. An entry is stored as
its backbone features, so adding one is two forward passes.

Ranked among all entries, photos of added products lose to the trained
entries, which the matcher has learned to score high (the bias of
generalised zero-shot recognition); `calibrate` chooses `seen_bias`, a
score the trained entries give up (calibrated stacking, Chao et al. 2016),
on photos of known products and of products added for validation.
"""

import json
import pathlib

import keras
from keras import ops
import numpy as np

from tl_keras.core.files import load_arrays, save_arrays
from tl_keras.data.images import ImageArray, as_pixels
from tl_keras.data.tokens import tokenize
from tl_keras.export.catalogue import export_catalogue_recognizer
from tl_keras.models.backbones import default_pooling, load_image_backbone, load_text_backbone
from tl_keras.models.catalogue_matching import CatalogueMatcher
from tl_keras.models.heads import build_encoder, build_image_encoder
from tl_keras.tasks.base import TransferTask, history_of, read_task_config, refuse_overrides

ENTRY_FILE = "entries.npz"


def harmonic_mean(first, second):
    """The harmonic mean of two accuracies (0 when either is 0)."""
    return 0.0 if min(first, second) == 0 else 2 * first * second / (first + second)


class CatalogueRecognizer(TransferTask, keras.Model):
    """Photos to catalogue entries over frozen image and text backbones: a
`keras.Model` whose `call` scores pixels against every entry added so far
(`predict` does the same on encoded photos or files). Its preset holds two
backbones, under `image/` and `text/`, so its root is not one backbone's
KerasHub preset.

    Args:
        image_backbone, image_converter: a KerasHub image backbone and its
            preset's image converter (or `None`).
        text_backbone, preprocessor: a KerasHub text backbone and its
            `TextClassifierPreprocessor`.
        image_size: `(height, width)` photos and catalogue images are resized to.
        pooling: the text backbone's pooling (`"mean"`, `"cls"`, `"pooled"`).
        matcher: a `CatalogueMatcher` of matching widths, or `None` for a
            new one (`projection_dim`, `image_weight`).

    Example:
    >>> recognizer = CatalogueRecognizer.from_preset("presets/efficientnet_lite0", text_preset=minilm)
    >>> recognizer.fit(photos, labels, catalogue.subset(seen_names))
    >>> recognizer.add_entries(catalogue.subset(new_names))   # no photos, no retraining
    >>> recognizer.predict_labels(new_photos)
    """

    def __init__(self, image_backbone, image_converter, text_backbone, preprocessor, image_size=(224, 224),
                 pooling="mean", matcher=None, projection_dim=256, image_weight=0.7):
        super().__init__(name="catalogue_recognizer")
        self.image_backbone, self.image_converter = image_backbone, image_converter
        self.text_backbone, self.preprocessor, self.pooling = text_backbone, preprocessor, pooling
        self.image_size = tuple(int(size) for size in image_size)
        self.image_encoder = build_image_encoder(image_backbone, self.image_size,
                                                 getattr(image_converter, "scale", None),
                                                 getattr(image_converter, "offset", None))
        self.text_encoder = build_encoder(text_backbone, pooling)
        self.matcher = matcher or CatalogueMatcher(self.image_encoder.output.shape[-1],
                                                   self.text_encoder.output.shape[-1], projection_dim,
                                                   image_weight=image_weight)
        self.entry_names = []
        self.entry_image_features = np.zeros([0, self.matcher.image_dim], np.float32)
        self.entry_text_features = np.zeros([0, self.matcher.text_dim], np.float32)
        self.num_trained = 0  # The first entries, those `fit` trained on.
        self.seen_bias = 0.0
        self.calibrated = False  # `seen_bias` chosen by `calibrate` since the last `fit`.

    @classmethod
    def from_preset(cls, preset, text_preset=None, image_size=None, sequence_length=None, pooling=None,
                    projection_dim=None, image_weight=None):
        """A recognizer on a KerasHub image preset and text preset, or one
        written by `save_to_preset` (backbones, matcher and entries
        restored; any argument given is refused, naming it, since the
        trained matcher and stored entries hold them).

        Args:
            preset: the image preset, or a saved recognizer.
            text_preset: the text preset that embeds descriptions.
            image_size: photos are resized to `image_size` x `image_size`
                (224).
            sequence_length: description tokens kept (128).
            pooling: the text pooling (`None`: the backbone's default).
            projection_dim, image_weight: the new matcher's settings (256,
                0.7).

        Example:
        >>> CatalogueRecognizer.from_preset("presets/efficientnet_lite0", text_preset=minilm_l6_offline_path())
        """
        stored = read_task_config(preset, cls)
        if stored is not None:
            refuse_overrides(preset, cls, text_preset=text_preset, image_size=image_size,
                             sequence_length=sequence_length, pooling=pooling, projection_dim=projection_dim,
                             image_weight=image_weight)
            folder = pathlib.Path(str(preset))
            recognizer = cls.from_preset(folder / "image", folder / "text", stored["image_size"][0],
                                         stored["sequence_length"], stored["pooling"], stored["projection_dim"],
                                         stored["image_weight"])
            recognizer.matcher.build()
            recognizer.matcher.load_weights(str(folder / "matcher.weights.h5"))
            arrays = load_arrays(folder / ENTRY_FILE, "entries")
            if arrays is None:
                raise ValueError(f"{folder / ENTRY_FILE}: missing or damaged; save the recognizer again.")
            recognizer.entry_names = json.loads((folder / "entries.json").read_text())
            recognizer.entry_image_features, recognizer.entry_text_features = arrays["image"], arrays["text"]
            recognizer.num_trained, recognizer.seen_bias = stored["num_trained"], stored["seen_bias"]
            recognizer.calibrated = stored.get("calibrated", False)
            return recognizer
        if text_preset is None:
            raise ValueError(f"{preset} is an image preset; pass `text_preset` to embed the descriptions.")
        image_backbone, converter = load_image_backbone(preset, with_converter=True)
        text_backbone, preprocessor = load_text_backbone(text_preset, sequence_length or 128)
        image_size = image_size or 224
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        return cls(image_backbone, converter, text_backbone, preprocessor, size,
                   pooling or default_pooling(text_preset, text_backbone), None, projection_dim or 256,
                   0.7 if image_weight is None else image_weight)

    # --- Features -----------------------------------------------------------

    def image_features(self, images, batch_size=32, verbose=0):
        """Backbone features `[N, Di]` of photos or catalogue images (encoded
        bytes, files or uint8 arrays)."""
        pixels = as_pixels(images, self.image_size)
        if pixels is None:
            raise ValueError(f"`images` must be encoded images, image files or uint8 arrays [N, h, w, 3], "
                             f"received {type(images)!r}.")
        return ImageArray(pixels).predict(self.image_encoder, batch_size, verbose, "embedding images")

    def text_features(self, descriptions, verbose=0):
        """Pooled text-backbone features `[N, Dt]` of descriptions."""
        return tokenize(list(descriptions), self.preprocessor, verbose=verbose).predict(self.text_encoder)

    # --- Entries ------------------------------------------------------------

    def add_entries(self, entries, verbose=0):
        """Adds catalogue entries (objects with `name`, `image` (a file or
        encoded bytes) and `description`, such as `CatalogueEntry`); photos
        are matched against them from now on, with no retraining. A name
        already among the entries is refused.

        Example:
        >>> recognizer.add_entries([CatalogueEntry("Oat-Drink", "Milk", 3, "oat.jpg", "Oat drink, 1 litre")])
        """
        entries = list(entries)
        names = [entry.name for entry in entries]
        repeated = sorted({name for name in names if name in self.entry_names or names.count(name) > 1})
        if repeated:
            raise ValueError(f"Entries already present or given twice: {repeated[:5]!r}.")
        if not entries:
            return self
        images = self.image_features([entry.image for entry in entries], verbose=verbose)
        texts = self.text_features([entry.description for entry in entries], verbose)
        self.entry_names = self.entry_names + names
        self.entry_image_features = np.concatenate([self.entry_image_features, images])
        self.entry_text_features = np.concatenate([self.entry_text_features, texts])
        return self

    # --- Training and prediction -----------------------------------------

    def fit(self, x, y, entries, batch_size=64, epochs=30, verbose=0, learning_rate=1e-3, seed=1234):
        """Trains the matcher on photos of the classes of `entries` (their
        labels are entry names), which become the recognizer's entries.
        After `fit` and `add_entries`, `calibrate` on photos of both kinds
        before trusting the ranking of added entries against trained ones.

        Args:
            x: photos: encoded images, image files or uint8 arrays.
            y: each photo's entry name.
            entries: the catalogue entries of the photos' classes.
            batch_size, epochs, verbose: as Keras' `fit`.
            learning_rate, seed: the matcher's training.

        Returns:
            A `keras.callbacks.History` with the mean `loss` of each epoch.
        """
        self.entry_names = []
        self.entry_image_features = self.entry_image_features[:0]
        self.entry_text_features = self.entry_text_features[:0]
        self.add_entries(entries, verbose)
        self.num_trained, self.seen_bias, self.calibrated = len(self.entry_names), 0.0, False
        rows = self._rows(y)
        features = self.image_features(x, verbose=verbose)
        losses = self.matcher.fit_entries(features, rows, self.entry_image_features, self.entry_text_features,
                                          epochs, batch_size, learning_rate, seed)
        return history_of({"loss": [float(loss) for loss in losses]})

    def _rows(self, labels):
        """The entry index of each label; a label with no entry is refused."""
        index = {name: row for row, name in enumerate(self.entry_names)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(f"Labels with no entry: {unknown[:5]!r}.")
        return np.array([index[label] for label in labels])

    def _bias_of(self, bias):
        """`bias` for each trained entry, 0 for each entry added since."""
        return np.where(np.arange(len(self.entry_names)) < self.num_trained, bias, 0.0).astype(np.float32)

    @property
    def entry_bias(self):
        """What each entry's score gives up: `seen_bias` for the trained
        entries, 0 for those added since."""
        return self._bias_of(self.seen_bias)

    def _similarities(self, photos, batch_size=32):
        if not self.entry_names:
            raise ValueError("The recognizer has no entries; `fit` or `add_entries` first.")
        return self.matcher.similarities(self.image_features(photos, batch_size), self.entry_image_features,
                                         self.entry_text_features)

    def call(self, images):
        """Scores `[N, entries]` of pixels (`[N, h, w, 3]` at `image_size`,
        0-255) against every entry, the trained entries' less `seen_bias`."""
        if not self.entry_names:
            raise ValueError("The recognizer has no entries; `fit` or `add_entries` first.")
        entries = [ops.convert_to_tensor(np.asarray(value), "float32") for value in
                   (self.entry_image_features, self.entry_text_features, self.entry_bias)]
        return self.matcher.scores(self.image_encoder(images), entries[0], entries[1]) - entries[2]

    def get_config(self):
        raise NotImplementedError("A CatalogueRecognizer's entries are data, not settings: save it with "
                                  "`save_to_preset` and load it with `CatalogueRecognizer.from_preset`.")

    def predict(self, photos, batch_size=32):
        """Scores `[N, entries]` of photos against every entry (the trained
        entries' less `seen_bias`)."""
        return self._similarities(photos, batch_size) - self.entry_bias

    def calibrate(self, photos, labels, biases=None):
        """Chooses `seen_bias` on labelled photos of trained entries and of
        added ones: the value (of `biases`) with the best harmonic mean of
        the two groups' top-1 accuracy among all entries.

        Args:
            photos: photos of both groups (not the ones `fit` trained on).
            labels: their entry names.
            biases: the values tried (default 0 to 0.5 in steps of 0.025).

        Returns:
            A list of dicts a value: `bias`, `trained`, `added`,
            `harmonic_mean`; `seen_bias` is set to the best.

        Example:
        >>> recognizer.calibrate(validation_photos, validation_labels)
        """
        biases = np.arange(0.0, 0.5001, 0.025) if biases is None else np.asarray(biases, float)
        rows = self._rows(labels)
        trained = rows < self.num_trained
        if trained.all() or not trained.any():
            raise ValueError(f"`calibrate` needs photos of trained entries and of added ones; received "
                             f"{int(trained.sum())} of trained and {int((~trained).sum())} of added entries.")
        similarities = self._similarities(photos)
        table = []
        for bias in biases:
            right = (similarities - self._bias_of(bias)).argmax(axis=1) == rows
            groups = float(right[trained].mean()), float(right[~trained].mean())
            table.append({"bias": float(bias), "trained": groups[0], "added": groups[1],
                          "harmonic_mean": harmonic_mean(*groups)})
        self.seen_bias = max(table, key=lambda row: row["harmonic_mean"])["bias"]
        self.calibrated = True
        return table

    def predict_labels(self, photos, batch_size=32):
        """The best entry's name for each photo."""
        return [self.entry_names[row] for row in self.predict(photos, batch_size).argmax(axis=1)]

    # --- Saving and export -------------------------------------------------

    def task_config(self):
        return {"image_size": list(self.image_size), "sequence_length": int(self.preprocessor.sequence_length),
                "pooling": self.pooling, "projection_dim": self.matcher.projection_dim,
                "image_weight": self.matcher.image_weight, "num_trained": self.num_trained,
                "seen_bias": self.seen_bias, "calibrated": self.calibrated}

    def write_preset_parts(self, folder):
        (folder / "image").mkdir()
        self.image_backbone.save_to_preset(str(folder / "image"))
        if self.image_converter is not None:
            self.image_converter.save_to_preset(str(folder / "image"))
        (folder / "text").mkdir()
        self.text_backbone.save_to_preset(str(folder / "text"))
        self.preprocessor.save_to_preset(str(folder / "text"))
        if not self.matcher.built:  # Saved before `fit`: its initial weights.
            self.matcher.build()
        self.matcher.save_weights(str(folder / "matcher.weights.h5"))
        (folder / "entries.json").write_text(json.dumps(self.entry_names))
        save_arrays(folder / ENTRY_FILE, "entries", {"image": self.entry_image_features,
                                                     "text": self.entry_text_features})

    def export(self, export_dir, model_name, version=None, warmup=(), card=None, k=5):
        """Writes the TF Serving SavedModel (photo bytes in, the top `k`
        entries out, every entry added so far included); see
        `tl_keras.export.catalogue`. Entries added after `fit` are
        refused until `calibrate` has run: uncalibrated, the trained entries
        outscore them (measured on the Grocery Store: 0.026 top-1 for new
        products served uncalibrated, 0.390 calibrated; benchmarks/RESULTS.md)."""
        added = len(self.entry_names) - self.num_trained
        if self.num_trained and added and not self.calibrated:
            raise ValueError(f"{added} entries were added after `fit` and `calibrate` has not run: served, they "
                             "would almost never rank first. Call `calibrate(photos, labels)` on photos of "
                             "trained and added entries first.")
        return export_catalogue_recognizer(self, export_dir, model_name, min(k, len(self.entry_names)), version,
                                           warmup, card)
