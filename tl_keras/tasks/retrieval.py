"""`Retrieval`: a two-tower recommender over a catalogue, with a frozen text
backbone embedding item texts (so new items are recommended from their text
alone), in KerasHub's style: `from_preset`, `fit` on interactions,
`recommend`, `evaluate_report`, `save_to_preset`, `export`.
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf

from tl_keras.core.files import load_arrays, save_arrays
from tl_keras.data.interactions import Catalog, Users, histories, sequential_examples, user_runs
from tl_keras.data.item_index import read_item_index
from tl_keras.data.tokens import tokenize
from tl_keras.evaluation.ranking import evaluate_ranking
from tl_keras.export.retrieval import export_recommender
from tl_keras.models.backbones import default_pooling, load_text_backbone
from tl_keras.models.heads import build_encoder
from tl_keras.models.recommender import Recommender
from tl_keras.models.two_tower import ItemTower, TwoTowerModel, UserTower
from tl_keras.tasks.base import TransferTask, history_of, read_task_config, refuse_overrides
from tl_keras.training import multi_worker
from tl_keras.training.distribution import global_batch_size
from tl_keras.transfer.feature_cache import FeatureCache

ITEM_FILE = "items.npz"


def item_text_features(catalog, backbone, sequence_length, pooling=None, cache_dir=None, verbose=1):
    """Embeds every item text once with the frozen backbone (its default
    pooling unless `pooling`), cached on disk when `cache_dir` is set.

    Returns:
        `(features [num_items, d], encoder, preprocessor, settings)`:
        `settings` names the backbone, pooling and sequence length.
    """
    backbone_model, preprocessor = load_text_backbone(backbone, sequence_length)
    pooling = pooling or default_pooling(backbone, backbone_model)
    encoder = build_encoder(backbone_model, pooling)
    encoder.trainable = False
    tokens = tokenize(catalog.texts, preprocessor, verbose=verbose)
    features = FeatureCache(cache_dir).features(encoder, tokens, verbose=verbose)
    return features, encoder, preprocessor, {"backbone": str(backbone), "pooling": pooling,
                                             "sequence_length": sequence_length}


def held_out(split, num_items, candidates=None):
    """The test users of a time-ordered `split`, their held-out items (a set
    each) and a bool `[users, num_items + 1]` of the items to leave out of
    their ranking: their training items, and every item outside
    `candidates` (item numbers) when it is given."""
    runs = user_runs(split.test.users)
    test_users = np.array([user for user, _, _ in runs], np.int32)
    relevant = [set(split.test.items[start:end].tolist()) for _, start, end in runs]
    trained = {user: split.train.items[start:end] for user, start, end in user_runs(split.train.users)}
    exclude = np.zeros((len(test_users), num_items + 1), bool)
    if candidates is not None:
        exclude[:] = True
        exclude[:, np.asarray(candidates)] = False
    for row, user in enumerate(test_users):
        exclude[row, trained.get(user, [])] = True
    return test_users, relevant, exclude


class ValidationRecall(keras.callbacks.Callback):
    """Scores recall@10 of a validation `TimeSplit` after each epoch into the
    logs as `val_recall@10`, for `EarlyStopping` to read.

    Args:
        split: the validation `TimeSplit` (`time_ordered_split(train, 1)`).
    """

    name = "val_recall@10"

    def __init__(self, split):
        super().__init__()
        self.split = split

    def on_epoch_end(self, epoch, logs=None):
        self.model._recommender = None  # the item index changes every epoch
        figures = self.model.evaluate_report(self.split, ks=(10,), split_name="validation")
        if logs is not None:
            logs[self.name] = figures["overall"]["recall@10"]


class Retrieval(TransferTask, TwoTowerModel):
    """Two towers over a catalogue and its users: an item tower over frozen
    text embeddings (plus, optionally, a learned id vector for the items
    seen in training) and a user tower over the user's id, recent items and
    features, trained with an in-batch softmax.

    Args:
        catalog: the `Catalog` (item ids and texts).
        users: the `Users`.
        text_features: `[num_items, d]` frozen text embeddings, or `None`
            for an id-only model.
        known_items: bool `[num_items]`: items that get a learned id vector,
            or `None` for none.
        encoder, preprocessor: the frozen text encoder and its preprocessor
            (to embed new items), or `None`.
        embedding_dim: the towers' output size.
        history_length: recent items the user tower pools.
        temperature: the initial softmax temperature (learned).
        remove_accidental_hits: mask in-batch duplicates of a positive.
        item_log_probabilities: for the logQ correction, or `None`.
        use_user_ids: learn a vector per user id.
        history_pooling: `"recency"` (a learned weight per position of the
            recent items) or `"mean"`.
        text_hidden_dim: the hidden width of the text projection (0:
            linear).
        id_dropout: the share of item id vectors left out in training.
        sampled_negatives: uniformly sampled negatives per step, beside
            the in-batch ones.
        settings: JSON-ready facts kept in the preset (backbone, pooling,
            sequence length).

    Example:
    >>> retrieval = Retrieval.from_preset(minilm_l6_offline_path(), catalog, users)
    >>> retrieval.fit(split.train, epochs=10)
    >>> retrieval.recommend(["u0001"], [["kit-003"]], k=5)
    """

    def __init__(self, catalog, users, text_features=None, known_items=None, encoder=None, preprocessor=None,
                 embedding_dim=64, history_length=10, temperature=0.1, remove_accidental_hits=True,
                 item_log_probabilities=None, use_user_ids=True, history_pooling="recency", sampled_negatives=0,
                 text_hidden_dim=0, id_dropout=0.0, settings=None, seed=None, **kwargs):
        item_tower = ItemTower(text_features, known_items, embedding_dim, text_hidden_dim, id_dropout, seed,
                               name="item_tower")
        sizes = [len(vocabulary) for vocabulary in users.feature_vocabularies]
        user_tower = UserTower(len(users), embedding_dim, users.features, sizes, use_user_ids=use_user_ids,
                               history_length=history_length, history_pooling=history_pooling, name="user_tower")
        super().__init__(item_tower, user_tower, temperature, remove_accidental_hits, item_log_probabilities,
                         sampled_negatives, seed, **kwargs)
        self.catalog, self.users = catalog, users
        self.text_features, self.known_items = text_features, known_items
        self.encoder, self.preprocessor = encoder, preprocessor
        self.embedding_dim, self.history_length, self.use_user_ids = embedding_dim, history_length, use_user_ids
        self.history_pooling, self.text_hidden_dim, self.id_dropout = history_pooling, text_hidden_dim, id_dropout
        self.initial_temperature = temperature
        self.settings = dict(settings or {})
        # Built here, under the caller's distribution scope: Keras' own build
        # from a distributed batch would trace the towers with float inputs.
        self.build({"user": (None,), "history": (None, history_length), "item": (None,)})

    @classmethod
    def from_preset(cls, preset, catalog=None, users=None, sequence_length=None, pooling=None, cache_dir=None,
                    verbose=0, **kwargs):
        """A retrieval model whose item tower embeds the catalogue's texts
        with the frozen text backbone `preset`, or one written by
        `save_to_preset` (catalogue, users and weights restored: any other
        argument is refused, naming it, since the trained towers and item
        index hold them).

        Args:
            preset: a KerasHub text preset, or a saved retrieval preset.
            catalog, users: the `Catalog` and `Users` (new models only).
            sequence_length, pooling: how item texts are embedded (32 tokens,
                the backbone's default pooling).
            cache_dir: a feature cache folder for the item embeddings.
            **kwargs: the other `Retrieval` arguments (`known_items`,
                `embedding_dim`, `temperature`, ...).
        """
        stored = read_task_config(preset, cls)
        if stored is not None:
            refuse_overrides(preset, cls, catalog=catalog, users=users, sequence_length=sequence_length,
                             pooling=pooling, **kwargs)
            folder = pathlib.Path(str(preset))
            items = load_arrays(folder / ITEM_FILE, "items")
            if items is None:
                raise ValueError(f"{folder / ITEM_FILE} is missing or damaged; save the retrieval model again.")
            saved_users = Users(stored["user_ids"], stored["feature_names"], stored["feature_vocabularies"],
                                items["user_features"])
            encoder = preprocessor = None
            if "text_features" in items:
                backbone, preprocessor = load_text_backbone(folder, stored["settings"]["sequence_length"])
                encoder = build_encoder(backbone, stored["settings"]["pooling"])
                encoder.trainable = False
            retrieval = cls(Catalog(stored["item_ids"], stored["item_texts"]), saved_users,
                            items.get("text_features"), items.get("known_items"), encoder, preprocessor,
                            embedding_dim=stored["embedding_dim"], history_length=stored["history_length"],
                            temperature=stored["temperature"],
                            remove_accidental_hits=stored["remove_accidental_hits"],
                            item_log_probabilities=items.get("item_log_probabilities"),
                            use_user_ids=stored["use_user_ids"], history_pooling=stored["history_pooling"],
                            sampled_negatives=stored["sampled_negatives"],
                            text_hidden_dim=stored["text_hidden_dim"], id_dropout=stored["id_dropout"],
                            settings=stored["settings"])
            retrieval.load_weights(str(folder / "two_tower.weights.h5"))
            return retrieval
        if catalog is None or users is None:
            raise ValueError(f"A new retrieval model needs `catalog` and `users`; received {catalog!r}, {users!r}.")
        features, encoder, preprocessor, settings = item_text_features(catalog, preset, sequence_length or 32,
                                                                       pooling, cache_dir, verbose)
        return cls(catalog, users, features, encoder=encoder, preprocessor=preprocessor, settings=settings, **kwargs)

    def fit(self, x=None, y=None, batch_size=128, epochs=10, verbose=1, callbacks=(), validation=None,
            learning_rate=3e-3, distribution=None, seed=1234, patience=2, **kwargs):
        """Trains on time-ordered `Interactions` (each interaction's user,
        their recent items and the item); `tf.data` datasets of example
        dicts go to Keras' own `fit` unchanged.

        Args:
            x: the training `Interactions` (`time_ordered_split(...).train`).
            epochs, batch_size: `batch_size` per replica.
            learning_rate: Adam's learning rate.
            distribution: a `tf.distribute.Strategy` (the current one if
                `None`); build the model under its scope.
            validation: a `TimeSplit` whose `test` holds validation
                interactions (`time_ordered_split(train, 1)`, with `x` its
                `train`): recall@10 on it is scored each epoch
                (`val_recall@10`), training stops after `patience` epochs
                without a gain and the best epoch's weights are kept.

        Returns:
            A `keras.callbacks.History` with the per-epoch `loss` (and
            `val_recall@10`).

        Example:
        >>> inner = time_ordered_split(split.train, holdout=1)
        >>> history = retrieval.fit(inner.train, epochs=10, validation=inner)
        >>> best_epochs = int(np.argmax(history.history["val_recall@10"])) + 1
        """
        if not hasattr(x, "items") or not hasattr(x, "users"):
            return super().fit(x, y, epochs=epochs, verbose=verbose, callbacks=list(callbacks), **kwargs)
        distribution = distribution or tf.distribute.get_strategy()
        examples = sequential_examples(x, self.history_length)
        with distribution.scope():
            self.compile(optimizer=keras.optimizers.Adam(learning_rate))
        dataset = (tf.data.Dataset.from_tensor_slices(examples)
                   .shuffle(len(examples["item"]), seed=seed, reshuffle_each_iteration=True)
                   .batch(global_batch_size(batch_size, distribution)).prefetch(tf.data.AUTOTUNE))
        callbacks = list(callbacks)
        if validation is not None:
            callbacks = [ValidationRecall(validation), keras.callbacks.EarlyStopping(
                monitor=ValidationRecall.name, mode="max", patience=patience, restore_best_weights=True), *callbacks]
        history = multi_worker.fit(self, distribution, dataset, epochs=epochs, callbacks=callbacks, verbose=verbose)
        self._recommender = None
        return history_of({name: [float(value) for value in values] for name, values in history.history.items()
                           if name in ("loss", ValidationRecall.name)})

    def get_config(self):
        # Keras' own: a retrieval model is saved as a preset (its item index
        # and catalogue are data), not as a `.keras` file.
        return TwoTowerModel.get_config(self)

    def recommender(self):
        """The `Recommender` over this model (the item index computed once
        after training)."""
        if getattr(self, "_recommender", None) is None:
            self._recommender = Recommender(self, self.catalog, self.users, self.history_length, self.encoder,
                                            self.preprocessor)
        return self._recommender

    def recommend(self, user_ids, recent_item_ids, k=10):
        """Top-`k` `(item_ids, scores)` for each user given their recent
        items (see `Recommender.recommend`)."""
        return self.recommender().recommend(user_ids, recent_item_ids, k)

    def add_items(self, item_ids, texts):
        """Puts new items in the index from their texts, without retraining."""
        return self.recommender().add_items(item_ids, texts)

    def add_item_index(self, index_dir, version=None):
        """A `Recommender` whose index also holds the items of an item index
        (`tl-keras embed-catalogue` over this model's export; the newest
        version unless `version`); export it as the next version with
        `tl_keras.export.retrieval.export_recommender`."""
        return self.recommender().add_item_vectors(*read_item_index(index_dir, version))

    def evaluate_report(self, split, ks=(10, 50), seed=0, split_name="test", candidates=None):
        """Recall@k and NDCG@k of the held-out interactions of a
        time-ordered `split`, overall and on cold-start items, named by
        `split_name`; ranked among `candidates` (item numbers) only when
        given."""
        test_users, relevant, exclude = held_out(split, len(self.catalog), candidates)
        recent = histories(split.train, len(self.users), self.history_length)[test_users]
        scores = self.recommender().scores(test_users, recent)
        return {"split": split_name, **evaluate_ranking(scores, relevant, exclude, split.cold_items, ks, seed)}

    def task_config(self):
        return {"item_ids": list(self.catalog.item_ids), "item_texts": list(self.catalog.texts),
                "user_ids": list(self.users.user_ids), "feature_names": list(self.users.feature_names),
                "feature_vocabularies": [list(v) if not isinstance(v, dict) else v
                                         for v in self.users.feature_vocabularies],
                "embedding_dim": self.embedding_dim, "history_length": self.history_length,
                "temperature": self.initial_temperature, "remove_accidental_hits": self.remove_accidental_hits,
                "use_user_ids": self.use_user_ids, "history_pooling": self.history_pooling,
                "sampled_negatives": self.sampled_negatives, "text_hidden_dim": self.text_hidden_dim,
                "id_dropout": self.id_dropout, "settings": self.settings}

    def write_preset_parts(self, folder):
        arrays = {"user_features": np.asarray(self.users.features)}
        if self.text_features is not None:
            arrays["text_features"] = np.asarray(self.text_features, np.float32)
            backbone = next(layer for layer in self.encoder.layers if hasattr(layer, "save_to_preset"))
            backbone.save_to_preset(str(folder))
            self.preprocessor.save_to_preset(str(folder))
        if self.known_items is not None:
            arrays["known_items"] = np.asarray(self.known_items, bool)
        if self.item_log_probabilities is not None:
            arrays["item_log_probabilities"] = np.asarray(self.item_log_probabilities)
        save_arrays(folder / ITEM_FILE, "items", arrays)
        self.save_weights(str(folder / "two_tower.weights.h5"))

    def export(self, export_dir, model_name, version=None, warmup=(), card=None, k=10):
        """Writes the retrieval SavedModel (user id and recent item ids in,
        top-`k` item ids and scores out); see `tl_keras.export.retrieval`."""
        return export_recommender(self.recommender(), export_dir, model_name, k, version,
                                  warmup_user_ids=warmup, card={**self.settings, **(card or {})})

