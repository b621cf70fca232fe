import json

import numpy as np
import pytest

from tl_keras.data.texts import DataError, LabelVocabulary, read_labelled_texts, stratified_split


def test_reads_bundled_reviews_tsv():
    rows = read_labelled_texts("data/sentiment_labelled_sentences/amazon_cells_labelled.txt")
    assert len(rows) == 800
    assert rows.texts[1] == "Good case, Excellent value."
    assert rows.labels[1] == "1"
    assert sorted(set(rows.labels)) == ["0", "1"]
    assert rows.origins[1].endswith("amazon_cells_labelled.txt:2")


def test_reads_csv_and_jsonl_with_named_columns(tmp_path):
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text('review,stars\n"Great, really",5\nbad,1\n')
    rows = read_labelled_texts(csv_path, text_column="review", label_column="stars")
    assert rows.texts == ["Great, really", "bad"] and rows.labels == ["5", "1"]
    jsonl_path = tmp_path / "rows.jsonl"
    jsonl_path.write_text(json.dumps({"review": "ok", "stars": 3}) + "\n\n" + json.dumps({"review": "no", "stars": 1}) + "\n")
    rows = read_labelled_texts(jsonl_path, text_column="review", label_column="stars")
    assert rows.texts == ["ok", "no"] and rows.labels == ["3", "1"]
    assert rows.origins[1].endswith("rows.jsonl:3")


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("empty_text.tsv", "good\t1\n   \t0\n", r"empty_text.tsv:2: empty text"),
        ("no_label.tsv", "good\t1\nbad\t\n", r"no_label.tsv:2: missing label"),
        ("three_fields.tsv", "good\t1\nbad\t0\textra\n", r"three_fields.tsv:2: expected .* received 3 field"),
        ("missing_column.csv", "text,stars\ngood,1\n", r"missing_column.csv:2: missing column 'label'"),
        ("bad.jsonl", '{"text": "a", "label": "1"}\n{"text": \n', r"bad.jsonl:2: not valid JSON"),
        ("data.parquet", "x", r"unknown file type '.parquet'"),
        ("empty.tsv", "\n\n", r"empty.tsv: the file holds no rows"),
    ],
)
def test_bad_files_name_file_line_and_value(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=pattern):
        read_labelled_texts(path)


def test_generation_files_name_their_own_columns(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Capital of France?\tParis\nCapital of Peru?\n")
    with pytest.raises(DataError, match=r"pairs.tsv:2: expected `prompt<TAB>answer` \(2 fields\), received 1"):
        read_labelled_texts(path, "prompt", "answer")
    path.write_text("Capital of France?\tParis\nCapital of Peru?\t \n")
    with pytest.raises(DataError, match=r"pairs.tsv:2: missing answer for prompt 'Capital of Peru\?'"):
        read_labelled_texts(path, "prompt", "answer")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.tsv: no such file"):
        read_labelled_texts(tmp_path / "nope.tsv")


def test_non_utf8_file_names_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("good\t1\ncaf\u00e9 food\t0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.tsv:2: the file is not UTF-8 \(byte b'\\xe9'"):
        read_labelled_texts(path)


def test_label_vocabulary_classification_and_unknown_validation_label():
    vocab = LabelVocabulary.from_labels(["pos", "neg", "pos"])
    assert vocab.names == ("neg", "pos") and vocab.num_outputs == 2
    assert vocab.encode(["pos", "neg"]).tolist() == [1, 0]
    with pytest.raises(DataError, match=r"val.tsv:7: label 'neutral' is not among the training labels \['neg', 'pos'\]"):
        vocab.encode(["neutral"], origins=["val.tsv:7"])


def test_one_class_only_is_refused():
    with pytest.raises(DataError, match=r"only one class \['pos'\]"):
        LabelVocabulary.from_labels(["pos", "pos"])


def test_regression_label_not_parseable():
    with pytest.raises(DataError, match=r"train.tsv:3: regression label must be a finite number, received 'five'"):
        LabelVocabulary.from_labels(["1", "2.5", "five"], task="regression",
                                    origins=["train.tsv:1", "train.tsv:2", "train.tsv:3"])
    vocab = LabelVocabulary.from_labels(["1", "2.5"], task="regression")
    np.testing.assert_allclose(vocab.encode(["4", "0.5"]), [4.0, 0.5])


def test_multilabel_targets():
    vocab = LabelVocabulary.from_labels(["screen,battery", "battery", "price"], task="multilabel")
    assert vocab.names == ("battery", "price", "screen")
    assert vocab.encode(["screen, battery", "price"]).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match=r"received 'ranking'"):
        LabelVocabulary.from_labels(["a", "b"], task="ranking")


def test_stratified_split_keeps_label_shares_and_is_repeatable():
    rows = read_labelled_texts("data/sentiment_labelled_sentences/amazon_cells_labelled.txt")
    train, validation = stratified_split(rows, 0.2, seed=7)
    assert len(train) == 640 and len(validation) == 160
    assert validation.labels.count("1") == 80
    assert not set(train.origins) & set(validation.origins)
    assert stratified_split(rows, 0.2, seed=7)[1].origins == validation.origins
    with pytest.raises(ValueError, match="received 1.5"):
        stratified_split(rows, 1.5)


def test_only_line_feeds_end_rows(tmp_path):
    path = tmp_path / "unicode.tsv"
    path.write_text("The script is\u0085was there a script?\t0\r\nA line\u2028break\t1\n", encoding="utf-8")
    rows = read_labelled_texts(path)
    assert rows.texts == ["The script is\u0085was there a script?", "A line\u2028break"]
    assert rows.labels == ["0", "1"]
    assert len(read_labelled_texts("data/sentiment_labelled_sentences/imdb_labelled.txt")) == 800


@pytest.mark.parametrize("label", ["shipping,,price", "shipping,", ",price"])
def test_a_multilabel_row_with_an_empty_part_is_refused_by_line(tmp_path, label):
    path = tmp_path / "tags.tsv"
    path.write_text(f"fast delivery\tshipping\nfair price\t{label}\n")
    rows = read_labelled_texts(path)
    with pytest.raises(DataError, match=rf"tags.tsv:2: multi-label '{label}' has an empty label between"):
        LabelVocabulary.from_labels(rows.labels, "multilabel", rows.origins)
