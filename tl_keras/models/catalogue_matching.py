"""Recognising new products from their catalogue entry (cold start).

A shop adds a product with one catalogue image and a description and no
photos. `CatalogueMatcher` learns, on the classes that have photos, two
projections into a shared space: shop photos' backbone features next to the
catalogue images' features, and next to the descriptions' text embeddings
(a softmax over the seen classes' entries, temperature `temperature`). A new
class is then one more entry: its catalogue image and description are
projected and photos are matched against them, with no retraining. The score
of a photo for an entry is `image_weight` times the image cosine plus the
rest times the text cosine.

The baseline it must beat is the plain nearest catalogue image: the cosine of
the raw photo and catalogue-image features (`nearest_catalogue_image`).

Example:
>>> matcher = CatalogueMatcher(1280, 384)
>>> matcher.fit_entries(photo_features, labels, catalogue_images, descriptions)
>>> matcher.similarities(new_photos, new_catalogue_images, new_descriptions).argmax(axis=1)
"""

import keras
import numpy as np
import tensorflow as tf


def _normalised(array):
    return array / np.maximum(np.linalg.norm(array, axis=-1, keepdims=True), 1e-12)


def nearest_catalogue_image(photo_features, catalogue_image_features):
    """Cosine similarities `[photos, entries]` of raw backbone features: the
    plain baseline."""
    return _normalised(np.asarray(photo_features)) @ _normalised(np.asarray(catalogue_image_features)).T


class CatalogueMatcher(keras.Model):
    """Projections of photo features and catalogue entries (image features,
    description embeddings) into one space, trained on seen classes.

    Args:
        image_dim: the image backbone's feature width (photos and catalogue
            images share the backbone).
        text_dim: the text backbone's embedding width.
        projection_dim: the shared space's width.
        temperature: the softmax temperature over entries in training.
        image_weight: the image cosine's share of the score (the rest is the
            text cosine); choose it on validation classes.
        dropout: dropout on the photo features in training.
        seed: the dropout's seed (`fit_entries` seeds the rest).

    Example:
    >>> matcher = CatalogueMatcher(1280, 384, image_weight=0.7)
    """

    def __init__(self, image_dim, text_dim, projection_dim=256, temperature=0.05, image_weight=0.7, dropout=0.2,
                 seed=1234, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= image_weight <= 1:
            raise ValueError(f"`image_weight` must be in [0, 1], received {image_weight!r}.")
        self.image_dim, self.text_dim, self.projection_dim = image_dim, text_dim, projection_dim
        self.temperature, self.image_weight = temperature, image_weight
        self.dropout = keras.layers.Dropout(dropout, seed=seed, name="photo_dropout")
        self.photo_to_image = keras.layers.Dense(projection_dim, name="photo_to_image")
        self.photo_to_text = keras.layers.Dense(projection_dim, name="photo_to_text")
        self.catalogue_image = keras.layers.Dense(projection_dim, name="catalogue_image")
        self.catalogue_text = keras.layers.Dense(projection_dim, name="catalogue_text")

    def build(self, input_shape=None):
        """Builds the projections from the widths (the inputs are three
        matrices, not one tensor); `fit_entries` builds them after seeding,
        so `seed` sets their initial weights."""
        for layer, width in ((self.photo_to_image, self.image_dim), (self.photo_to_text, self.image_dim),
                             (self.catalogue_image, self.image_dim), (self.catalogue_text, self.text_dim)):
            layer.build((None, width))
        self.built = True

    def cosines(self, photos, images, texts, training=False):
        """Image and text cosine similarities `[photos, entries]`, as tensors."""
        photos = self.dropout(photos, training=training)
        normal = lambda x: tf.math.l2_normalize(x, axis=-1)  # noqa: E731
        image = tf.matmul(normal(self.photo_to_image(photos)), normal(self.catalogue_image(images)), transpose_b=True)
        text = tf.matmul(normal(self.photo_to_text(photos)), normal(self.catalogue_text(texts)), transpose_b=True)
        return image, text

    def scores(self, photos, images, texts, image_weight=None):
        """The combined scores `[photos, entries]` as a tensor (also in the
        serving graph): `image_weight` (the matcher's unless given) times
        the image cosine plus the rest times the text cosine."""
        weight = self.image_weight if image_weight is None else image_weight
        image, text = self.cosines(photos, images, texts)
        return weight * image + (1 - weight) * text

    def similarities(self, photo_features, catalogue_image_features, description_embeddings, image_weight=None):
        """Scores `[photos, entries]` of photos against catalogue entries
        (seen or new); `image_weight` overrides the matcher's.

        Example:
        >>> scores = matcher.similarities(photos, new_images, new_descriptions)
        """
        return self.scores(*(tf.constant(np.asarray(x), tf.float32) for x in (
            photo_features, catalogue_image_features, description_embeddings)), image_weight).numpy()

    def fit_entries(self, photo_features, labels, catalogue_image_features, description_embeddings, epochs=30,
                    batch_size=64, learning_rate=1e-3, seed=1234):
        """Trains the projections: each photo's softmax over all seen
        entries (image and text cosines / temperature, two cross-entropies)
        puts its own entry first.

        Args:
            photo_features: `[N, image_dim]` photo features.
            labels: `[N]` int, each photo's entry (row of the catalogue arrays).
            catalogue_image_features: `[C, image_dim]`, one row an entry.
            description_embeddings: `[C, text_dim]`.

        Returns:
            The mean loss of each epoch.
        """
        keras.utils.set_random_seed(seed)
        images = tf.constant(np.asarray(catalogue_image_features), tf.float32)
        texts = tf.constant(np.asarray(description_embeddings), tf.float32)
        labels = np.asarray(labels)
        if labels.min() < 0 or labels.max() >= len(images):
            raise ValueError(f"`labels` must index the {len(images)} entries, received values "
                             f"{labels.min()}-{labels.max()}.")
        if not self.built:
            self.build()
        dataset = tf.data.Dataset.from_tensor_slices((np.asarray(photo_features, "float32"), labels)).shuffle(
            len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
        optimizer = keras.optimizers.Adam(learning_rate)
        # A custom step: the "targets" are rows of a matrix the step also reads.
        losses = []
        for _ in range(epochs):
            total = 0.0
            for photos, targets in dataset:
                with tf.GradientTape() as tape:
                    image, text = self.cosines(photos, images, texts, training=True)
                    loss = sum(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                        targets, cosine / self.temperature, from_logits=True)) for cosine in (image, text))
                optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
                total += float(loss) * len(targets)
            losses.append(total / len(labels))
        return losses
