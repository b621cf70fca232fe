"""Two-tower recommendation: data readers, the cold-start split, ranking
metrics, the collaborative baselines, the softmax over mixed negatives,
recency pooling, validation-chosen epochs, the synthetic shop end to end
(text tower vs id-only and the baselines on cold-start items) and the
retrieval SavedModel."""

import json
import subprocess

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from conftest import SAVED_MODEL_CLI
from tl_keras.core.settings import build_config
from tl_keras.data.texts import DataError
from tl_keras.training.runs import TrainedModelKept
from tl_keras.data.interactions import (
    Interactions, cold_start_split, histories, pack_recent, read_interactions, read_items, read_users, sequential_examples,
    time_ordered_split, user_runs,
)
from tl_keras.models.collaborative import EASE, ItemKNN, Popularity, interaction_matrix, text_similarity_scores
from tl_keras.evaluation.ranking import chance_recall, evaluate_ranking, recall_and_ndcg
from tl_keras.models.recommender import top_k
from tl_keras.serving.local_server import LocalServer
from tl_keras.workflows.recommendation import RecommendationConfig, run
from tl_keras.serving.clients import GrpcClient, RestClient
from tl_keras.models.two_tower import ItemTower, TwoTowerModel, UserTower, item_log_probabilities
from tl_keras.data.synthetic_shop import ADJECTIVES, TOPICS, make_synthetic_shop


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def catalog(tmp_path):
    return read_items(write(tmp_path / "items.csv", "item_id,text\na,red kettle\nb,garden hose\nc,tent\n"))


def test_items_reader_names_the_bad_line(tmp_path):
    with pytest.raises(DataError, match=r"items.csv:3: duplicate item_id 'a' \(first at .*items.csv:2\)"):
        read_items(write(tmp_path / "items.csv", "item_id,text\na,kettle\na,hose\n"))
    with pytest.raises(DataError, match=r"items.csv:3: item 'b' has an empty text"):
        read_items(write(tmp_path / "items.csv", "item_id,text\na,kettle\nb,  \n"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]"):
        read_items(write(tmp_path / "items.csv", "item_id,title\na,kettle\n"))


def test_interactions_reader_rejects_unknown_items_and_bad_numbers(tmp_path, catalog):
    path = write(tmp_path / "clicks.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,zzz,2\n")
    with pytest.raises(DataError, match=r"clicks.csv:3: unknown item_id 'zzz'"):
        read_interactions(path, catalog)
    path = write(tmp_path / "clicks.csv", "user_id,item_id,timestamp\nu1,a,yesterday\n")
    with pytest.raises(DataError, match=r"clicks.csv:2: timestamp must be a finite number, received 'yesterday'"):
        read_interactions(path, catalog)


def test_users_file_features_and_new_users(tmp_path, catalog):
    users = read_users(write(tmp_path / "users.csv", "user_id,country\nu1,fr\nu2,de\nu3,fr\n"))
    assert users.feature_names == ["country"] and users.features[1:, 0].tolist() == [1, 2, 1]
    with pytest.raises(DataError, match=r"dup.csv:3: duplicate user_id 'u1'"):
        read_users(write(tmp_path / "dup.csv", "user_id,country\nu1,fr\nu1,de\n"))
    clicks = write(tmp_path / "clicks.csv", "user_id,item_id\nu9,a\nu1,b\n")
    interactions, users = read_interactions(clicks, catalog, users)
    # u9 is not in the users file: it is numbered after the file's users,
    # with unknown (0) features.
    assert users.index["u9"] == 4 and users.features[4].tolist() == [0]
    assert interactions.users.tolist() == [4, 1]


def test_time_ordered_split_holds_out_each_users_latest(tmp_path, catalog):
    rows = "user_id,item_id,timestamp\n" + "".join(
        f"{user},{item},{time}\n" for user, item, time in
        [("u1", "a", 5), ("u1", "b", 1), ("u1", "c", 9), ("u2", "a", 3), ("u2", "b", 4), ("u3", "a", 1)])
    interactions, users = read_interactions(write(tmp_path / "clicks.csv", rows), catalog)
    split = time_ordered_split(interactions, holdout=1)
    # u1's latest is c (t=9), u2's is b; u3 has one interaction and stays in training.
    test = sorted(zip(split.test.users.tolist(), split.test.items.tolist()))
    assert test == [(users.index["u1"], catalog.index["c"]), (users.index["u2"], catalog.index["b"])]
    assert split.cold_items.tolist() == [catalog.index["c"]]  # b is also trained on (u1 at t=1).
    # Training rows are in time order per user: u1 saw b then a.
    examples = sequential_examples(split.train, length=2)
    u1 = examples["user"] == users.index["u1"]
    assert examples["item"][u1].tolist() == [catalog.index["b"], catalog.index["a"]]
    assert examples["history"][u1].tolist() == [[0, 0], [0, catalog.index["b"]]]
    assert histories(split.train, len(users), 3)[users.index["u1"]].tolist() == [0, 2, 1]


def test_top_k_excludes_and_breaks_ties_fairly():
    scores = np.array([[9.0, 0.2, 0.9, 0.5, 0.9]])
    assert top_k(scores, 3).tolist() == [[2, 4, 3]]  # Column 0 (padding) never appears.
    assert top_k(scores, 2, exclude=np.array([[0, 0, 1, 0, 0]], bool)).tolist() == [[4, 3]]
    # With a seeded tie-break, 200 items of equal score land in the top 10
    # about equally often: no item is favoured by its number.
    flat = np.zeros((2000, 201))
    counts = np.bincount(top_k(flat, 10, seed=0).ravel(), minlength=201)[1:]
    assert counts.sum() == 20000 and counts.min() > 50 and counts.max() < 200


def test_recall_and_ndcg_by_hand():
    ranked = np.array([[3, 1, 2], [5, 6, 7]])
    recall, ndcg = recall_and_ndcg(ranked, [{1}, {7, 8}], k=2)
    assert recall == pytest.approx((1.0 + 0.0) / 2)
    assert ndcg == pytest.approx((1 / np.log2(3) + 0.0) / 2)
    recall, ndcg = recall_and_ndcg(ranked, [{3, 1}, set()], k=3)  # Users without items are left out.
    assert recall == 1.0 and ndcg == pytest.approx(1.0)
    assert chance_recall(10, 100, np.array([0, 50])) == pytest.approx((0.1 + 0.2) / 2)


def test_evaluate_ranking_reports_cold_items_separately():
    scores = np.array([[0.0, 0.9, 0.1, 0.5], [0.0, 0.2, 0.9, 0.1]])
    result = evaluate_ranking(scores, [{1, 3}, {3}], np.zeros_like(scores, bool), cold_items=[3], ks=(1, 2))
    assert result["overall"]["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["cold_start"]["users"] == 2 and result["cold_start"]["recall@2"] == pytest.approx((1.0 + 0.0) / 2)


def small_two_tower(text_features=None, known=None, **kwargs):
    keras.utils.set_random_seed(0)
    item_tower = ItemTower(text_features, known, 8)
    return TwoTowerModel(item_tower, UserTower(3, 8), **kwargs)


def test_candidate_logits_mask_accidental_hits_and_apply_logq():
    features = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    log_q = item_log_probabilities(np.array([1, 1, 1, 2, 3, 4]), 4)
    assert log_q[1] == pytest.approx(np.log(3 / 6)) and log_q[2] == pytest.approx(np.log(1 / 6))
    x = {"user": np.array([1, 2, 3], "int32"), "history": np.zeros((3, 2), "int32"), "item": np.array([1, 2, 1], "int32")}
    plain = small_two_tower(features, remove_accidental_hits=False)
    masked = small_two_tower(features, item_log_probabilities=log_q)
    raw = np.asarray(plain.candidate_logits(x, plain(x)))
    corrected = np.asarray(masked.candidate_logits(x, masked(x)))
    # Item 1 is the positive of rows 0 and 2: each is masked among the other's negatives only.
    assert corrected[0, 2] < -1e8 and corrected[2, 0] < -1e8
    assert corrected[0, 0] > -1e8 and corrected[2, 2] > -1e8
    keep = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], bool)
    np.testing.assert_allclose(corrected[keep], (raw - log_q[x["item"]][None, :])[keep], rtol=1e-5)


def test_sampled_negatives_join_the_batch_with_their_own_correction():
    features = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    log_q = item_log_probabilities(np.array([1, 1, 1, 2, 3, 4]), 4)
    x = {"user": np.array([1, 2], "int32"), "history": np.zeros((2, 2), "int32"), "item": np.array([1, 2], "int32")}
    model = small_two_tower(features, item_log_probabilities=log_q, sampled_negatives=64, seed=3)
    outputs = model(x)
    logits = np.asarray(model.candidate_logits(x, outputs))
    assert logits.shape == (2, 2 + 64)
    # Every sampled item is one of the 4 items; its logit is the cosine over
    # the temperature less the log of its expected share of the 66
    # candidates, 64 / (4 items x 66); a batch positive's is 2 P(item) / 66.
    items = np.asarray(model.item_tower(np.arange(5, dtype="int32")))
    cosines = np.asarray(outputs["user"]) @ items.T / float(model.temperature)
    sampled = logits[:, 2:]
    masked = sampled < -1e8
    candidates = cosines[:, 1:, None] - np.log(64 / (4 * 66))
    found = np.abs(sampled[:, None, :] - candidates).min(axis=1) < 1e-4
    assert np.all(found | masked)
    # A sampled copy of a row's own positive is masked, and only then.
    assert masked[0].any() and masked[1].any() and not masked.all()
    np.testing.assert_allclose(logits[:, :2], cosines[:, 1:3] - np.log(np.exp(log_q[1:3]) * 2 / 66), rtol=1e-5)
    loss = model.compute_loss(x, None, outputs)
    assert np.isfinite(float(loss))


def test_id_dropout_acts_in_keras_fit_and_not_in_inference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 5)).astype("float32")
    examples = {"user": rng.integers(1, 4, 64).astype("int32"), "history": np.zeros((64, 2), "int32"),
                "item": rng.integers(1, 7, 64).astype("int32")}
    trained = []
    for rate in (0.0, 0.9):
        keras.utils.set_random_seed(0)
        model = TwoTowerModel(ItemTower(features, np.ones(6, bool), 8, id_dropout=rate, seed=0),
                              UserTower(3, 8, history_length=2))
        model.compile(optimizer=keras.optimizers.Adam(0.05))
        model.fit(tf.data.Dataset.from_tensor_slices(examples).batch(16), epochs=1, verbose=0)
        trained.append(model)
        items = np.arange(7, dtype="int32")
        np.testing.assert_array_equal(model.item_tower(items), model.item_tower(items))  # Inference: no dropout.
    # With 90% of the id vectors left out, Keras' train_step trained something else.
    assert not np.allclose(trained[0].item_tower.id_embedding.get_weights()[0],
                           trained[1].item_tower.id_embedding.get_weights()[0])
    with pytest.raises(ValueError, match=r"`id_dropout` must be in \[0, 1\), received 1.0"):
        ItemTower(features, None, 8, id_dropout=1.0)


def test_recency_pooling_is_a_learned_weighted_mean_of_the_items_present():
    history = np.zeros((1, 3, 4), "float32")
    history[0, 1], history[0, 2] = [1, 0, 0, 0], [0, 1, 0, 0]  # Position 0 is padding.
    tower = UserTower(3, 4, use_user_ids=False, history_length=3, history_pooling="recency")
    tower.build((None,))
    tower.recency_logits.assign(np.log(np.array([5.0, 1.0, 3.0], "float32")))
    pooled_input = np.array([[0.75 * 0 + 0.25, 0.75, 0, 0]], "float32")  # Weights 1 and 3 over the two present.
    expected = tower.combine(pooled_input)
    expected = np.asarray(expected) / np.linalg.norm(np.asarray(expected))
    np.testing.assert_allclose(tower(np.array([1]), history), expected, rtol=1e-5)
    mean = UserTower(3, 4, use_user_ids=False, history_length=3, history_pooling="mean")
    mean.build((None,))
    assert not mean.recency_logits.trainable
    with pytest.raises(ValueError, match="`history_pooling` must be one of .* received 'max'"):
        UserTower(3, 4, history_pooling="max")


def test_collaborative_baselines_by_hand():
    matrix = np.zeros((4, 5), "float32")  # Users 1-3, items 1-4.
    matrix[1, [1, 2]] = matrix[2, [1, 2, 3]] = matrix[3, [3, 4]] = 1
    np.testing.assert_array_equal(Popularity().fit(matrix).scores(matrix[[1]])[0], [0, 2, 2, 2, 1])
    knn = ItemKNN().fit(matrix)
    # cos(item 1, item 3) = 1 / sqrt(2 * 2); user 1 holds items 1 and 2.
    assert knn.similarity[1, 3] == pytest.approx(0.5) and knn.similarity[1, 1] == 0
    assert knn.scores(matrix[[1]])[0, 3] == pytest.approx(0.5 + 0.5)
    assert (ItemKNN(neighbours=1).fit(matrix).similarity > 0).sum(axis=1).max() == 1
    ease = EASE(regularization=2.0).fit(matrix)
    # The constrained least squares' optimality: (XᵀX + λI)B − XᵀX is zero
    # off the diagonal, where the zero-diagonal constraint acts.
    gram = matrix.T @ matrix
    residual = (gram + 2.0 * np.eye(5)) @ ease.weights - gram
    np.testing.assert_allclose(residual - np.diag(np.diag(residual)), 0.0, atol=1e-5)
    assert np.all(np.diag(ease.weights) == 0)
    with pytest.raises(ValueError, match="`regularization` must be > 0, received 0"):
        EASE(0)
    # Text similarity: the item nearest the user's items' text scores highest.
    text = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], "float32")
    scores = text_similarity_scores(text, np.array([[0, 1]]))
    assert scores[0, 1:].argmax() == 0 and scores[0, 2] > scores[0, 3]


def test_cold_start_split_moves_new_items_and_shortens_new_users():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 41), 10).astype("int32")
    items = rng.integers(1, 31, len(users)).astype("int32")
    interactions = Interactions(users, items, np.tile(np.arange(10.0), 40), np.ones(len(users), "float32"),
                                [f"f:{i}" for i in range(len(users))])
    cold = cold_start_split(interactions, item_fraction=0.2, user_fraction=0.25, keep=2, holdout=2, seed=1)
    new_items = set(cold.new_items.cold_items.tolist())
    assert len(new_items) == round(0.2 * len(np.unique(items)))
    train = cold.new_items.train
    assert not new_items & set(train.items.tolist())
    assert set(cold.new_items.test.items.tolist()) <= new_items
    new_users = set(cold.new_users.test.users.tolist())
    assert not new_users & set(cold.new_items.test.users.tolist())
    for user, start, end in user_runs(train.users):
        warm = [i for i in items[users == user] if i not in new_items]
        if user in new_users:
            assert train.items[start:end].tolist() == warm[:2]
            test = cold.new_users.test.items[cold.new_users.test.users == user].tolist()
            assert test == warm[-2:]
        else:
            assert train.items[start:end].tolist() == warm
    with pytest.raises(ValueError, match="`item_fraction` must be in \\(0, 1\\), received 1.5"):
        cold_start_split(interactions, item_fraction=1.5)


def test_new_items_fall_back_to_their_text_and_padding_is_zero():
    features = np.random.default_rng(1).normal(size=(3, 5)).astype("float32")
    known = np.array([True, True, False])
    with_ids = ItemTower(features, known, 4)
    text_only = ItemTower(features, None, 4)
    embedded = np.asarray(with_ids(np.array([0, 1, 2, 3])))
    text_only.build(None)
    text_only.projection.set_weights(with_ids.projection.get_weights())
    reference = np.asarray(text_only(np.array([0, 1, 2, 3])))
    np.testing.assert_allclose(embedded[0], 0.0)
    np.testing.assert_allclose(embedded[3], reference[3], rtol=1e-6)  # Item 3 has no learned id.
    assert not np.allclose(embedded[1], reference[1])  # Items 1 and 2 add their id vector.
    np.testing.assert_allclose(np.linalg.norm(embedded[1:], axis=1), 1.0, rtol=1e-5)


def test_training_lowers_the_loss_and_learns_the_temperature():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 5)).astype("float32")
    examples = {"user": rng.integers(1, 4, 96).astype("int32"), "history": np.zeros((96, 2), "int32")}
    examples["item"] = (examples["user"] * 2 - rng.integers(0, 2, 96)).astype("int32")  # User u likes 2u-1 and 2u.
    model = small_two_tower(features)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    losses = model.fit(tf.data.Dataset.from_tensor_slices(examples).batch(16), epochs=8, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert float(model.temperature) != pytest.approx(0.1)


# --- End to end on the synthetic shop -------------------------------------


@pytest.fixture(scope="module")
def shop_preset(tmp_path_factory):
    """A tiny BERT preset whose vocabulary holds the synthetic shop's words."""
    words = sorted({w for topic, nouns in TOPICS.items() for text in nouns + [topic] for w in text.split()}
                   | set(ADJECTIVES) | {"and", ","})
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=32, intermediate_dim=64, max_sequence_length=64)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True), sequence_length=16)
    path = tmp_path_factory.mktemp("presets") / "shop_bert"
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))
    return path


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory, shop_preset):
    folder = tmp_path_factory.mktemp("shop")
    shop = make_synthetic_shop(seed=0)
    items, interactions, users = shop.write(folder / "data")
    config = build_config(RecommendationConfig, 
        interactions=str(interactions), items=str(items), users=str(users), backbone=str(shop_preset),
        output_dir=str(folder / "run"), export_dir=str(folder / "exports"), sequence_length=16, verbose=0,
        top_k=20, item_id_embedding=False)  # The tiny random BERT's text is weak beside learned ids: text alone.
    return shop, run(config)


def test_text_tower_retrieves_cold_items_the_id_tower_cannot(shop_run):
    shop, result = shop_run
    written = json.loads(result.report_paths[0].read_text())
    assert written["history"]["data"]["unseen_test_items"] > 20
    chance = written["metrics"]["chance"]["overall"]["recall@50"]
    text, ids, popularity, ease = (result.metrics[m]["cold_start"]["recall@50"]
                                   for m in ("two_tower", "id_two_tower", "popularity", "ease"))
    assert text > 2 * chance, (text, chance)  # Text places new items among the known ones.
    # None of the id-based methods has anything to place a new item by.
    assert max(ids, popularity, ease) < chance
    new_items = {m: result.metrics[m]["new_items"]["recall@10"] for m in ("two_tower", "id_two_tower", "ease")}
    # Ranked among the new items only, where id-based methods score at chance.
    assert new_items["two_tower"] > 1.3 * written["metrics"]["chance"]["new_items"]["recall@10"]
    assert new_items["two_tower"] > max(new_items["ease"], new_items["id_two_tower"]) + 0.05
    overall = {m: result.metrics[m]["overall"]["recall@50"] for m in ("two_tower", "popularity")}
    assert overall["two_tower"] > overall["popularity"]
    # Epochs were chosen on validation: the validation curve stops within the budget.
    training = written["history"]["training"]["two_tower"]
    assert 1 <= training["epochs"] <= len(training["validation"]["val_recall@10"]) <= 10
    assert written["history"]["training"]["ease"]["regularization"] in (50, 100, 200, 400, 800, 1600)
    table = result.report_paths[1].read_text()
    assert all(m in table for m in ("item_knn", "ease", "text_similarity", "new items", "new users"))
    assert result.report_paths[2].stat().st_size > 5000


def test_export_returns_the_keras_top_k(shop_run):
    shop, result = shop_run
    recommender = result.task.recommender()
    loaded = tf.saved_model.load(str(result.export_path))
    serve = loaded.signatures["serving_default"]
    user_ids = ["u0001", "u0007", "u0042", "someone-new"]
    recent = [["kit-001", "kit-004", ""], ["", "", ""], ["gar-002", "pet-003", "gar-010"], ["cam-001", "", ""]]
    expected_ids, expected_scores = recommender.recommend(user_ids, recent, k=20)
    served = serve(user_id=tf.constant(user_ids), recent_item_ids=tf.constant(recent))
    assert served["item_ids"].numpy().astype(str).tolist() == expected_ids.tolist()
    np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-4, atol=1e-6)
    assert "kit-001" not in expected_ids[0] and "gar-002" not in expected_ids[2]  # Recent items are left out.
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown item ids in recent_item_ids.*no-such-item"):
        serve(user_id=tf.constant(["u0001"]), recent_item_ids=tf.constant([["no-such-item"]]))
    texts = ["deluxe kettle and whisk, kitchen", "portable tent and lantern, camping"]
    np.testing.assert_allclose(loaded.signatures["embed_items"](text=tf.constant(texts))["embeddings"].numpy(),
                               recommender.embed_texts(texts), rtol=1e-4, atol=1e-5)
    card = json.loads((result.export_path / "model_card.json").read_text())
    assert set(card["signatures"]["serving_default"]["inputs"]) == {"user_id", "recent_item_ids"}
    assert card["signatures"]["serving_default"]["outputs"]["item_ids"]["shape"] == [-1, 20]


def test_served_rankings_equal_in_process_ones_with_distinct_recency_weights(shop_run, tmp_path):
    # Short histories take the last recency weights: the SavedModel must pack
    # them as training and `Recommender` do (left-padded), or scores differ.
    shop, result = shop_run
    tower = result.task.user_tower
    saved = tower.recency_logits.numpy()
    try:
        tower.recency_logits.assign(np.random.default_rng(0).normal(0.0, 2.0, len(saved)).astype("float32"))
        result.task._recommender = None
        recommender = result.task.recommender()
        user_ids = ["u0001", "u0007", "u0042", "someone-new"]
        recent = [["kit-001", "", "kit-004"], ["gar-002", "", ""], ["gar-002", "pet-003", "gar-010"], ["cam-001", "", ""]]
        expected_ids, expected_scores = recommender.recommend(user_ids, recent, k=20)
        path = result.task.export(str(tmp_path), "recency", k=20)
        served = tf.saved_model.load(str(path)).signatures["serving_default"](
            user_id=tf.constant(user_ids), recent_item_ids=tf.constant(recent))
        assert served["item_ids"].numpy().astype(str).tolist() == expected_ids.tolist()
        np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-5, atol=1e-5)
    finally:
        tower.recency_logits.assign(saved)
        result.task._recommender = None


def test_pack_recent_keeps_the_last_items_left_padded():
    packed = pack_recent(tf.ragged.constant([[4, 0, 7], [3], [], [1, 2, 3, 4, 5]]), 3).numpy()
    assert packed.tolist() == [[0, 4, 7], [0, 0, 3], [0, 0, 0], [3, 4, 5]]
    assert pack_recent(tf.constant([[0, 5, 0, 6]]), 3).numpy().tolist() == [[0, 5, 6]]


def test_new_items_join_the_index_without_retraining(shop_run):
    shop, result = shop_run
    recommender = result.task.recommender()
    before = [w.copy() for w in recommender.model.get_weights()]
    grown = recommender.add_items(["kit-900"], ["steel kettle and teapot, kitchen"])
    assert len(grown.catalog) == len(recommender.catalog) + 1
    assert all(np.array_equal(a, b) for a, b in zip(before, grown.model.get_weights()))
    # The new kitchen item ranks well above the middle for kitchen lovers.
    kitchen_users = [u for u, topics in shop.user_topics.items() if topics == ["kitchen"]][:10]
    ids, _ = grown.recommend(kitchen_users, [[]] * len(kitchen_users), k=len(grown.catalog) // 2)
    assert np.mean([("kit-900" in row) for row in ids]) >= 0.8
    with pytest.raises(DataError, match="already in the catalogue: \\['kit-001'\\]"):
        recommender.add_items(["kit-001"], ["a kettle"])


def test_both_clients_query_the_retrieval_model(shop_run):
    shop, result = shop_run
    request = {"user_id": ["u0003", "u0100"], "recent_item_ids": [["kit-002", "gar-001"], ["off-004", ""]]}
    expected_ids, expected_scores = result.task.recommender().recommend(request["user_id"], request["recent_item_ids"], k=20)
    with LocalServer(result.export_path.parent.parent, grpc_port=0, rest_port=0) as server:
        for client in (GrpcClient(f"127.0.0.1:{server.grpc_port}", "retrieval"),
                       RestClient(f"127.0.0.1:{server.rest_port}", "retrieval")):
            outputs = client.predict(request)
            assert outputs["item_ids"].tolist() == expected_ids.tolist()
            np.testing.assert_allclose(outputs["scores"].astype(float), expected_scores, rtol=1e-4, atol=1e-6)


def test_saved_model_cli_runs_the_retrieval_export_in_a_session(shop_run, tmp_path):
    # saved_model_cli loads the SavedModel into a TF1 session (lookup tables
    # initialised by the loader), as TF Serving does.
    shop, result = shop_run
    expected_ids, expected_scores = result.task.recommender().recommend(["u0005"], [["kit-003", "cam-010"]], k=20)
    for signature, inputs in (("serving_default", "user_id=['u0005'];recent_item_ids=[['kit-003','cam-010']]"),
                              ("embed_items", "text=['steel kettle and whisk, kitchen']")):
        ran = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(result.export_path), "--tag_set", "serve",
                              "--signature_def", signature, "--input_exprs", inputs, "--outdir", str(tmp_path)],
                             capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr[-2000:]
    assert np.load(tmp_path / "item_ids.npy", allow_pickle=True).astype(str).tolist() == expected_ids.tolist()
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "embeddings.npy"),
                               result.task.recommender().embed_texts(["steel kettle and whisk, kitchen"]), atol=1e-5)


def test_bad_cut_offs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`ks` must be .* received '10,fifty'"):
        run(build_config(RecommendationConfig, interactions="x.csv", items="y.csv", backbone="z", output_dir=str(tmp_path),
                                 ks="10,fifty"))


def test_movielens_folder_converts_and_bad_lines_are_named(tmp_path):
    from tl_keras.data.movielens import convert_movielens

    folder = tmp_path / "ml-100k"
    folder.mkdir()
    flags = "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"
    (folder / "u.item").write_bytes(f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n"
                                    f"2|Cit\xe9 des enfants perdus, La (1995)|01-Jan-1995||http://y|"
                                    f"0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n".encode("latin-1"))
    (folder / "u.data").write_text("1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    with pytest.raises(DataError, match=r"u.data: 48 bytes, but the official release's is 1979173"):
        convert_movielens(folder, tmp_path / "out")
    items, interactions, users = convert_movielens(folder, tmp_path / "out", check_sizes=False)
    catalog = read_items(items)
    assert catalog.texts == ["Toy Story (1995). Animation, Children's, Comedy",
                             "Cité des enfants perdus, La (1995). Drama"]
    read, people = read_interactions(interactions, catalog, read_users(users))
    assert len(read) == 3 and people.feature_names == ["gender", "occupation", "age_band"]
    assert people.feature_vocabularies[2] == ["18-24", "50-55"]
    (folder / "u.data").write_text("1\t1\t5\t874965758\n1\t9\tfive\t876893171\n")
    with pytest.raises(DataError, match=r"u.data:2: rating must be a whole number, received .five."):
        convert_movielens(folder, tmp_path / "out", check_sizes=False)


def test_a_catalogue_embedded_on_beam_serves_the_in_process_top_k(shop_run, tmp_path):
    from tl_keras.data.item_index import read_item_index
    from tl_keras.export.retrieval import export_recommender
    from tl_keras.pipelines.catalogue_index import embed_catalogue

    shop, result = shop_run
    result.task.export(str(tmp_path / "exports"), "shop", k=20)
    new_ids = [f"new-{i:03d}" for i in range(30)]
    topics = sorted(TOPICS)
    new_texts = [f"{ADJECTIVES[i % len(ADJECTIVES)]} {TOPICS[topics[i % len(topics)]][i % 3]}, {topics[i % len(topics)]}"
                 for i in range(30)]
    (tmp_path / "items-0.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n"
                                                    for i, t in zip(new_ids[:20], new_texts[:20])) + '{"id": "x"}\n')
    (tmp_path / "items-1.csv").write_text("id,text\n" + "".join(f"{i},\"{t}\"\n"
                                                               for i, t in zip(new_ids[20:], new_texts[20:])))
    embedded = embed_catalogue(tmp_path / "exports" / "shop", str(tmp_path / "items-*"), tmp_path / "index",
                               batch_size=8)
    assert (embedded.predicted, embedded.dead_letters, embedded.version) == (30, 1, 1)
    assert embedded.output == str(tmp_path / "index" / "1")
    item_ids, vectors = read_item_index(tmp_path / "index")
    assert sorted(item_ids) == new_ids and vectors.shape == (30, result.task.recommender().item_matrix.shape[1])
    assert json.loads((tmp_path / "index" / "1" / "index.json").read_text())["dead_letters"] == 1

    local = result.task.add_items(new_ids, new_texts)
    order = [new_ids.index(item_id) for item_id in item_ids]
    np.testing.assert_allclose(vectors, local.item_matrix[-30:][order], atol=1e-5)
    users = ["u0001", "u0007", "u0042", "someone-new"]
    recent = [["kit-001", "", ""], ["gar-002", "pet-003", ""], ["", "", ""], ["cam-001", "", ""]]
    expected_ids, expected_scores = local.recommend(users, recent, k=20)
    path = export_recommender(result.task.add_item_index(tmp_path / "index"), str(tmp_path / "exports"), "shop", k=20)
    assert path.name == "2"  # The next version of the same model.
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        user_id=tf.constant(users), recent_item_ids=tf.constant(recent))
    assert served["item_ids"].numpy().astype(str).tolist() == expected_ids.tolist()
    assert any(item_id.startswith("new-") for row in expected_ids.tolist() for item_id in row)
    np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-5, atol=1e-5)
    again = embed_catalogue(tmp_path / "exports" / "shop", str(tmp_path / "items-1.csv"), tmp_path / "index")
    assert again.output == str(tmp_path / "index" / "2") and again.version == 2  # Embedded by export version 2.
    assert [p.name for p in sorted((tmp_path / "index").iterdir())] == ["1", "2"]  # No staging folder left.
    copied = tmp_path / "index" / "2"  # Its shards written twice: an id twice in one index.
    for shard in list(copied.glob("items-*.tfrecord")):
        (copied / shard.name.replace("items-", "items-copy-")).write_bytes(shard.read_bytes())
    (copied / "index.json").write_text(json.dumps({**json.loads((copied / "index.json").read_text()), "items": 20}))
    with pytest.raises(ValueError, match="item id 'new-0[0-9]{2}' is in the index more than once"):
        read_item_index(tmp_path / "index")


def test_embed_catalogue_command_writes_the_index_and_the_next_export(shop_run, tmp_path, capsys):
    from tl_keras.cli.main import main as cli

    shop, result = shop_run
    result.task.save_to_preset(str(tmp_path / "preset"))
    result.task.export(str(tmp_path / "exports"), "shop", k=5)
    (tmp_path / "new.jsonl").write_text(json.dumps({"sku": "new-1", "title": "steel kettle and teapot, kitchen"})
                                        + "\n" + json.dumps({"sku": "new-2", "title": 7}) + "\n")
    assert cli(["embed-catalogue", "--model", str(tmp_path / "exports" / "shop"), "--input",
                str(tmp_path / "new.jsonl"), "--output", str(tmp_path / "index"), "--fields", "text=title",
                "--id-field", "sku", "--preset", str(tmp_path / "preset"), "--export-dir",
                str(tmp_path / "exports"), "--top-k", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["items"], summary["dead_letters"], summary["index"]) == (1, 1, str(tmp_path / "index" / "1"))
    assert summary["export"] == str(tmp_path / "exports" / "shop" / "2")
    served = tf.saved_model.load(summary["export"]).signatures["serving_default"](
        user_id=tf.constant(["u0001"]), recent_item_ids=tf.constant([["new-1"]]))  # The new item is known to it.
    assert "new-1" not in served["item_ids"].numpy().astype(str)[0].tolist()
    assert cli(["embed-catalogue", "--model", str(tmp_path / "exports" / "shop"), "--input",
                str(tmp_path / "new.jsonl"), "--output", str(tmp_path / "index"), "--preset", "p"]) == 2
    assert "--preset and --export-dir go together" in capsys.readouterr().err


def test_a_failure_after_the_two_tower_model_trained_keeps_its_weights(tmp_path, shop_preset, monkeypatch):
    shop = make_synthetic_shop(seed=1)
    items, interactions, users = shop.write(tmp_path / "data")
    config = build_config(RecommendationConfig,
        interactions=str(interactions), items=str(items), users=str(users), backbone=str(shop_preset),
        output_dir=str(tmp_path / "run"), sequence_length=16, verbose=0, epochs=2, item_id_embedding=False)

    def out_of_memory(method, *args, **kwargs):  # A baseline failing late, after the two towers trained.
        raise MemoryError(f"{method} needs more memory")

    monkeypatch.setattr("tl_keras.workflows.recommendation.score_baseline", out_of_memory)
    kept = tmp_path / "run" / "model.weights.h5"
    with pytest.raises(TrainedModelKept, match=rf"^scoring the methods failed \(ease needs more memory\); "
                                               rf"the trained weights are kept in {kept}"):
        run(config)
    assert kept.stat().st_size > 0
