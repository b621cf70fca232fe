"""Explanations that are right on a clear case, and smaller models to serve:
distilled students and int8 exports."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tl_keras
from conftest import separable_sentences
from tl_keras.evaluation.explanations import integrated_gradients, most_confident_errors, write_explanations
from tl_keras.transfer.distillation import DistillationLoss, distillation_targets, soft_targets, student_block_indices


@pytest.fixture(scope="module")
def sentiment_classifier(tiny_bert_preset):
    texts, labels = separable_sentences(160, seed=1)
    classifier = tl_keras.TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="full",
                                                     sequence_length=32, pooling="mean")
    classifier.fit(texts, labels, epochs=4, batch_size=8, verbose=0, head_learning_rate=1e-2,
                   backbone_learning_rate=1e-3)
    return classifier


@pytest.mark.parametrize("text, planted", [("the phone great the case is", "great"),
                                           ("this battery was awful it", "awful"),
                                           ("the case hate very", "hate")])
def test_the_planted_sentiment_word_gets_the_largest_attribution(sentiment_classifier, text, planted):
    (explanation,) = sentiment_classifier.explain([text])
    assert explanation.tokens[int(np.argmax(np.abs(explanation.attributions)))] == planted
    assert explanation.attributions[0] == 0.0 and explanation.tokens[0] == "[CLS]"  # Kept in the baseline.
    # Completeness: the attributions add up to f(x) - f(baseline).
    assert explanation.completeness_gap < 0.01
    assert explanation.attributions.sum() == pytest.approx(
        explanation.probability - explanation.baseline_probability, abs=0.01)


def test_integrated_gradients_of_a_linear_function_are_exact():
    weights = np.array([1.0, -2.0, 0.5], np.float32)

    def function(x):
        return tf.stack([tf.reduce_sum(x * weights, axis=-1)], axis=1)

    attributions, f_x, f_base = integrated_gradients(function, np.array([1.0, 1.0, 2.0]), np.zeros(3), 0, steps=4)
    np.testing.assert_allclose(attributions, [1.0, -2.0, 1.0], atol=1e-6)
    assert (f_x, f_base) == (pytest.approx(0.0), 0.0)


def test_explanations_render_for_people(sentiment_classifier, tmp_path):
    explanations = sentiment_classifier.explain(["the phone great", "awful case"])
    paths = write_explanations(explanations, tmp_path, captions=["one", "two"])
    page = paths[0].read_text()
    assert "great" in page and "background: rgba(0,150,60" in page and "one ·" in page
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 3000 for p in paths[1:])
    assert most_confident_errors(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [1, 1, 1]) == [0, 2]


def test_image_explanations_complete_and_render(tmp_path):
    from image_data import tiny_efficientnet_preset
    from tl_keras.data.images import read_labelled_images
    from tl_keras.data.sample_images import write_sample_images

    rows = read_labelled_images(write_sample_images(tmp_path / "photos", per_class=4))
    classifier = tl_keras.ImageClassifier.from_preset(tiny_efficientnet_preset(tmp_path / "preset"),
                                                      labels=sorted(set(rows.labels)), image_size=32)
    classifier.fit(rows.texts, rows.labels, epochs=2, batch_size=6, verbose=0)
    (explanation,) = classifier.explain(rows.texts[:1], steps=32)
    assert explanation.attributions.shape == (32, 32) and explanation.completeness_gap < 0.02
    assert write_explanations([explanation], tmp_path / "out")[1].stat().st_size > 3000


def test_student_takes_evenly_spaced_blocks_and_learns_the_teacher(sentiment_classifier, tmp_path):
    assert student_block_indices(6, 3) == [1, 3, 5] and student_block_indices(6, 2) == [2, 5]
    assert student_block_indices(2, 1) == [1]
    with pytest.raises(ValueError, match="between 1 and 6 blocks, received 7"):
        student_block_indices(6, 7)
    texts, labels = separable_sentences(160, seed=1)
    student = sentiment_classifier.distill(texts, labels, num_blocks=1, epochs=3)
    teacher_blocks, student_blocks = (c.backbone.transformer_layers for c in (sentiment_classifier, student))
    assert len(student_blocks) == 1 and len(teacher_blocks) == 2
    test_texts, test_labels = separable_sentences(64, seed=9)
    teacher_accuracy = sentiment_classifier.evaluate_report(test_texts, test_labels)["accuracy"]
    assert student.evaluate_report(test_texts, test_labels)["accuracy"] >= teacher_accuracy - 0.1
    student.save_to_preset(tmp_path / "student")
    assert len(tl_keras.TextClassifier.from_preset(tmp_path / "student").backbone.transformer_layers) == 1


def test_distillation_loss_is_zero_when_the_student_matches_and_grows_otherwise():
    teacher = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    targets = distillation_targets(soft_targets(teacher, 2.0), np.array([0, -1]))
    assert targets.shape == (2, 5) and targets[1, 4] == 0.0  # The second row is unlabelled.
    loss = DistillationLoss(temperature=2.0, hard_weight=0.0)
    assert float(loss(targets, teacher)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(targets, teacher[:, ::-1].copy())) > 0.1


def test_int8_export_keeps_the_signatures_and_the_answers(sentiment_classifier, tmp_path):
    texts, _ = separable_sentences(32, seed=7)
    path = sentiment_classifier.export(tmp_path, "reviews_int8", quantize="int8")
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "serve_tokens"}
    assert any(v.dtype == tf.int8 for v in loaded.layer_variables)
    probabilities = loaded.signatures["serving_default"](text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, sentiment_classifier.predict(texts), atol=0.05)
    assert json.loads((path / "model_card.json").read_text())["quantization"] == "int8"
    half = tf.saved_model.load(str(sentiment_classifier.export(tmp_path, "reviews_fp16", quantize="float16")))
    assert any(v.dtype == tf.float16 for v in half.layer_variables)
    np.testing.assert_allclose(half.signatures["serving_default"](text=tf.constant(texts))["probabilities"].numpy(),
                               sentiment_classifier.predict(texts), atol=0.01)
    with pytest.raises(ValueError, match="`quantize` must be None, 'int8' or 'float16', received 'int3'"):
        sentiment_classifier.export(tmp_path, "bad", quantize="int3")


def test_distill_and_explain_commands(sentiment_classifier, tmp_path):
    texts, labels = separable_sentences(80, seed=2)
    (tmp_path / "train.tsv").write_text("".join(f"{t}\t{l}\n" for t, l in zip(texts, labels)))
    sentiment_classifier.save_to_preset(tmp_path / "teacher")
    command = [sys.executable, "-m", "tl_keras.cli.main"]
    result = subprocess.run([*command, "distill", "--teacher", str(tmp_path / "teacher"), "--train",
                             str(tmp_path / "train.tsv"), "--num-blocks", "1", "--epochs", "2", "--verbose", "0",
                             "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"),
                             "--quantize", "int8"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["blocks"] == {"teacher": 2, "student": 1} and metrics["student"]["split"] == "test"
    assert (tmp_path / "exports" / "student" / "1" / "saved_model.pb").is_file()
    result = subprocess.run([*command, "explain", "--preset", str(tmp_path / "teacher"), "--output",
                             str(tmp_path / "why"), "the phone great"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["top_tokens"][0][0] == "great" and (tmp_path / "why" / "explanations.html").is_file()


def test_pictures_show_words_and_name_the_true_label(tmp_path):
    from tl_keras.evaluation.explanations import Explanation, word_attributions, write_explanations

    text = Explanation("neg", 0.9, 0.5, np.array([0.0, -0.1, 0.25, 0.05, 0.2, 0.0]),
                       tokens=["[CLS]", "a", "cum", "##bers", "##ome", "[SEP]"])
    words, values = word_attributions(text)
    assert words == ["a", "cumbersome"] and np.allclose(values, [-0.1, 0.5])
    image = Explanation("milk", 0.4, 0.1, np.random.default_rng(0).normal(size=(16, 16)),
                        image=np.zeros((16, 16, 3), np.uint8))
    paths = write_explanations([text, image], tmp_path, captions=["true pos, predicted neg", "true oat, predicted milk"])
    page = paths[0].read_text()
    assert "cumbersome" in page and "##" not in page and "true pos, predicted neg" in page
    assert all(path.stat().st_size > 5000 for path in paths[1:])  # Rendered pictures, not empty files.
