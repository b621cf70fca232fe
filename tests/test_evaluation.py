import json

import numpy as np
import pytest

from tl_keras.data.texts import LabelVocabulary
from tl_keras.evaluation.classification import evaluate_predictions, summary_line, write_report


def test_classification_metrics_by_hand():
    vocab = LabelVocabulary.from_labels(["a", "b", "c"])
    targets = np.array([0, 0, 1, 1, 2, 2])
    outputs = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    metrics = evaluate_predictions(outputs, targets, vocab)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"]["rows_true_columns_predicted"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # Precision a=1/2, b=2/3, c=1; recall a=1/2, b=1, c=1/2.
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [0.5, 0.8, 2 / 3]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert "accuracy=0.6667" in summary_line(metrics)


def test_multilabel_and_regression_metrics():
    vocab = LabelVocabulary.from_labels(["x,y", "y"], task="multilabel")
    metrics = evaluate_predictions(np.array([[0.9, 0.8], [0.2, 0.4]]), np.array([[1, 1], [0, 1]]), vocab)
    assert metrics["exact_match_accuracy"] == 0.5
    assert metrics["micro_f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    regression = LabelVocabulary("regression", ())
    metrics = evaluate_predictions(np.array([[1.0], [3.0]]), np.array([2.0, 3.0]), regression)
    assert metrics["mse"] == pytest.approx(0.5) and metrics["mae"] == pytest.approx(0.5)
    assert metrics["r2"] == pytest.approx(1 - 0.5 / 0.25)


def test_report_writes_json_and_real_pngs(tmp_path):
    vocab = LabelVocabulary.from_labels(["neg", "pos"])
    metrics = evaluate_predictions(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 0]), vocab)
    history = {"loss": [0.7, 0.5, 0.4], "val_loss": [0.6, 0.5, 0.45], "accuracy": [0.5, 0.7, 0.8],
               "val_accuracy": [0.5, 0.6, 0.7], "phase": ["head", "full", "full"]}
    paths = write_report(metrics, history, tmp_path)
    assert [p.name for p in paths] == ["metrics.json", "confusion_matrix.png", "learning_curve.png"]
    assert json.loads(paths[0].read_text())["metrics"]["accuracy"] == 0.5
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_answer_scores_take_the_best_gold_and_refuse_unpaired_rows():
    from tl_keras.evaluation.squad import answer_scores

    scores = answer_scores(["Denver Broncos", "the Broncos", "", "Carolina"],
                           [["Denver Broncos", "Broncos"], "Denver Broncos", [], "Panthers"])
    # Exact: rows 1 and 3 ("" is right where nothing is); F1: 1, 2/3 (broncos of denver broncos), 1, 0.
    assert scores["examples"] == 4 and scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    with pytest.raises(ValueError, match=r"2 predictions for 1 gold answers"):
        answer_scores(["a", "b"], ["a"])
