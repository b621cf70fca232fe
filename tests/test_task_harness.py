"""The shared task harness (as KerasHub's `run_task_test` and
`run_preset_test`): every task, on tiny backbones built from config, is fit
on raw inputs, saved as a preset and restored with identical outputs,
exported and run in a TF1 session as TF Serving loads it (outputs within
1e-5 of in-process ones, rankings identical), and refuses what it cannot
apply. A new task is added here as one more `TaskCase`."""

import dataclasses
import pathlib
import typing

import keras
import numpy as np
import pytest
import tensorflow as tf

import tl_keras
from conftest import separable_sentences
from tl_keras.data.catalogue import CatalogueEntry
from tl_keras.data.interactions import read_interactions, read_items, read_users, time_ordered_split
from tl_keras.data.squad import Question
from tl_keras.data.synthetic_shop import make_synthetic_shop


def run_in_session(export, signature, feeds):
    """Runs a signature of a SavedModel in a TF1 session, as TF Serving's
    session bundle does (the graph, its init ops and lookup tables)."""
    import tensorflow_text  # noqa: F401  (TF Serving links the TF Text ops)

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export))
        definition = meta_graph.signature_def[signature]
        fetches = {name: info.name for name, info in definition.outputs.items()}
        return session.run(fetches, {definition.inputs[name].name: value for name, value in feeds.items()})


@dataclasses.dataclass
class TaskCase:
    """One task for the harness.

    Args:
        name: the case's id.
        build: `(folder) -> (task, train_x, train_y)`: a tiny task and its
            training data (`train_y` `None` when `x` holds the labels).
        fit: `(task, x, y) -> History`.
        outputs: `(task, inputs) -> {name: array}`: what the task returns
            in process for `inputs`.
        served: `(export, inputs) -> {name: array}`: the same from the
            SavedModel in a TF1 session.
        inputs: `(folder) -> raw inputs` to compare on.
        export: `(task, folder) -> version folder`.
        exact: output names that must be equal, not just close (labels,
            ranked ids).
        new_head: `from_preset` settings that give a new head, and the check
            of the result, or `None`.
        refused: `from_preset` settings a restored task refuses, or `None`.
        keras_file: `save("x.keras")` and `keras.models.load_model` round-trip.
    """

    name: str
    build: typing.Callable
    fit: typing.Callable
    outputs: typing.Callable
    served: typing.Callable
    inputs: typing.Callable
    export: typing.Callable
    exact: tuple = ()
    new_head: tuple = None
    refused: dict = None
    keras_file: bool = True


def _texts(folder):
    return separable_sentences(8, seed=11)[0]


def _text_task(folder):
    texts, labels = separable_sentences(32, seed=12)
    task = tl_keras.TextClassifier.from_preset(folder.parent / "tiny_bert", labels=["neg", "pos"],
                                               strategy="partial:1", sequence_length=32, pooling="mean")
    return task, texts, labels


def _decoder_text_task(folder):
    # A tiny Llama written as a GGUF file and converted: the decoder path of
    # the same TextClassifier contract (last-token pooling, LoRA).
    from decoder_data import random_weights, write_gguf
    from tl_keras.models.gguf import convert_gguf

    preset = convert_gguf(write_gguf(folder / "tiny.gguf", random_weights(seed=8), "Q8_0"), folder / "tiny_llama")
    texts, labels = separable_sentences(32, seed=12)
    task = tl_keras.TextClassifier.from_preset(preset, labels=["neg", "pos"], strategy="partial:1", sequence_length=32)
    assert task.pooling == "last"
    return task, texts, labels


def _classifier_outputs(task, inputs):
    probabilities = task.predict(inputs)
    return {"probabilities": probabilities, "label": np.asarray(task.predict_labels(inputs), object)}


def _decoded(outputs):
    return {name: np.vectorize(bytes.decode, otypes=[object])(value) if value.dtype == object else value
            for name, value in outputs.items()}


def _png_photos(count, seed):
    rng = np.random.default_rng(seed)
    return [tf.io.encode_png(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).numpy() for _ in range(count)]


def _image_task(folder):
    from image_data import tiny_efficientnet_preset

    task = tl_keras.ImageClassifier.from_preset(tiny_efficientnet_preset(folder / "image_preset"),
                                                labels=["bag", "can", "shoe"], image_size=32, strategy="partial:1")
    return task, _png_photos(12, seed=1), ["bag", "can", "shoe"] * 4


def _questions(count, seed):
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "tall", "small", "box", "cup", "lamp"]
    questions = []
    for number in range(count):
        context_words = [str(w) for w in rng.choice(words, 10)]
        answer = context_words[3]
        start = len(" ".join(context_words[:3])) + 1
        questions.append(Question(f"{seed}-{number}", "t", "which", " ".join(context_words), ((answer, start),)))
    return questions


def _qa_task(folder):
    task = tl_keras.QuestionAnswerer.from_preset(folder.parent / "tiny_bert", strategy="partial:1",
                                                 sequence_length=24, doc_stride=8, max_question_length=4,
                                                 max_answer_length=3)
    return task, _questions(32, seed=3), None


def _qa_outputs(task, inputs):
    questions, contexts = inputs
    answers = task.predict(questions, contexts)
    return {"answer": np.asarray([a["answer"] for a in answers], object),
            "score": np.asarray([a["score"] for a in answers], np.float32),
            "start": np.asarray([a["start"] for a in answers])}


def _qa_inputs(folder):
    questions = _questions(6, seed=4)
    return [q.question for q in questions], [q.context for q in questions]


def _shop(folder):
    items, interactions, users = make_synthetic_shop(seed=5, num_users=40, items_per_topic=6).write(folder / "shop")
    catalog = read_items(items)
    interactions, users = read_interactions(interactions, catalog, read_users(users))
    return catalog, users, time_ordered_split(interactions, 2)


def _retrieval_task(folder):
    catalog, users, split = _shop(folder)
    task = tl_keras.Retrieval.from_preset(folder.parent / "tiny_bert", catalog, users, sequence_length=16,
                                          embedding_dim=16)
    return task, split.train, None


def _retrieval_fit(task, x, y):
    history = task.fit(x, epochs=1, batch_size=32, verbose=0)
    # Distinct recency weights, so a history packed otherwise would score otherwise.
    task.user_tower.recency_logits.assign(
        np.random.default_rng(0).normal(0.0, 2.0, task.user_tower.recency_logits.shape).astype("float32"))
    task._recommender = None
    return history


def _retrieval_inputs(folder):
    catalog, users, _ = _shop(folder)
    ids = list(catalog.item_ids)
    return (["u0001", "u0005", "u0017", "someone-new"],
            [[ids[0], "", ids[3]], [ids[7], "", ""], [ids[1], ids[2], ids[4]], [ids[9], "", ""]])


def _retrieval_outputs(task, inputs):
    item_ids, scores = task.recommend(*inputs, k=10)
    return {"item_ids": np.asarray(item_ids, object), "scores": scores.astype(np.float32)}


def _catalogue_entries(folder):
    from tl_keras.data.sample_images import CLASS_NAMES, write_sample_images

    photos_folder = write_sample_images(folder / "photos", per_class=4, size=40, samples=tuple(CLASS_NAMES)[:4])
    photos = {name: sorted(str(p) for p in (photos_folder / name).iterdir()) for name in sorted(
        p.name for p in photos_folder.iterdir())}
    return photos, [CatalogueEntry(name, "shop", 0, files[0], f"the {name} product") for name, files in photos.items()]


def _catalogue_task(folder):
    from image_data import tiny_efficientnet_preset

    task = tl_keras.CatalogueRecognizer.from_preset(tiny_efficientnet_preset(folder / "image_preset"),
                                                    folder.parent / "tiny_bert", image_size=32, sequence_length=16,
                                                    projection_dim=8)
    photos, entries = _catalogue_entries(folder)
    train = [(path, entry.name) for entry in entries for path in photos[entry.name][1:]]
    return task, ([p for p, _ in train], entries), [label for _, label in train]


def _catalogue_inputs(folder):
    photos, _ = _catalogue_entries(folder)
    return [open(files[-1], "rb").read() for files in photos.values()]


def _catalogue_outputs(task, inputs):
    scores = task.predict(inputs)
    return {"product": np.asarray(task.predict_labels(inputs), object), "score": scores.max(axis=1)}


def _tagger_task(folder):
    from test_token_classification import tagged_titles

    titles, tags = tagged_titles(32, seed=7)
    task = tl_keras.TokenClassifier.from_preset(folder.parent / "tiny_bert", tags=sorted({t for row in tags for t in row}),
                                                strategy="partial:1", sequence_length=12)
    return task, titles, tags


def _tagger_outputs(task, inputs):
    tags, probabilities = task.predict_labels(inputs), task.predict(inputs)
    width = max(len(row) for row in tags)
    return {"tags": np.asarray([row + [""] * (width - len(row)) for row in tags], object),
            "scores": np.asarray([np.pad(p.max(axis=1), (0, width - len(p))) for p in probabilities], np.float32)}


def _new_tagger_head(task, restored):
    assert restored.vocabulary.names == ("B-x", "O") and restored.head.output.shape[-1] == 2
    for tuned, kept in zip(task.backbone.weights, restored.backbone.weights):
        np.testing.assert_array_equal(tuned.numpy(), kept.numpy())


def _new_classifier_head(task, restored):
    assert restored.vocabulary.names == ("a", "b", "c", "d") and restored.head.output.shape[-1] == 4
    for tuned, kept in zip(task.backbone.weights, restored.backbone.weights):
        np.testing.assert_array_equal(tuned.numpy(), kept.numpy())  # The fine-tuned backbone, a new head.


CASES = [
    TaskCase("text", _text_task, lambda t, x, y: t.fit(x, y, batch_size=8, epochs=1, verbose=0),
             _classifier_outputs, lambda path, x: _decoded(run_in_session(path, "serving_default",
                                                                          {"text": np.asarray(x, object)})),
             _texts, lambda t, folder: t.export(folder, "text", warmup=["fine"]), exact=("label",),
             new_head=({"labels": ["a", "b", "c", "d"]}, _new_classifier_head)),
    TaskCase("decoder_text", _decoder_text_task, lambda t, x, y: t.fit(x, y, batch_size=8, epochs=1, verbose=0),
             _classifier_outputs, lambda path, x: _decoded(run_in_session(path, "serving_default",
                                                                          {"text": np.asarray(x, object)})),
             _texts, lambda t, folder: t.export(folder, "text", warmup=["fine"]), exact=("label",),
             new_head=({"labels": ["a", "b", "c", "d"]}, _new_classifier_head)),
    TaskCase("image", _image_task, lambda t, x, y: t.fit(x, y, batch_size=6, epochs=1, verbose=0),
             _classifier_outputs, lambda path, x: _decoded(run_in_session(path, "serving_default",
                                                                          {"image_bytes": np.asarray(x, object)})),
             lambda folder: _png_photos(4, seed=2), lambda t, folder: t.export(folder, "image"), exact=("label",),
             new_head=({"labels": ["a", "b", "c", "d"]}, _new_classifier_head)),
    TaskCase("question_answering", _qa_task, lambda t, x, y: t.fit(x, batch_size=8, epochs=1, verbose=0),
             _qa_outputs, lambda path, x: _decoded(run_in_session(
                 path, "serving_default", {"question": np.asarray(x[0], object), "context": np.asarray(x[1], object)})),
             _qa_inputs, lambda t, folder: t.export(folder, "qa"), exact=("answer", "start")),
    TaskCase("retrieval", _retrieval_task, _retrieval_fit, _retrieval_outputs,
             lambda path, x: _decoded(run_in_session(path, "serving_default", {
                 "user_id": np.asarray(x[0], object), "recent_item_ids": np.asarray(x[1], object)})),
             _retrieval_inputs, lambda t, folder: t.export(folder, "retrieval", k=10), exact=("item_ids",),
             refused={"sequence_length": 64}, keras_file=False),
    TaskCase("catalogue", _catalogue_task, lambda t, x, y: t.fit(x[0], y, x[1], epochs=2),
             _catalogue_outputs, lambda path, x: _decoded(run_in_session(
                 path, "serving_default", {"image_bytes": np.asarray(x, object)})),
             _catalogue_inputs, lambda t, folder: t.export(folder, "catalogue", k=2), exact=("product",),
             refused={"image_weight": 0.5}, keras_file=False),
    TaskCase("token_classification", _tagger_task, lambda t, x, y: t.fit(x, y, batch_size=8, epochs=1, verbose=0),
             _tagger_outputs, lambda path, x: _decoded(run_in_session(path, "serving_default",
                                                                      {"text": np.asarray(x, object)})),
             # The third title is cut by the sequence length: its last words have no tag.
             lambda folder: ["good phone", "the battery was bad", "very good phone and the case is great and happy"],
             lambda t, folder: t.export(folder, "tags", warmup=["good phone"]), exact=("tags",),
             new_head=({"tags": ["B-x", "O"]}, _new_tagger_head)),
]


def _same_ranking(actual_ids, expected_ids, expected_scores, what):
    """Top-k ids the same, but items whose scores tie (within 1e-5) may
    swap places, and those tied with the k-th may be swapped for one
    another across the cut (float rounding differs between graphs)."""
    for row_ids, row_expected, row_scores in zip(actual_ids, expected_ids, expected_scores):
        clear = [i for i, score in enumerate(row_scores) if score > row_scores[-1] + 1e-5]
        assert sorted(row_ids[i] for i in clear) == sorted(row_expected[i] for i in clear), (what, "item_ids")
        for i, j in zip(clear, clear[1:]):  # Distinct scores keep their order.
            if row_scores[i] > row_scores[j] + 1e-5:
                assert list(row_ids).index(row_expected[i]) < list(row_ids).index(row_expected[j]), (what, i)


def _assert_same(actual, expected, exact, what):
    for name, value in expected.items():
        if name == "item_ids" and "scores" in expected:
            _same_ranking(np.asarray(actual[name]).tolist(), np.asarray(value).tolist(),
                          np.asarray(expected["scores"]).tolist(), what)
        elif name in exact:
            assert np.asarray(actual[name]).tolist() == np.asarray(value).tolist(), (what, name)
        else:
            np.testing.assert_allclose(np.asarray(actual[name], np.float32), np.asarray(value, np.float32),
                                       rtol=1e-5, atol=1e-5, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_task_fits_restores_and_serves_the_same(case, tiny_bert_preset, tmp_path):
    (tmp_path / "tiny_bert").symlink_to(pathlib.Path(tiny_bert_preset))
    folder = tmp_path / "case"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    task, x, y = case.build(folder)
    history = case.fit(task, x, y)
    assert isinstance(history, keras.callbacks.History) and history.history
    inputs = case.inputs(folder)
    expected = case.outputs(task, inputs)

    task.save_to_preset(folder / "preset")
    restored = type(task).from_preset(folder / "preset")
    _assert_same(case.outputs(restored, inputs), expected, case.exact, "restored from the preset")
    if case.new_head is not None:
        settings, check = case.new_head
        check(task, type(task).from_preset(folder / "preset", **settings))
    if case.refused is not None:
        name = next(iter(case.refused))
        with pytest.raises(ValueError, match=f"cannot apply {name}="):
            type(task).from_preset(folder / "preset", **case.refused)

    if case.keras_file:
        task.save(folder / "task.keras")
        _assert_same(case.outputs(keras.models.load_model(folder / "task.keras"), inputs), expected, case.exact,
                     "loaded from a .keras file")

    export = case.export(task, folder / "exports")
    served = case.served(export, inputs)
    _assert_same({name: served[name] for name in expected}, expected, case.exact, "served in a TF1 session")
