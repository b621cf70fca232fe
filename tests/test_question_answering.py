"""Extractive question answering: SQuAD reading and splitting, the metrics
and the lexical baseline by hand, windows with offsets, span decoding, a tiny
reader that learns a synthetic task, its preset, its SavedModel (in-graph
tokenisation and decoding, read by saved_model_cli, served by serve-local),
the workflow and its bad-input errors."""

import json
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import NEGATIVE, POSITIVE, FILLER, SAVED_MODEL_CLI, SEQUENCE_LENGTH, tiny_bert
from tl_keras.core.settings import build_config
from tl_keras.cli.main import main as cli
from tl_keras.data.spans import SpanTokenizer, span_targets
from tl_keras.data.squad import Question, read_squad, split_by_article
from tl_keras.data.texts import DataError
from tl_keras.evaluation.squad import exact_match, squad_scores, token_f1
from tl_keras.models.extractive_qa import decode_spans
from tl_keras.models.lexical_qa import LexicalAnswerer
from tl_keras.serving.clients import GrpcClient, RestClient
from tl_keras.serving.local_server import LocalServer
from tl_keras.tasks.question_answering import QuestionAnswerer
from tl_keras.training.config import TrainingConfig
from tl_keras.workflows.configs import QuestionAnsweringConfig
from tl_keras.workflows.question_answering import run

BUNDLED = "data/squad/squad_v1.1_12_articles.json"


def synthetic_questions(count, seed=0, articles=4):
    """Contexts of filler words holding one positive and one negative word;
    the question is "good" or "bad" and the answer is the word of that kind.
    Some contexts are longer than one window."""
    rng = np.random.default_rng(seed)
    questions = []
    for number in range(count):
        words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(6, 40)))]
        answers = {}
        for kind, pool in (("good", POSITIVE), ("bad", NEGATIVE)):
            word = str(rng.choice(pool))
            words.insert(int(rng.integers(0, len(words) + 1)), word)
            answers[kind] = word
        context = " ".join(words)
        kind = "good" if number % 2 == 0 else "bad"
        position = words.index(answers[kind])
        start = len(" ".join(words[:position])) + (position > 0)
        questions.append(Question(f"{seed}-{number}", f"article {number % articles}", kind, context,
                                  ((answers[kind], start),)))
    return questions


def squad_json(questions):
    articles = {}
    for q in questions:
        articles.setdefault(q.title, []).append(
            {"context": q.context, "qas": [{"id": q.id, "question": q.question,
                                            "answers": [{"text": t, "answer_start": s} for t, s in q.answers]}]})
    return {"version": "1.1", "data": [{"title": t, "paragraphs": p} for t, p in articles.items()]}


# --- Data ---------------------------------------------------------------------

def test_bundled_squad_reads_and_splits_by_article():
    questions = read_squad(BUNDLED)
    assert len(questions) == 4617 and len({q.title for q in questions}) == 12
    assert all(q.context[s:s + len(t)] == t for q in questions for t, s in q.answers)
    train, validation, test = split_by_article(questions, (0.75, 0.08, 0.17))
    titles = [{q.title for q in part} for part in (train, validation, test)]
    assert not (titles[0] & titles[1]) and not (titles[0] & titles[2]) and not (titles[1] & titles[2])
    assert len(train) + len(validation) + len(test) == len(questions)
    assert 0.1 < len(test) / len(questions) < 0.4 and validation


@pytest.mark.parametrize("edit, pattern", [
    (lambda qa, p: qa["answers"][0].update(answer_start=3), r"question 'q1'.*does not match the context at "
                                                             r"`answer_start` 3 \(the context has 'ver Broncos wo'"),
    (lambda qa, p: qa["answers"][0].update(answer_start=999), r"question 'q1'.*`answer_start` 999 is not an offset"),
    (lambda qa, p: p.update(context="   "), r"paragraph 1: `context` must be a non-empty string, received '   '"),
    (lambda qa, p: qa.update(question=""), r"question 'q1': `question` must be a non-empty string"),
    (lambda qa, p: qa.update(answers=[]), r"question 'q1': no answers, and `is_impossible` is not true"),
])
def test_bad_squad_records_are_named(tmp_path, edit, pattern):
    document = {"data": [{"title": "Broncos", "paragraphs": [{"context": "Denver Broncos won Super Bowl 50.",
                                                              "qas": [{"id": "q1", "question": "Who won?",
                                                                       "answers": [{"text": "Denver Broncos",
                                                                                    "answer_start": 0}]}]}]}]}
    paragraph = document["data"][0]["paragraphs"][0]
    edit(paragraph["qas"][0], paragraph)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=str(path).replace(".", r"\.") + ".*" + pattern):
        read_squad(path)


def test_squad_metrics_by_hand():
    assert token_f1("Denver Broncos", "the Broncos") == pytest.approx(2 / 3)
    assert exact_match("The Broncos!", "broncos") == 1.0 and exact_match("Broncos", "Denver") == 0.0
    questions = [Question("a", "t", "q", "c", (("Denver Broncos", 0), ("Broncos", 7))),
                 Question("b", "t", "q", "c", (("Carolina Panthers", 0),))]
    scores = squad_scores({"a": "the Broncos", "b": "Panthers team"}, questions)
    # a: exact against "Broncos" (1, F1 1); b: F1 of {panthers, team} vs {carolina, panthers} = 0.5.
    assert scores == {"exact_match": 50.0, "f1": pytest.approx(75.0), "questions": 2}
    with pytest.raises(ValueError, match="No prediction for 1 question"):
        squad_scores({"a": "x"}, questions)


def test_lexical_baseline_by_hand():
    context = "The game was played in 2016. Denver beat Carolina in the final game at Levi's Stadium."
    baseline = LexicalAnswerer(max_words=2, window=3)
    assert baseline.best_sentence("Who did Denver beat in the final?", context).startswith("Denver beat")
    # "Carolina" has "denver", "beat" (left) and "final" (right) around it; spans may not hold question words.
    assert baseline.answer("Who did Denver beat in the final?", context) == "Carolina"


def test_windows_cover_long_contexts_and_offsets_point_at_the_words():
    _, preprocessor = tiny_bert()
    spans = SpanTokenizer(preprocessor.tokenizer, sequence_length=SEQUENCE_LENGTH, doc_stride=8,
                          max_question_length=4)
    context = " ".join(FILLER * 4)  # 40 words, one token each: more than one window holds.
    windows = spans.windows(["good", "the bad case"], [context, "good phone"])
    width = SEQUENCE_LENGTH - 3 - 1  # Context tokens a window holds beside a 1-token question.
    expected_windows = 1 + -(-(40 - width) // 8)
    assert windows.example.tolist() == [0] * expected_windows + [1]
    words = context.split()
    for row in range(expected_windows):
        start = windows.offsets[row, :, 0]
        inside = np.flatnonzero(start >= 0)
        assert inside[0] == 3  # [CLS] good [SEP]
        assert [context[s:e] for s, e in windows.offsets[row, inside]] == words[8 * row: 8 * row + len(inside)]
    assert windows.arrays["segment_ids"][-1].tolist()[:8] == [0, 0, 0, 0, 0, 1, 1, 1]
    # The answer "case" (word 37) lies in the last windows only; the first window gets [CLS].
    answer_start = len(" ".join(words[:37])) + 1
    targets = span_targets(windows, [("case", answer_start), None], [context, "good phone"])
    assert targets[0].tolist() == [0, 0] and targets[-1].tolist() == [0, 0]
    for row in range(expected_windows):
        if targets[row, 0]:
            s, e = windows.offsets[row, targets[row, 0], 0], windows.offsets[row, targets[row, 1], 1]
            assert context[s:e] == "case"
    assert targets[:expected_windows, 0].any()


def _best_spans_by_brute_force(logits, offsets, example, max_length, n_best):
    """Every allowed span of every window, the same bytes counted once, best first."""
    found = {}
    for window in range(len(logits)):
        inside = offsets[window, :, 0] >= 0
        probabilities = []
        for column in (0, 1):
            values = np.where(inside, logits[window, :, column].astype(float), -np.inf)
            probabilities.append(np.exp(values - values.max()) / np.exp(values - values.max()).sum())
        for i in np.flatnonzero(inside):
            for j in np.flatnonzero(inside):
                if i <= j < i + max_length:
                    key = (int(offsets[window, i, 0]), int(offsets[window, j, 1]))
                    spans = found.setdefault(int(example[window]), {})
                    spans[key] = max(spans.get(key, 0), probabilities[0][i] * probabilities[1][j])
    return {question: sorted(spans.items(), key=lambda item: -item[1])[:n_best] for question, spans in found.items()}


@pytest.mark.parametrize("max_length", [1, 2, 4])
def test_decoding_ranks_spans_over_windows_as_brute_force_does(max_length):
    # Question 0: two windows over context tokens 0-3 and 2-5 (tokens 2-3 in both); question 1: one window.
    # Token t spans bytes 4t..4t+3; positions 1-4 of a window hold context tokens, 0 and 5 do not.
    offsets = np.full((3, 6, 2), -1, np.int32)
    for window, first in enumerate((0, 2, 0)):
        tokens = np.arange(first, first + 4)
        offsets[window, 1:5, 0], offsets[window, 1:5, 1] = 4 * tokens, 4 * tokens + 3
    logits = np.random.default_rng(max_length).normal(0, 3, (3, 6, 2)).astype(np.float32)
    logits[:, 0] = 20  # [CLS] and [SEP] are outside the context: never in a span, however high.
    example = np.array([0, 0, 1], np.int32)
    best = decode_spans(tf.constant(logits), tf.constant(offsets), tf.constant(example), 2,
                        max_answer_length=max_length, n_best=3)
    expected = _best_spans_by_brute_force(logits, offsets, example, max_length, 3)
    for question in (0, 1):
        spans = list(zip(best["start"].numpy()[question].tolist(), best["end"].numpy()[question].tolist()))
        wanted = expected[question]
        assert spans[:len(wanted)] == [key for key, _ in wanted]
        np.testing.assert_allclose(best["probability"].numpy()[question][:len(wanted)],
                                   [p for _, p in wanted], rtol=1e-4)
        assert len(set(spans)) == len(spans)  # No span twice.
    np.testing.assert_allclose(best["null_score"].numpy(), [40, 40])


# --- The reader -----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny reader fine-tuned on the synthetic task, its preset and export."""
    folder = tmp_path_factory.mktemp("qa")
    backbone, preprocessor = tiny_bert(seed=3, dropout=0.0)
    reader = QuestionAnswerer(backbone, preprocessor, "full", sequence_length=SEQUENCE_LENGTH, doc_stride=8,
                              max_question_length=4, max_answer_length=3)
    train, test = synthetic_questions(320, seed=1), synthetic_questions(40, seed=2)
    before = reader.evaluate_report(test)["f1"]
    reader.fit(train, epochs=16, batch_size=16, verbose=0, head_learning_rate=3e-3, backbone_learning_rate=1e-3,
               layer_decay=1.0)
    preset = reader.save_to_preset(folder / "preset")
    export = reader.export(folder / "exports", "qa", warmup=[(test[0].question, test[0].context)])
    return reader, train, test, before, preset, export


def test_reader_learns_what_no_lexical_rule_finds(trained):
    reader, _, test, before, _, _ = trained
    after = reader.evaluate_report(test)["f1"]
    lexical = squad_scores(LexicalAnswerer().predict(test), test)["f1"]
    assert after > 90 and after > before + 40 and after > lexical + 40
    answer = reader.predict([test[0].question], [test[0].context], n_best=2)[0]
    assert len(answer["answer"]) == 2 and answer["score"][0] >= answer["score"][1]
    first = reader.predict([test[0].question], [test[0].context])[0]
    assert test[0].context[first["start"]:first["end"]] == first["answer"]


def test_preset_round_trip_answers_the_same(trained):
    reader, _, test, _, preset, _ = trained
    loaded = QuestionAnswerer.from_preset(preset)
    assert loaded.span_tokenizer.doc_stride == 8 and loaded.max_answer_length == 3
    assert QuestionAnswerer.from_preset(preset, dropout=0.3, max_answer_length=5).dropout == 0.3  # Applied.
    assert loaded.predictions(test) == reader.predictions(test)


def test_saved_model_answers_in_graph_as_predict_does(trained):
    reader, _, test, _, _, export = trained
    loaded = tf.saved_model.load(str(export))
    questions, contexts = [q.question for q in test[:6]], [q.context for q in test[:6]]
    outputs = loaded.signatures["serving_default"](question=tf.constant(questions), context=tf.constant(contexts))
    expected = reader.predict(questions, contexts)
    assert [a.decode() for a in outputs["answer"].numpy()] == [e["answer"] for e in expected]
    assert outputs["start"].numpy().tolist() == [e["start"] for e in expected]
    np.testing.assert_allclose(outputs["score"].numpy(), [e["score"] for e in expected], atol=1e-5)
    shown = subprocess.run([*SAVED_MODEL_CLI, "show", "--dir", str(export), "--all"], capture_output=True,
                           text=True, check=True).stdout
    for name in ("question", "context", "answer", "score", "start", "end"):
        assert f"['{name}']" in shown
    # A TF1 session, as TF Serving loads it, runs the tokenising, windows and decoding.
    ran = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(export), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--input_exprs",
                          f"question={questions[:1]!r};context={contexts[:1]!r}"],
                         capture_output=True, text=True, check=True).stdout
    assert "Result for output key answer:" in ran and repr(expected[0]["answer"].encode())[1:] in ran


def test_serve_local_answers_questions_over_both_clients(trained):
    reader, _, test, _, _, export = trained
    inputs = {"question": [q.question for q in test[:3]], "context": [q.context for q in test[:3]]}
    expected = [e["answer"] for e in reader.predict(inputs["question"], inputs["context"])]
    with LocalServer(export.parent.parent, grpc_port=0, rest_port=0) as server:
        for client in (GrpcClient(f"127.0.0.1:{server.grpc_port}", "qa"),
                       RestClient(f"127.0.0.1:{server.rest_port}", "qa")):
            answers = client.predict(inputs)["answer"]
            assert [a.decode() if isinstance(a, bytes) else a for a in answers] == expected


# --- The workflow -----------------------------------------------------------------

@pytest.fixture(scope="module")
def squad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad") / "synthetic.json"
    path.write_text(json.dumps(squad_json(synthetic_questions(120, seed=4, articles=10))))
    return path


def test_workflow_reports_reader_beside_the_lexical_baseline(squad_file, tiny_bert_preset, tmp_path):
    config = build_config(QuestionAnsweringConfig, 
        train=str(squad_file), backbone=tiny_bert_preset, output_dir=str(tmp_path / "run"), sequence_length=32,
        doc_stride=8, max_question_length=4, max_answer_length=3, validation_fraction=0.2, test_fraction=0.2,
        export_dir=str(tmp_path / "exports"), model_name="qa", resume=False,
        training=TrainingConfig(epochs=2, warmup_epochs=0, batch_size=16, verbose=0))
    result = run(config)
    metrics = result.metrics
    assert {"validation", "test", "lexical"} <= set(metrics)
    assert metrics["lexical"]["chosen"] in ("span", "sentence")
    assert len(result.history["val_f1"]) == 2
    assert (tmp_path / "run" / "squad.png").stat().st_size > 1000
    predictions = json.loads((tmp_path / "run" / "test_predictions.json").read_text())
    assert len(predictions) == metrics["test"]["questions"]
    assert (result.export_path / "saved_model.pb").is_file()


def test_cli_names_a_bad_answer_in_one_line(tmp_path, capsys):
    document = squad_json(synthetic_questions(4, seed=5))
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    assert cli(["train-qa", "--train", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and str(path) in error[0]
    assert "'5-0'" in error[0] and "does not match the context" in error[0]


def test_no_answer_threshold_and_v2_questions(trained, tmp_path):
    reader, _, test, _, _, _ = trained
    questions, contexts = [q.question for q in test[:4]], [q.context for q in test[:4]]
    always = reader.predict(questions, contexts)
    try:
        reader.no_answer_threshold, reader._answer = -1e9, None  # Any [CLS] score beats the best span.
        assert [a["answer"] for a in reader.predict(questions, contexts)] == [""] * 4
        assert {a["start"] for a in reader.predict(questions, contexts)} == {-1}
        reader.no_answer_threshold, reader._answer = 1e9, None
        assert reader.predict(questions, contexts) == always
    finally:
        reader.no_answer_threshold, reader._answer = None, None
    document = squad_json(test[:2])
    document["data"][0]["paragraphs"][0]["qas"][0].update(answers=[], is_impossible=True)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(document))
    impossible = read_squad(path)[0]
    assert impossible.answers == () and squad_scores({impossible.id: ""}, [impossible])["exact_match"] == 100.0
    windows, targets = reader.windows([impossible])
    assert (targets == 0).all()  # Every window of a question without an answer points at [CLS].
