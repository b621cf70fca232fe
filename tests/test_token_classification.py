"""Token classification, the task added through the one task contract:
CoNLL-style reading, word-piece alignment, BIO spans, and a tiny tagger that
learns what an all-`O` baseline cannot (its preset and SavedModel are checked
by the shared harness, `test_task_harness.py`)."""

import numpy as np
import pytest

import tl_keras
from conftest import FILLER, NEGATIVE, POSITIVE, tiny_bert
from tl_keras.data.texts import DataError, LabelVocabulary
from tl_keras.data.token_tags import WordPieceAligner, read_tagged_words
from tl_keras.tasks.token_classifier import entity_spans


def tagged_titles(count, seed):
    """Sentiment words tagged `B-pos`/`B-neg` (a second one in a row `I-`),
    the rest `O`."""
    rng = np.random.default_rng(seed)
    titles, tags = [], []
    for _ in range(count):
        words, labels = [], []
        for _ in range(int(rng.integers(3, 9))):
            kind = rng.choice(["O", "O", "pos", "neg"])
            word = str(rng.choice({"O": FILLER, "pos": POSITIVE, "neg": NEGATIVE}[kind]))
            inside = labels and labels[-1][2:] == kind
            words.append(word)
            labels.append("O" if kind == "O" else ("I-" if inside else "B-") + kind)
        titles.append(" ".join(words))
        tags.append(labels)
    return titles, tags


def test_conll_files_are_read_with_errors_naming_the_line(tmp_path):
    path = tmp_path / "titles.conll"
    path.write_text("Acme\tB-brand\nkettle\tO\n\n1.5L\tB-size\ncup O\n")
    rows = read_tagged_words(path)
    assert rows.words == [["Acme", "kettle"], ["1.5L", "cup"]] and rows.tags == [["B-brand", "O"], ["B-size", "O"]]
    assert rows.origins == [f"{path}:1", f"{path}:4"]
    path.write_text("Acme\tB-brand\nkettle\n")
    with pytest.raises(DataError, match=r"titles.conll:2: expected `word<TAB>tag`, received 'kettle'"):
        read_tagged_words(path)
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no tagged title"):
        read_tagged_words(path)


def test_each_word_is_read_at_its_first_piece():
    _, preprocessor = tiny_bert()
    aligner = WordPieceAligner(preprocessor.tokenizer, sequence_length=8)
    tokens = aligner.tokenize([["good", "steel-kettle", "1.5L", "bad"], ["the", "phone"]])
    # [CLS] good steel - kettle 1 . 5l [SEP]: cut at 8 positions, so "bad" has none.
    assert tokens.first_pieces.tolist() == [[1, 2, 5, 0], [1, 2, 0, 0]]
    assert tokens.arrays["token_ids"][1].tolist()[:4] == [2, preprocessor.tokenizer.token_to_id("the"),
                                                         preprocessor.tokenizer.token_to_id("phone"), 3]
    assert entity_spans(["B-pos", "I-pos", "O", "I-neg", "B-neg"]) == [("pos", 0, 1), ("neg", 3, 3), ("neg", 4, 4)]


def test_a_tagger_learns_what_an_all_o_baseline_cannot(tiny_bert_preset):
    titles, tags = tagged_titles(192, seed=1)
    test_titles, test_tags = tagged_titles(32, seed=2)
    names = sorted({tag for row in tags for tag in row})
    tagger = tl_keras.TokenClassifier.from_preset(tiny_bert_preset, tags=names, strategy="partial:2",
                                                  sequence_length=16)
    history = tagger.fit(titles, tags, batch_size=16, epochs=40, verbose=0, head_learning_rate=1e-2,
                         backbone_learning_rate=3e-3)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    metrics = tagger.evaluate_report(test_titles, test_tags, split="test")
    baseline = sum(tag == "O" for row in test_tags for tag in row) / sum(len(row) for row in test_tags)
    assert metrics["entity_f1"] > 0.9 and metrics["word_accuracy"] > baseline + 0.2, (metrics, baseline)
    with pytest.raises(ValueError, match=r"title 1 has 2 words but 1 tags"):
        tagger.fit(["good phone"], [["B-pos"]], epochs=1, verbose=0)
    with pytest.raises(DataError, match=r"tag 'B-brand' is not among the tags"):
        tagger.fit(["good phone"], [["B-brand", "O"]], epochs=1, verbose=0)
    assert tagger.predict(["good phone"])[0].shape == (2, len(names))
    assert LabelVocabulary.from_labels(names).names == tagger.vocabulary.names
