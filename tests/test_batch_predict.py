"""Batch prediction on Apache Beam's local runner: rows read from every
format with their file and line, scored by the exported SavedModel as TF
Serving loads it, bad rows in the dead letters, nothing else lost."""

import gzip
import json
import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet
import pytest
import tensorflow as tf

from conftest import tiny_bert
from image_data import tiny_efficientnet
from tl_keras.cli.main import main as cli
from tl_keras.data.records import BadRecord, Record, read_records
from tl_keras.data.texts import DataError, LabelVocabulary
from tl_keras.export.image import export_image_model
from tl_keras.export.text import export_text_model
from tl_keras.models.heads import build_encoder, build_head, build_image_encoder, build_image_model, build_text_model
from tl_keras.pipelines.batch_predict import batch_predict, version_folder
from tl_keras.serving.session_bundle import SessionBundle

TEXTS = ["good phone", "the battery was bad and the case is broken", "love it", "awful, broken in a week",
         "the case is very good", "sad phone"]


def _example(fields):
    feature = {name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
               for name, value in fields.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _lines(pattern_folder, prefix):
    return [json.loads(line) for path in sorted(pathlib.Path(pattern_folder).glob(f"{prefix}-[0-9]*-of-*.jsonl"))
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    for seed in (3, 4):  # Versions 1 and 2, different weights.
        backbone, preprocessor = tiny_bert(seed=seed)
        model = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification"))
        export_text_model(model, preprocessor, LabelVocabulary.from_labels(["neg", "pos"]), base, "reviews")
    return base / "reviews"


def test_records_of_every_format_carry_their_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"id": 1, "text": "x"}\n\nnot json\n[1]\n{"id": 2, "text": "ok"}\n\xff\xfe\n')
    with gzip.open(tmp_path / "b.csv.gz", "wt", newline="") as stream:
        stream.write('id,text\nc1,"two\nlines"\nc2\nc3,plain\n')
    (tmp_path / "c.tsv").write_bytes(b"id\ttext\nt1\tfine\nt2\tbad \xff byte\nt3\tlast\n")
    with tf.io.TFRecordWriter(str(tmp_path / "d.tfrecord")) as writer:
        writer.write(_example({"id": "e1", "text": "from an example"}))
        writer.write(b"not an example at all \xff")
    pyarrow.parquet.write_table(pyarrow.table({"id": ["p1", "p2"], "text": ["first", "second"]}),
                                tmp_path / "e.parquet")

    def rows(name):
        return [(type(row).__name__, row.line, row.fields if isinstance(row, Record) else row.reason.split(" (")[0])
                for row in read_records(tmp_path / name)]

    assert rows("a.jsonl") == [("Record", 1, {"id": 1, "text": "x"}), ("BadRecord", 3, "not JSON"),
                               ("BadRecord", 4, "expected a JSON object, received list"),
                               ("Record", 5, {"id": 2, "text": "ok"}), ("BadRecord", 6, "not UTF-8")]
    assert rows("b.csv.gz") == [("Record", 2, {"id": "c1", "text": "two\nlines"}),
                                ("BadRecord", 4, "1 fields where the header has 2"),
                                ("Record", 5, {"id": "c3", "text": "plain"})]
    assert rows("c.tsv") == [("Record", 2, {"id": "t1", "text": "fine"}), ("BadRecord", 3, "not UTF-8"),
                             ("Record", 4, {"id": "t3", "text": "last"})]
    assert rows("d.tfrecord") == [("Record", 1, {"id": b"e1", "text": b"from an example"}),
                                  ("BadRecord", 2, "not a tf.train.Example")]
    assert rows("e.parquet") == [("Record", 1, {"id": "p1", "text": "first"}),
                                 ("Record", 2, {"id": "p2", "text": "second"})]
    (tmp_path / "f.tfrecord").write_bytes((tmp_path / "d.tfrecord").read_bytes()[:-9])  # A cut-off last record.
    bad = list(read_records(tmp_path / "f.tfrecord"))
    assert isinstance(bad[-1], BadRecord) and bad[-1].line == 2 and "unreadable from here on" in bad[-1].reason
    with pytest.raises(ValueError, match=r"g\.txt: unknown record format"):
        list(read_records(tmp_path / "g.txt"))


def test_batch_predict_scores_every_row_as_the_served_model_does(text_export, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "part-0.jsonl").write_text("".join(json.dumps({"id": f"j{i}", "text": text}) + "\n"
                                                 for i, text in enumerate(TEXTS[:4]))
                                         + '{"id": "j-missing"}\n{"text": "no id"}\n{"id": "j-number", "text": 5}\n')
    with gzip.open(inputs / "part-1.csv.gz", "wt", newline="") as stream:
        stream.write("id,review\n" + "".join(f'c{i},"{text}"\n' for i, text in enumerate(TEXTS[4:])) + "c-short\n")
    with tf.io.TFRecordWriter(str(inputs / "part-2.tfrecord")) as writer:
        writer.write(_example({"id": "t0", "review": TEXTS[1]}))
    result = batch_predict(text_export, [str(inputs / "*.jsonl"), str(inputs / "*.csv.gz"),
                                         str(inputs / "*.tfrecord")],
                           str(tmp_path / "out" / "scored"), fields=None, batch_size=3)
    assert result.version == 2  # The newest.
    # The JSON lines name their input `text`; the CSV and TFRecord ones `review`, so those are dead letters here.
    assert (result.rows, result.predicted, result.dead_letters) == (11, 4, 7)
    again = batch_predict(text_export, [str(inputs / "*")], str(tmp_path / "out2" / "scored"),
                          fields={"text": "review"}, version=1, batch_size=2)
    assert (again.version, again.predicted) == (1, 3)

    rows = {row["id"]: row for row in _lines(tmp_path / "out", "scored")}
    served = SessionBundle(version_folder(text_export)[1]).signatures["serving_default"]
    expected = served(text=np.asarray(TEXTS[:4], object))
    assert sorted(rows) == ["j0", "j1", "j2", "j3"]
    for i in range(4):
        row = rows[f"j{i}"]
        assert row["model_version"] == 2
        assert row["label"] == expected["label"][i].decode() and row["label_id"] == expected["label_id"][i]
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], atol=1e-6)
    dead = {(pathlib.Path(row["file"]).name, row["line"]): row for row in _lines(tmp_path / "out", "scored-dead-letters")}
    assert dead[("part-0.jsonl", 5)]["reason"] == "no 'text' field (the signature's input 'text')"
    assert dead[("part-0.jsonl", 5)]["id"] == "j-missing"
    assert dead[("part-0.jsonl", 6)]["reason"].startswith("no usable 'id' field")
    assert dead[("part-0.jsonl", 7)]["reason"] == "'text' must be text, received 5"
    assert dead[("part-1.csv.gz", 4)]["reason"] == "1 fields where the header has 2"
    assert dead[("part-2.tfrecord", 1)]["reason"] == "no 'text' field (the signature's input 'text')"

    older = {row["id"]: row for row in _lines(tmp_path / "out2", "scored")}
    assert sorted(older) == ["c0", "c1", "t0"] and {row["model_version"] for row in older.values()} == {1}
    first = SessionBundle(version_folder(text_export, 1)[1]).signatures["serving_default"]
    np.testing.assert_allclose(older["t0"]["probabilities"],
                               first(text=np.asarray([TEXTS[1]], object))["probabilities"][0], atol=1e-6)


def test_a_bad_image_costs_its_row_only(tmp_path):
    keras_model = build_image_model(build_image_encoder(tiny_efficientnet(seed=5), (32, 32)),
                                    build_head(1280, 3, "classification"))
    export_image_model(keras_model, LabelVocabulary.from_labels(["apple", "milk", "pear"]), (32, 32),
                       tmp_path / "exports", "products")
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    good = [tf.io.encode_png(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).numpy() for _ in range(3)]
    for i, data in enumerate(good):
        (images / f"{i}.png").write_bytes(data)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    import base64

    (tmp_path / "photos.jsonl").write_text(
        json.dumps({"id": "p0", "image_bytes": "photos/0.png"}) + "\n"
        + json.dumps({"id": "p-broken", "image_bytes": "photos/broken.png"}) + "\n"
        + json.dumps({"id": "p1", "image_bytes": {"b64": base64.b64encode(good[1]).decode()}}) + "\n"
        + json.dumps({"id": "p-missing", "image_bytes": "photos/none.png"}) + "\n"
        + json.dumps({"id": "p2", "image_bytes": str(images / "2.png")}) + "\n")
    result = batch_predict(tmp_path / "exports" / "products", str(tmp_path / "photos.jsonl"),
                           str(tmp_path / "out" / "labels"), batch_size=4)
    assert (result.rows, result.predicted, result.dead_letters) == (5, 3, 2)
    rows = {row["id"]: row for row in _lines(tmp_path / "out", "labels")}
    served = SessionBundle(tmp_path / "exports" / "products" / "1").signatures["serving_default"]
    expected = served(image_bytes=np.asarray(good, object))
    for i in range(3):
        np.testing.assert_allclose(rows[f"p{i}"]["probabilities"], expected["probabilities"][i], atol=1e-6)
    dead = {row["id"]: row for row in _lines(tmp_path / "out", "labels-dead-letters")}
    assert dead["p-broken"]["line"] == 2 and "image" in dead["p-broken"]["reason"].lower()
    assert dead["p-missing"]["line"] == 4 and "cannot read" in dead["p-missing"]["reason"]
    one_by_one = batch_predict(tmp_path / "exports" / "products", str(tmp_path / "photos.jsonl"),
                               str(tmp_path / "out1" / "labels"), batch_size=1)  # A refused batch of one row.
    assert (one_by_one.predicted, one_by_one.dead_letters) == (3, 2)


def test_command_line_reports_counts_and_refuses_bad_values_with_one_line(text_export, tmp_path, capsys):
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": 7, "text": "good phone"}) + "\n")
    assert cli(["batch-predict", "--model", str(text_export), "--input", str(tmp_path / "*.jsonl"),
                "--output", str(tmp_path / "out" / "s")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows"], summary["predicted"], summary["dead_letters"], summary["model_version"]) == (1, 1, 0, 2)
    assert _lines(tmp_path / "out", "s")[0]["id"] == 7
    for argv, message in [
        (["--input", str(tmp_path / "none-*.jsonl")], "matches no file"),
        (["--version", "9"], "no version 9 (has [1, 2])"),
        (["--signature", "nope"], "no signature 'nope'"),
    ]:
        base = ["batch-predict", "--model", str(text_export), "--input", str(tmp_path / "*.jsonl"),
                "--output", str(tmp_path / "bad" / "s")]
        assert cli(base + argv) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
    assert cli(["batch-predict", "--model", str(text_export.parent), "--input", str(tmp_path / "*.jsonl"),
                "--output", str(tmp_path / "bad" / "s")]) == 2
    assert f"did you mean {text_export}?" in capsys.readouterr().err


def test_frozen_training_from_a_stream_matches_training_in_memory(tiny_bert_preset, tmp_path):
    from tl_keras.data.streams import stream_labelled_texts
    from tl_keras.tasks.text_classifier import TextClassifier
    from tl_keras.transfer.sharded_features import ShardedFeatures
    from conftest import separable_sentences

    texts, labels = separable_sentences(120, seed=3)
    for shard in range(3):  # Three shards in three formats.
        rows = list(zip(texts, labels))[shard * 40:(shard + 1) * 40]
        if shard == 0:
            (tmp_path / "train-0.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows))
        elif shard == 1:
            with gzip.open(tmp_path / "train-1.csv.gz", "wt", newline="") as stream:
                stream.write("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
        else:
            pyarrow.parquet.write_table(pyarrow.table({"text": [t for t, _ in rows], "label": [l for _, l in rows]}),
                                        tmp_path / "train-2.parquet")
    stream = stream_labelled_texts(str(tmp_path / "train-*"))
    assert [row[:2] for row in stream] == list(zip(texts, labels))
    classifier = TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="frozen",
                                         sequence_length=32)
    features = ShardedFeatures.write(classifier.encoder, classifier.preprocessor, stream, tmp_path / "features",
                                     classifier.targets, shard_rows=32, chunk_rows=16, verbose=0)
    assert len(features) == 120 and [shard["rows"] for shard in features.shards] == [32, 32, 32, 24]
    stored = np.concatenate([features.shard(i)[0] for i in range(4)])
    in_memory = classifier.encoder.predict(classifier.transfer_inputs(texts).arrays, verbose=0)
    np.testing.assert_allclose(stored, in_memory, atol=1e-5)  # The same features as the in-memory cache's.
    assert np.concatenate([features.shard(i)[1] for i in range(4)]).tolist() == classifier.targets(labels).tolist()
    seen = np.concatenate([batch[1].numpy() for batch in features.dataset(10, shuffle=True, seed=1)])
    assert sorted(seen.tolist()) == sorted(classifier.targets(labels).tolist())  # Every row once an epoch.

    encoder_before = [w.copy() for w in classifier.encoder.get_weights()]
    head_before = [w.copy() for w in classifier.head.get_weights()]
    history = classifier.fit_features(features, batch_size=16, epochs=8, head_learning_rate=0.01, verbose=0,
                                      validation_data=features)
    assert history.history["loss"][-1] < history.history["loss"][0] and len(history.history["val_loss"]) == 8
    assert all(np.array_equal(a, b) for a, b in zip(encoder_before, classifier.encoder.get_weights()))
    assert not any(np.array_equal(a, b) for a, b in zip(head_before, classifier.head.get_weights()))
    # The head trained on the shards is the classifier's: its predictions are the head's on those features.
    np.testing.assert_allclose(classifier.predict(texts), classifier.head.predict(stored, verbose=0), atol=1e-5)
    again = ShardedFeatures.write(classifier.encoder, classifier.preprocessor, stream, tmp_path / "features",
                                  classifier.targets, verbose=0)
    assert again.key == features.key and len(again.shards) == 4  # Reused, not re-encoded at another shard size.

    (tmp_path / "train-3.jsonl").write_text('{"text": "good", "label": "pos"}\n{"text": "", "label": "neg"}\n')
    with pytest.raises(DataError, match=r"train-3\.jsonl:2: no text in field 'text'"):
        ShardedFeatures.write(classifier.encoder, classifier.preprocessor, stream_labelled_texts(
            str(tmp_path / "train-*")), tmp_path / "features", classifier.targets, verbose=0)
    assert ShardedFeatures(tmp_path / "features").key == features.key  # A failed write leaves the old shards.
    assert not list(tmp_path.glob(".features.staging-*"))
