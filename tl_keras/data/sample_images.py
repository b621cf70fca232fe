"""A small labelled image set from real photographs that ship with
scikit-image (a cat, a coffee cup, a rocket): random square crops, written
as JPEG and PNG files a folder per class. For the image recipe's default
run, tests and benchmarks; nothing is downloaded. scikit-image's sample
images are public domain or CC0 (see `skimage.data`)."""

import pathlib

import numpy as np
import tensorflow as tf

SAMPLES = ("chelsea", "coffee", "rocket")
CLASS_NAMES = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut",
               "hubble_deep_field": "galaxies", "immunohistochemistry": "tissue"}


def sample_crops(sample, count, size=96, seed=0, fraction=0.5):
    """`count` random square crops (`fraction` of the photograph's shorter
    side) of a scikit-image sample photograph, resized to `size`: uint8
    `[count, size, size, 3]`."""
    import skimage.data

    rng = np.random.default_rng(seed)
    image = getattr(skimage.data, sample)()
    side = int(min(image.shape[:2]) * fraction)
    crops = []
    for _ in range(count):
        top = rng.integers(0, image.shape[0] - side + 1)
        left = rng.integers(0, image.shape[1] - side + 1)
        crop = image[top:top + side, left:left + side]
        crops.append(tf.cast(tf.round(tf.image.resize(crop, (size, size))), tf.uint8).numpy())
    return np.stack(crops)


def write_sample_images(root, per_class=30, size=96, seed=0, png_every=3, samples=SAMPLES, fraction=0.5):
    """Writes `root/<class>/<n>.jpg` (every `png_every`-th a PNG) of crops
    of `samples` (keys of `CLASS_NAMES`; by default the cat, coffee and
    rocket) and returns `root`.

    Example:
    >>> write_sample_images("data/samples", per_class=12)
    PosixPath('data/samples')
    """
    root = pathlib.Path(root)
    for index, sample in enumerate(samples):
        folder = root / CLASS_NAMES[sample]
        folder.mkdir(parents=True, exist_ok=True)
        for number, crop in enumerate(sample_crops(sample, per_class, size, seed + index, fraction)):
            if number % png_every == 0:
                (folder / f"{number}.png").write_bytes(tf.io.encode_png(crop).numpy())
            else:
                (folder / f"{number}.jpg").write_bytes(tf.io.encode_jpeg(crop, quality=90).numpy())
    return root
