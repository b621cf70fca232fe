"""The SavedModel contract TF Serving relies on, checked on the files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAVED_MODEL_CLI, tiny_bert
from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.data.texts import LabelVocabulary
from tl_keras.export.saved_model import WARMUP_FILE, next_version
from tl_keras.export.text import export_text_model
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.transfer.strategies import backbone_of

TEXTS = ["good phone", "the battery was very bad and the case is broken and it is awful", "great", "sad"]
def _tiny_classifier(task="classification", labels=("neg", "pos")):
    backbone, preprocessor = tiny_bert(seed=7)
    vocab = LabelVocabulary(task, tuple(labels) if task != "regression" else ())
    model = build_text_model(build_encoder(backbone, "mean"), build_head(32, vocab.num_outputs, task), task)
    return model, preprocessor, vocab


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, preprocessor, vocab = _tiny_classifier()
    base = tmp_path_factory.mktemp("exports")
    path = export_text_model(model, preprocessor, vocab, base, "reviews", warmup_texts=TEXTS[:2],
                             card={"strategy": "frozen"})
    return model, preprocessor, vocab, base, path


def _stored_values(path):
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    return sum(int(np.prod(shape)) for shape in reader.get_variable_to_shape_map().values())


def test_layout_and_versions(exported, tmp_path):
    model, preprocessor, vocab, base, path = exported
    assert path == base / "reviews" / "1"
    assert {"saved_model.pb", "variables", "assets.extra", "model_card.json"} <= set(os.listdir(path))
    assert not [p for p in os.listdir(base / "reviews") if p.startswith(".tmp")]
    assert next_version(base / "reviews") == 2
    with pytest.raises(FileExistsError, match="reviews/1 already exists"):
        export_text_model(model, preprocessor, vocab, base, "reviews", version=1)
    with pytest.raises(ValueError, match=r"received '../up'"):
        export_text_model(model, preprocessor, vocab, base, "../up")
    second = export_text_model(model, preprocessor, vocab, tmp_path, "reviews", version=7)
    assert second.name == "7" and next_version(tmp_path / "reviews") == 8


def test_reloaded_model_answers_raw_text_like_keras(exported):
    model, preprocessor, vocab, _, path = exported
    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    expected = model.predict(dict(preprocessor(tf.constant(TEXTS))), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["label_id"].numpy(), expected.argmax(axis=1))
    assert outputs["label_id"].dtype == tf.int64
    assert [l.decode() for l in outputs["label"].numpy()] == [vocab.names[i] for i in expected.argmax(axis=1)]
    tokens = {k: tf.cast(v, tf.int32) for k, v in preprocessor(tf.constant(TEXTS)).items()}
    by_tokens = loaded.signatures["serve_tokens"](**tokens)
    np.testing.assert_allclose(by_tokens["probabilities"].numpy(), expected, atol=1e-5)


def test_serve_tokens_refuses_what_the_backbone_cannot_look_up(exported):
    model, preprocessor, vocab, _, path = exported
    serve = tf.saved_model.load(str(path)).signatures["serve_tokens"]
    good = {k: tf.cast(v, tf.int32).numpy() for k, v in preprocessor(tf.constant(TEXTS[:1])).items()}
    size = backbone_of(model).vocabulary_size
    cases = [("token_ids", lambda t: t.__setitem__((0, 1), size), f"token_ids must be < {size}"),
             ("token_ids", lambda t: t.__setitem__((0, 1), -1), "token_ids must be >= 0"),
             ("padding_mask", lambda t: t.__setitem__((0, 1), 2), "padding_mask must be < 2"),
             ("segment_ids", lambda t: t.__setitem__((0, 1), 7), "segment_ids must be <")]
    for name, spoil, message in cases:
        tokens = {k: v.copy() for k, v in good.items()}
        spoil(tokens[name])
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(**{k: tf.constant(v) for k, v in tokens.items()})
    long = {k: np.zeros((1, 600), np.int32) for k in good}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"more positions than the backbone has \(64\)"):
        serve(**{k: tf.constant(v) for k, v in long.items()})
    assert serve(**{k: tf.constant(v) for k, v in good.items()})["probabilities"].shape == (1, vocab.num_outputs)


def test_trimmed_graph_equals_untrimmed_graph(exported, tmp_path):
    model, preprocessor, vocab, _, path = exported
    untrimmed = export_text_model(model, preprocessor, vocab, tmp_path, "reviews", trim=False)
    batches = [TEXTS, TEXTS[:1], [TEXTS[1]], ["word " * 40]]
    trimmed_fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    untrimmed_fn = tf.saved_model.load(str(untrimmed)).signatures["serving_default"]
    for batch in batches:
        np.testing.assert_allclose(
            trimmed_fn(text=tf.constant(batch))["probabilities"].numpy(),
            untrimmed_fn(text=tf.constant(batch))["probabilities"].numpy(),
            atol=1e-5,
        )


def test_variables_are_stored_once(exported):
    model, _, _, _, path = exported
    assert _stored_values(path) <= 1.1 * model.count_params()


def test_model_card_and_warmup_requests(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, _, vocab, _, path = exported
    card = json.loads((path / "model_card.json").read_text())
    assert card["labels"] == ["neg", "pos"] and card["strategy"] == "frozen"
    assert card["tensorflow_version"] == tf.__version__ and card["tensorflow_text_version"]
    assert card["signatures"]["serving_default"]["inputs"] == {"text": {"dtype": "string", "shape": [-1]}}
    assert card["signatures"]["serving_default"]["outputs"]["label_id"] == {"dtype": "int64", "shape": [-1]}
    assert set(card["signatures"]["serve_tokens"]["inputs"]) == {"token_ids", "segment_ids", "padding_mask"}
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path / "assets.extra" / WARMUP_FILE))]
    assert len(logs) == 2
    request = logs[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["text"]).tolist() == [TEXTS[0].encode()]


def test_saved_model_cli_reads_the_signature_and_runs_it(exported):
    _, _, _, _, path = exported
    shown = subprocess.run([*SAVED_MODEL_CLI, "show", "--dir", str(path), "--all"],
                           capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['serve_tokens']" in shown
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in shown
    ran = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(path), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--input_exprs", 'text=["good phone", "sad"]'],
                         capture_output=True, text=True, check=True).stdout
    assert "Result for output key label:" in ran and "Result for output key probabilities:" in ran


def test_multilabel_and_regression_outputs(tmp_path):
    texts = tf.constant(TEXTS[:2])
    model, preprocessor, vocab = _tiny_classifier("multilabel", ("battery", "screen"))
    path = export_text_model(model, preprocessor, vocab, tmp_path, "tags")
    outputs = tf.saved_model.load(str(path)).signatures["serving_default"](text=texts)
    probabilities = outputs["probabilities"].numpy()
    expected = [",".join(n for n, p in zip(vocab.names, row) if p >= 0.5) for row in probabilities]
    assert [l.decode() for l in outputs["label"].numpy()] == expected
    model, preprocessor, vocab = _tiny_classifier("regression")
    path = export_text_model(model, preprocessor, vocab, tmp_path, "stars")
    outputs = tf.saved_model.load(str(path)).signatures["serving_default"](text=texts)
    expected = model.predict(dict(preprocessor(texts)), verbose=0)[:, 0]
    np.testing.assert_allclose(outputs["prediction"].numpy(), expected, atol=1e-5)


def test_minilm_export_stores_parameters_once(tmp_path):
    backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), sequence_length=64)
    vocab = LabelVocabulary.from_labels(["0", "1"])
    model = build_text_model(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))
    path = export_text_model(model, preprocessor, vocab, tmp_path, "minilm")
    stored = _stored_values(path)
    assert model.count_params() == 22_713_986
    assert stored <= 1.1 * model.count_params()
    size = sum(f.stat().st_size for f in (path / "variables").iterdir())
    assert size <= 1.1 * 4 * model.count_params()


KILL_SCRIPT = """
import sys, tl_keras
from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.data.texts import LabelVocabulary
from tl_keras.export.text import export_text_model
from tl_keras.models.heads import build_encoder, build_head, build_text_model
backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), sequence_length=64)
model = build_text_model(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))
print("exporting", flush=True)
export_text_model(model, preprocessor, LabelVocabulary.from_labels(["0", "1"]), sys.argv[1], "killed")
"""


def test_killed_export_leaves_no_version_folder(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    model_dir = tmp_path / "killed"
    try:
        assert process.stdout.readline().strip() == "exporting"
        deadline = time.monotonic() + 120
        while not (model_dir.exists() and any(p.name.startswith(".tmp") for p in model_dir.iterdir())):
            assert time.monotonic() < deadline and process.poll() is None, "the export never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not [p for p in model_dir.iterdir() if p.name.isdigit()]
    assert next_version(model_dir) == 1
