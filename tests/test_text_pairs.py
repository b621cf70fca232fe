"""Text pairs: reading two text columns, packing them as one sequence, a
tiny classifier that needs both texts (and beats one trained on the second
text alone), its preset, its two-input SavedModel through saved_model_cli,
serve-local and `tl-keras predict`, and the recipe's `--pair-column`."""

import json
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import FILLER, NEGATIVE, POSITIVE, SAVED_MODEL_CLI, tiny_bert
from tl_keras.cli.main import main as cli
from tl_keras.data.texts import DataError, LabelVocabulary, read_labelled_texts
from tl_keras.data.tokens import tokenize
from tl_keras.serving.clients import GrpcClient, RestClient
from tl_keras.serving.local_server import LocalServer
from tl_keras.tasks.text_classifier import TextClassifier


def sentiment_pairs(count, seed=0):
    """Two short texts each holding a sentiment word; "same" when both have
    the same sentiment. Either text alone says nothing of the label."""
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for number in range(count):
        first, second = rng.integers(0, 2, size=2)
        texts = []
        for side in (first, second):
            words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(2, 6)))]
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(POSITIVE if side else NEGATIVE)))
            texts.append(" ".join(words))
        pairs.append(tuple(texts))
        labels.append("same" if first == second else "different")
    return pairs, labels


def test_pair_files_read_in_every_format(tmp_path):
    (tmp_path / "pairs.tsv").write_text("good phone\tgreat case\tsame\nbad phone\tgood case\tdifferent\n")
    (tmp_path / "pairs.csv").write_text("query,title,label\ngood phone,great case,same\n")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"query": "good phone", "title": "great case",
                                                      "label": "same"}) + "\n")
    assert read_labelled_texts(tmp_path / "pairs.tsv", pair_column="text_pair").texts == [
        ("good phone", "great case"), ("bad phone", "good case")]
    for name in ("pairs.csv", "pairs.jsonl"):
        rows = read_labelled_texts(tmp_path / name, "query", "label", pair_column="title")
        assert rows.texts == [("good phone", "great case")] and rows.labels == ["same"]


@pytest.mark.parametrize("name, content, pattern", [
    ("a.csv", "query,label\ngood phone,same\n", r"a\.csv:2: missing column 'title'.*--pair-column"),
    ("b.csv", "query,title,label\ngood phone, ,same\n", r"b\.csv:2: empty title \(received ' '\)"),
    ("c.tsv", "good phone\tsame\n", r"c\.tsv:1: expected `query<TAB>title<TAB>label` \(3 fields\), "
                                    r"received 2 field"),
])
def test_bad_pair_rows_are_named(tmp_path, name, content, pattern):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=pattern):
        read_labelled_texts(tmp_path / name, "query", "label", pair_column="title")


def test_pairs_pack_as_one_sequence_with_segment_ids():
    _, preprocessor = tiny_bert()
    tokens = tokenize([("good phone", "the bad case")], preprocessor, verbose=0)
    vocabulary = preprocessor.tokenizer.get_vocabulary()
    length = tokens.lengths[0]
    assert [vocabulary[i] for i in tokens.arrays["token_ids"][0, :length]] == [
        "[CLS]", "good", "phone", "[SEP]", "the", "bad", "case", "[SEP]"]
    assert tokens.arrays["segment_ids"][0, :length].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    single = tokenize(["good phone"], preprocessor, verbose=0)
    assert single.lengths[0] == 4  # Single texts are unchanged, and cached under another key.


@pytest.fixture(scope="module")
def pair_classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    train, train_labels = sentiment_pairs(320, seed=1)
    test, test_labels = sentiment_pairs(64, seed=2)
    accuracy = {}
    for name, x, x_test in (("pair", train, test), ("second text", [b for _, b in train], [b for _, b in test])):
        backbone, preprocessor = tiny_bert(seed=4, dropout=0.0)
        classifier = TextClassifier(backbone, preprocessor, LabelVocabulary.from_labels(["different", "same"]),
                                    strategy="full", hidden_dim=32)
        classifier.fit(x, train_labels, epochs=20, batch_size=16, verbose=0, warmup_epochs=0,
                       backbone_learning_rate=1e-3, head_learning_rate=3e-3, layer_decay=1.0)
        accuracy[name] = np.mean(np.array(classifier.predict_labels(x_test)) == np.array(test_labels))
        if name == "pair":
            pair = classifier
    export = pair.export(folder / "exports", "pairs", warmup=test[:2])
    return pair, test, accuracy, export, folder


def test_pair_model_beats_its_single_text_baseline(pair_classifier):
    pair, test, accuracy, _, _ = pair_classifier
    assert pair.text_pairs
    assert accuracy["pair"] > 0.85 and accuracy["second text"] < 0.7, accuracy
    # KerasHub's form, a tuple of two lists, is the same input.
    np.testing.assert_allclose(pair.predict(([a for a, _ in test[:4]], [b for _, b in test[:4]])),
                               pair.predict(test[:4]), atol=1e-6)


def test_pair_preset_and_saved_model_take_both_texts(pair_classifier):
    pair, test, _, export, folder = pair_classifier
    loaded = TextClassifier.from_preset(pair.save_to_preset(folder / "preset"))
    assert loaded.text_pairs
    np.testing.assert_allclose(loaded.predict(test[:8]), pair.predict(test[:8]), atol=1e-6)
    signature = tf.saved_model.load(str(export)).signatures["serving_default"]
    outputs = signature(text=tf.constant([a for a, _ in test[:8]]), text_pair=tf.constant([b for _, b in test[:8]]))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), pair.predict(test[:8]), atol=1e-5)
    shown = subprocess.run([*SAVED_MODEL_CLI, "show", "--dir", str(export), "--tag_set", "serve",
                            "--signature_def", "serving_default"], capture_output=True, text=True, check=True).stdout
    assert "['text']" in shown and "['text_pair']" in shown


def test_serve_local_clients_and_cli_send_pairs(pair_classifier, capsys):
    pair, test, _, export, _ = pair_classifier
    inputs = {"text": [a for a, _ in test[:3]], "text_pair": [b for _, b in test[:3]]}
    expected = pair.predict_labels(test[:3])
    with LocalServer(export.parent.parent, grpc_port=0, rest_port=0) as server:
        for client in (GrpcClient(f"127.0.0.1:{server.grpc_port}", "pairs"),
                       RestClient(f"127.0.0.1:{server.rest_port}", "pairs")):
            labels = client.predict(inputs)["label"]
            assert [label.decode() if isinstance(label, bytes) else label for label in labels] == expected
        texts = [text for row in test[:3] for text in row]
        assert cli(["predict", "--address", f"127.0.0.1:{server.grpc_port}", "--model", "pairs",
                    "--input-names", "text,text_pair", *texts]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(line["text"], line["text_pair"]) for line in lines] == test[:3]
        assert [line["label"] for line in lines] == expected
        assert cli(["predict", "--address", f"127.0.0.1:{server.grpc_port}", "--model", "pairs",
                    "--input-names", "text,text_pair", "only one"]) == 2
        assert "takes the texts 2 at a time" in capsys.readouterr().err


def test_recipe_trains_and_exports_a_pair_model(tiny_bert_preset, tmp_path):
    pairs, labels = sentiment_pairs(80, seed=3)
    path = tmp_path / "pairs.csv"
    import csv

    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["query", "title", "relevant"])
        writer.writerows([(a, b, label) for (a, b), label in zip(pairs, labels)])
    assert cli(["train-text", "--train", str(path), "--text-column", "query", "--pair-column", "title",
                "--label-column", "relevant", "--backbone", tiny_bert_preset, "--output-dir", str(tmp_path / "run"),
                "--sequence-length", "32", "--epochs", "1", "--export-dir", str(tmp_path / "exports"),
                "--model-name", "pairs", "--no-resume"]) == 0
    card = json.loads((tmp_path / "exports" / "pairs" / "1" / "model_card.json").read_text())
    assert card["text_pairs"] and set(card["signatures"]["serving_default"]["inputs"]) == {"text", "text_pair"}
