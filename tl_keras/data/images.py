"""Reading labelled images, decoding them once, and feeding them to Keras.

Sources: a folder per class (`keras.utils.image_dataset_from_directory`
conventions), a CSV of `path,label`, or numpy arrays. Every image is decoded
and resized once by `decode_and_resize`, the same TensorFlow ops the exported
SavedModel runs on request bytes, so served and offline predictions match. A
corrupt image, a wrong channel count or an empty class folder raises
`DataError` naming the file; with `skip_bad_images=True` bad files are left
out and counted instead.
"""

import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tl_keras.core.progress import progress_bar
from tl_keras.data.catalogue import read_image_list
from tl_keras.data.texts import DataError, LabelledTexts, csv_records

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast", "crop", "color", "randaugment")


def decode_and_resize(encoded, image_size):
    """Decodes JPEG/PNG/BMP/GIF bytes (3 channels) and resizes them
    (bilinear) to `image_size`, as uint8 `[h, w, 3]`. Used both offline and
    inside the serving graph."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, image_size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


@dataclasses.dataclass
class ImageArray:
    """Decoded images, uint8 `[N, h, w, 3]`, for training and prediction.

    Args:
        pixels: the images.
        augmentation: a `keras.Sequential` of preprocessing layers applied
            to training batches only (see `build_augmentation`), or `None`.
    """

    pixels: np.ndarray
    augmentation: object = None

    def __post_init__(self):
        if self.pixels.ndim != 4 or self.pixels.shape[-1] != 3:
            raise DataError(f"Images must be an array [N, height, width, 3], received shape {self.pixels.shape}.")

    def __len__(self):
        return len(self.pixels)

    @property
    def arrays(self):
        return {"images": self.pixels}

    @property
    def cacheable(self):
        """Frozen-backbone features can be cached only without augmentation
        (each epoch would see other pixels)."""
        return self.augmentation is None

    def take(self, indices):
        return ImageArray(self.pixels[indices], self.augmentation)

    def dataset(self, targets=None, batch_size=32, shuffle=False, seed=None, training=False):
        """The images (float32 0-255) and targets as a `tf.data` pipeline;
        augmentation runs on training batches only."""
        rows = (self.pixels,) if targets is None else (self.pixels, targets)
        dataset = tf.data.Dataset.from_tensor_slices(rows)
        if shuffle:
            dataset = dataset.shuffle(len(self.pixels), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
        augmentation = self.augmentation if training else None

        def prepare(images, *rest):
            images = tf.cast(images, tf.float32)
            if augmentation is not None:
                images = augmentation(images, training=True)
            return (images, *rest) if rest else images

        return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def predict(self, model, batch_size=32, verbose=0, description="predicting"):
        """`model`'s outputs (inference mode) for the images, in order."""
        progress = progress_bar(len(self), description, "image", verbose)
        spec = tf.TensorSpec([None, *self.pixels.shape[1:]], tf.float32)
        run = tf.function(lambda images: model(images, training=False), input_signature=[spec])
        outputs = []
        for batch in self.dataset(batch_size=batch_size):
            outputs.append(run(batch).numpy())
            progress.add(len(outputs[-1]))
        return np.concatenate(outputs)


class RandomResizedCrop(keras.layers.Layer):
    """A random crop of each image, resized back to the image's size: the
    crop covers a share of the area drawn from `scale` with an aspect ratio
    drawn (log-uniformly) from `ratio`, as Inception-style training crops
    do. Acts only when called with `training=True`.

    Args:
        scale: `(low, high)` share of the image's area a crop covers.
        ratio: `(low, high)` width / height of a crop.
        seed: the seed of the crops.

    Example:
    >>> crops = RandomResizedCrop(scale=(0.35, 1.0))(images, training=True)
    """

    # Keras 3 has no random resized crop (KerasCV's was not carried over);
    # one `crop_and_resize` over the batch's random boxes does it.
    def __init__(self, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"`scale` must be 0 < low <= high <= 1, received {scale!r}.")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"`ratio` must be 0 < low <= high, received {ratio!r}.")
        self.scale, self.ratio, self.seed = tuple(scale), tuple(ratio), seed

    def call(self, images, training=False):
        if not training:
            return images
        batch = tf.shape(images)[0]
        area = tf.random.uniform([batch], *self.scale, seed=self.seed)
        log_ratio = tf.random.uniform([batch], np.log(self.ratio[0]), np.log(self.ratio[1]), seed=self.seed)
        height = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), 1.0)
        width = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), 1.0)
        top = tf.random.uniform([batch], seed=self.seed) * (1.0 - height)
        left = tf.random.uniform([batch], seed=self.seed) * (1.0 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.shape(images)[1:3])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "ratio": self.ratio, "seed": self.seed}


def build_augmentation(names, seed=None):
    """A `keras.Sequential` of augmentation layers from comma-separated
    `names`, or `None` for `"none"` or `""`. Layers act only when called
    with `training=True`: `flip` (horizontal), `rotation` (up to 18
    degrees), `zoom` (10%), `contrast` (20%), `crop` (random resized crops
    of 35-100% of the area), `color` (colour jitter: brightness, contrast,
    saturation and hue), `randaugment` (Keras' RandAugment).

    Example:
    >>> augmentation = build_augmentation("flip,rotation,zoom,contrast")
    """
    names = [name.strip() for name in str(names or "").split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation {unknown!r} in {names!r}; choose from {AUGMENTATIONS} or 'none'.")
    if not names:
        return None
    make = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "rotation": lambda: keras.layers.RandomRotation(0.05, seed=seed),
        "zoom": lambda: keras.layers.RandomZoom(0.1, seed=seed),
        "contrast": lambda: keras.layers.RandomContrast(0.2, seed=seed),
        "crop": lambda: RandomResizedCrop(seed=seed),
        "color": lambda: keras.layers.RandomColorJitter(
            value_range=(0, 255), brightness_factor=0.2, contrast_factor=0.2, saturation_factor=(0.3, 0.7),
            hue_factor=0.05, seed=seed),
        "randaugment": lambda: keras.layers.RandAugment(value_range=(0, 255), seed=seed),
    }
    return keras.Sequential([make[name]() for name in names], name="augmentation")


def read_image_folder(directory):
    """Reads a folder holding one sub-folder of images per class (the
    sub-folder's name is the label), in sorted order.

    Returns:
        A `LabelledTexts` whose `texts` are image paths.

    Example:
    >>> rows = read_image_folder("photos")   # photos/shoes/1.jpg, photos/bags/7.png
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No such image folder: {directory}")
    classes = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{directory}: no class sub-folders; expected {directory}/<label>/<image>.")
    paths, labels = [], []
    for folder in classes:
        # Files of other types stay in, so `load_images` names (or, with
        # `skip_bad_images`, counts) them instead of leaving them out unseen.
        images = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not images:
            raise DataError(f"{folder}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files).")
        paths += [str(p) for p in images]
        labels += [folder.name] * len(images)
    return LabelledTexts(paths, labels, list(paths))


def read_image_csv(path):
    """Reads a CSV with `path,label` columns; relative paths are taken from
    the CSV's folder.

    Example:
    >>> rows = read_image_csv("labels.csv")
    """
    path = pathlib.Path(path)
    paths, labels, origins = [], [], []
    for origin, record in csv_records(path, ["path", "label"]):
        if not (record["path"] or "").strip() or not (record["label"] or "").strip():
            raise DataError(f"{origin}: empty path or label: {record!r}.")
        paths.append(str(path.parent / record["path"].strip()))
        labels.append(record["label"].strip())
        origins.append(origin)
    if not paths:
        raise DataError(f"{path}: no rows.")
    return LabelledTexts(paths, labels, origins)


def read_labelled_images(source):
    """A folder per class, a `.csv` of `path,label`, or a `.txt` image list
    with a `classes.csv` catalogue beside it (`tl_keras.data.catalogue`)."""
    if str(source).lower().endswith(".txt"):
        return read_image_list(source)
    return read_image_csv(source) if str(source).lower().endswith(".csv") else read_image_folder(source)


def _check_channels(encoded, origin):
    # decode_image(channels=3) would silently convert grey or RGBA images;
    # the rule is three channels, so look at what the file holds first.
    channels = int(tf.io.decode_image(encoded, expand_animations=False).shape[-1])
    if channels != 3:
        raise DataError(f"{origin}: the image has {channels} channel(s); expected 3 (RGB). Convert it to RGB.")


def decode_checked(encoded, origin, image_size):
    """`decode_and_resize` of one encoded image as a uint8 numpy array; an
    image that is not 3-channel RGB or not readable is a `DataError` naming
    `origin`."""
    encoded = tf.constant(encoded)
    try:
        _check_channels(encoded, origin)
        return decode_and_resize(encoded, image_size).numpy()
    except tf.errors.InvalidArgumentError:
        raise DataError(f"{origin} is not a readable JPEG, PNG, BMP or GIF image.") from None


def as_pixels(x, image_size):
    """Raw images as uint8 pixels `[N, h, w, 3]`: encoded images (bytes)
    or image files decoded and resized with `decode_checked` (an unreadable
    one named), uint8 arrays as they are; `None` for anything else.

    Example:
    >>> as_pixels(["photos/shoe.jpg", open("bag.png", "rb").read()], (224, 224)).shape
    (2, 224, 224, 3)
    """
    if isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype == np.uint8:
        return x
    if isinstance(x, (list, tuple)) and x and all(isinstance(item, (bytes, str, pathlib.Path)) for item in x):
        return np.stack([decode_checked(item if isinstance(item, bytes) else pathlib.Path(item).read_bytes(),
                                        f"image {row}" if isinstance(item, bytes) else str(item), image_size)
                         for row, item in enumerate(x)])
    return None


def typical_side(paths, sample=64):
    """The median shorter side, in pixels, of up to `sample` of the images
    at `paths` (evenly spaced through the list); `None` when none of them
    is readable. Unreadable files are passed over here: `load_images`
    names them.

    Example:
    >>> typical_side(["photos/a.jpg", "photos/b.jpg"])
    348
    """
    step = max(1, len(paths) // sample)
    sides = []
    for path in list(paths)[::step][:sample]:
        try:
            shape = tf.io.decode_image(pathlib.Path(path).read_bytes(), expand_animations=False).shape
        except (OSError, tf.errors.InvalidArgumentError):
            continue
        sides.append(min(shape[0], shape[1]))
    return int(np.median(sides)) if sides else None


def load_images(rows, image_size, skip_bad_images=False, verbose=1):
    """Decodes and resizes every image of `rows` (from `read_labelled_images`).

    Args:
        rows: a `LabelledTexts` of image paths.
        image_size: `(height, width)`.
        skip_bad_images: leave out unreadable, corrupt or non-RGB images
            (counted in the result) instead of raising `DataError`.
        verbose: a progress bar (1) or none (0).

    Returns:
        `(pixels, rows, skipped)`: uint8 `[N, h, w, 3]`, the rows kept and
        a list of `(origin, reason)` for the images left out.
    """
    pixels, kept, skipped = [], [], []
    progress = progress_bar(len(rows), "decoding and resizing", "image", verbose)
    for index, (path, origin) in enumerate(zip(rows.texts, rows.origins)):
        try:
            if pathlib.Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{origin}: unsupported image type {pathlib.Path(path).suffix!r} "
                                f"(expected {', '.join(IMAGE_EXTENSIONS)}).")
            try:
                encoded = tf.constant(pathlib.Path(path).read_bytes())
            except OSError as error:
                raise DataError(f"{origin}: cannot read {path}: {error.strerror}.") from None
            pixels.append(decode_checked(encoded, origin if origin == path else f"{origin} ({path})", image_size))
            kept.append(index)
        except DataError as error:
            if not skip_bad_images:
                raise
            skipped.append((origin, str(error)))
        progress.add(1)
    if not kept:
        raise DataError(f"No readable images among {len(rows)} rows.")
    return np.stack(pixels), rows.subset(kept), skipped
