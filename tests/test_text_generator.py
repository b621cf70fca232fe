"""`TextGenerator`: prompt → answer fine-tuning with the loss on the answer
only, KerasHub's generation, the preset round trip, and the generation
SavedModel run in a TF1 session as TF Serving loads it, on a tiny
Llama-architecture decoder written as a GGUF file."""

import numpy as np
import pytest
import tensorflow as tf

from decoder_data import random_weights, write_gguf
from tl_keras.export.generation import prompt_frame
from tl_keras.models.gguf import convert_gguf
from tl_keras.tasks.text_generator import TextGenerator

PROMPTS = ["the", "hello", "world", "ok"]
ANSWERS = ["hello world", "the the", "ok", "world hello"]


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generator")
    return convert_gguf(write_gguf(folder / "tiny.gguf", random_weights(seed=11), "F32"), folder / "preset")


@pytest.fixture(scope="module")
def trained(tiny_preset):
    generator = TextGenerator.from_preset(tiny_preset, strategy="full", sequence_length=48)
    history = generator.fit(PROMPTS * 8, ANSWERS * 8, batch_size=8, epochs=40, learning_rate=3e-3, verbose=0)
    return generator, history


def run_in_session(export, feeds):
    """`serving_default` of a SavedModel in a TF1 session, as TF Serving's
    session bundle runs it."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export))
        definition = meta_graph.signature_def["serving_default"]
        fetches = {name: info.name for name, info in definition.outputs.items()}
        return session.run(fetches, {definition.inputs[name].name: value for name, value in feeds.items()})


def test_the_loss_weighs_the_answer_and_its_end_token_only(tiny_preset):
    generator = TextGenerator.from_preset(tiny_preset, sequence_length=32)
    x, y, weights = generator.training_arrays(["hello"], ["the world"])
    prompt = generator._ids(generator.prompt("hello"))  # ChatML: the turn opens itself, no start token.
    answer = generator._ids("the world") + [generator.tokenizer.end_token_id]
    length = len(prompt) + len(answer)
    assert x["token_ids"][0, :len(prompt)].tolist() == prompt
    np.testing.assert_array_equal(y[0, :length - 1], (prompt + answer)[1:])  # Targets: the next token.
    # Weighted where the target is an answer token or the end token.
    assert np.flatnonzero(weights[0]).tolist() == list(range(len(prompt) - 1, length - 1))
    assert x["padding_mask"][0].sum() == length - 1
    # As wide as the longest pair needs (rounded up to 16), not `sequence_length`.
    wide = TextGenerator.from_preset(tiny_preset, sequence_length=256).training_arrays(["hello"], ["the world"])[0]
    assert length - 1 <= wide["token_ids"].shape[1] < length + 16
    # Too long a prompt loses its start, never the answer.
    x, y, weights = generator.training_arrays(["hello " * 40], ["the world"])
    assert weights[0].sum() == len(answer) and y[0, -1] == generator.tokenizer.end_token_id


def test_fine_tuning_teaches_the_answers_and_generation_returns_them(trained):
    generator, history = trained
    losses = history.history["loss"]
    assert losses[-1] < 0.2 * losses[0]
    assert generator.generate(PROMPTS, max_new_tokens=16) == ANSWERS
    # A bound shorter than the answer cuts it; sampling keeps to the bound.
    assert all(len(generator._ids(text)) <= 1 for text in generator.generate(PROMPTS, max_new_tokens=1))
    sampled = generator.generate(PROMPTS, max_new_tokens=3, sampler="top_k", seed=1)
    assert len(sampled) == 4 and all(len(generator._ids(text)) <= 3 for text in sampled)


def test_lora_trains_only_its_factors(tiny_preset):
    generator = TextGenerator.from_preset(tiny_preset, strategy="lora:4", sequence_length=32)
    before = {v.path: v.numpy().copy() for v in generator.backbone.weights}
    generator.fit(PROMPTS, ANSWERS, batch_size=4, epochs=2, verbose=0)
    assert all(np.array_equal(before[v.path], v.numpy()) for v in generator.backbone.weights if v.path in before)
    factors = [v for v in generator.backbone.trainable_weights if "lora_kernel_b" in v.path]
    assert factors and all("lora" in v.path for v in generator.backbone.trainable_weights)
    assert max(float(np.abs(v.numpy()).max()) for v in factors) > 0  # B starts at zero; it trained.


def test_a_saved_generator_comes_back_whole_and_refuses_new_settings(trained, tmp_path):
    generator, _ = trained
    generator.save_to_preset(tmp_path / "answers")
    restored = TextGenerator.from_preset(tmp_path / "answers")
    assert (restored.sequence_length, restored.chat, str(restored.strategy)) == (48, True, "full")
    assert restored.generate(PROMPTS, max_new_tokens=16) == ANSWERS
    with pytest.raises(ValueError, match="cannot apply sequence_length=64"):
        TextGenerator.from_preset(tmp_path / "answers", sequence_length=64)


def test_the_export_generates_in_a_tf1_session_as_in_process(trained, tmp_path):
    generator, _ = trained
    version = generator.export(tmp_path / "exports", "answers", warmup=["the"], max_new_tokens=16)
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    outputs = run_in_session(version, {"prompt": np.array(PROMPTS, dtype=object)})
    assert [text.decode() for text in outputs["text"]] == ANSWERS
    assert outputs["num_tokens"].tolist() == [len(generator._ids(answer)) for answer in ANSWERS]
    short = generator.export(tmp_path / "exports", "answers", max_new_tokens=1)
    assert run_in_session(short, {"prompt": np.array(PROMPTS, dtype=object)})["num_tokens"].max() == 1


def test_bad_settings_are_refused_naming_the_value(tiny_preset):
    with pytest.raises(ValueError, match="received 'frozen'"):
        TextGenerator.from_preset(tiny_preset, strategy="frozen")
    generator = TextGenerator.from_preset(tiny_preset)
    with pytest.raises(ValueError, match="received 0"):
        generator.generate(["the"], max_new_tokens=0)
    with pytest.raises(ValueError, match="received 'beam'"):
        generator.generate(["the"], sampler="beam")
    with pytest.raises(ValueError, match="2 prompts and 1 answers"):
        generator.fit(["a", "b"], ["c"], verbose=0)
    with pytest.raises(ValueError, match="must hold the prompt once"):
        prompt_frame(lambda text: text.upper())


def test_the_generation_workflow_scores_the_prompted_preset_beside_the_fine_tuned_one(tiny_preset, tmp_path):
    import json

    from tl_keras.core.settings import build_config
    from tl_keras.workflows.text_generation import TextGenerationConfig, describe, run

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{p}\t{a}\n" for p, a in zip(PROMPTS, ANSWERS)) * 10)
    result = run(build_config(
        TextGenerationConfig, train=str(pairs), backbone=str(tiny_preset), output_dir=str(tmp_path / "run"),
        strategy="full", sequence_length=48, max_new_tokens=16, epochs=40, batch_size=8, backbone_learning_rate=3e-3,
        verbose=0, validation_fraction=0.1, test_fraction=0.2, export_dir=str(tmp_path / "exports"),
        model_name="answers"))
    metrics = result.metrics
    assert metrics["test"]["examples"] == 8 and metrics["validation"]["examples"] == 3
    # The random decoder prompted as it is gets nothing right; fine-tuned, it answers.
    assert metrics["prompted"]["test"]["exact_match"] < 25 <= 75 <= metrics["test"]["exact_match"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert written["prompted"]["test"] == metrics["prompted"]["test"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "test_answers.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"prompt", "answer", "prompted", "fine_tuned"}
    assert (tmp_path / "run" / "answers.png").stat().st_size > 10_000
    assert "prompted before training" in describe(result) and str(result.export_path) in describe(result)
    # The export answers as the fine-tuned generator does, in a TF1 session as TF Serving runs it.
    prompts = [row["prompt"] for row in rows[:3]]
    served = run_in_session(result.export_path, {"prompt": np.array(prompts, object)})
    assert [text.decode() for text in served["text"]] == result.task.generate(prompts, max_new_tokens=16)


def test_generation_traces_once_for_every_prompt_length(trained):
    import logging

    class Collected(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    generator, _ = trained
    handler = Collected()
    tf.get_logger().addHandler(handler)
    try:  # Six padded lengths: TensorFlow warns of retracing from the fifth trace of one function on.
        for n in range(1, 7):
            generator.generate(["hello " * (12 * n)], max_new_tokens=1)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [m for m in handler.messages if "retracing" in m], [m[:120] for m in handler.messages]
    assert generator.generate(PROMPTS, max_new_tokens=16) == ANSWERS  # The reused greedy loop still answers.
