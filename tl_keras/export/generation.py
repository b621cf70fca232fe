"""The text-generation SavedModel: a prompt string in, the answer out.

Signature `serving_default`: `prompt` (DT_STRING, [-1]) to `text`
(DT_STRING, [-1]: the generated answer, the prompt left out) and
`num_tokens` (int32, [-1]). Inside the graph: the chat turn around each
prompt (the template rendered once at export, with the prompt as a
placeholder), KerasHub's byte-level BPE tokeniser, the causal LM's own
`generate_step` (one forward pass builds the KV cache, then one token a
step, greedy, until every row has ended or `max_new_tokens` tokens), and
the detokeniser. Rows of a batch are padded to the longest prompt, so a
request's cost grows with its longest prompt.
"""

import tensorflow as tf

from tl_keras.export.saved_model import ServingModule

PLACEHOLDER = "\u0000prompt\u0000"


def prompt_frame(render):
    """`(before, after)`: the text `render` puts around a prompt, found by
    rendering a placeholder; a template that changes the prompt's own text
    is refused."""
    rendered = render(PLACEHOLDER)
    if rendered.count(PLACEHOLDER) != 1:
        raise ValueError(f"The prompt template must hold the prompt once, verbatim, to run inside the serving "
                         f"graph; it renders {rendered[:120]!r}.")
    before, _, after = rendered.partition(PLACEHOLDER)
    return before, after


def check_max_new_tokens(max_new_tokens):
    """Refuses a `max_new_tokens` that is not an integer >= 1, naming it."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be an integer >= 1, received {max_new_tokens!r}.")


class GenerationServingModule(ServingModule):
    """The serving graph of a causal LM.

    Args:
        causal_lm: a KerasHub `CausalLM` (LoRA merged), with its preprocessor.
        render: the generator's prompt function (text to model text).
        max_new_tokens: the most tokens an answer has.
    """

    def __init__(self, causal_lm, render, max_new_tokens):
        super().__init__("generation_serving")
        check_max_new_tokens(max_new_tokens)
        causal_lm.compile(sampler="greedy")
        self._lm = self.track(causal_lm)
        self.tokenizer = causal_lm.preprocessor.tokenizer
        self.before, self.after = prompt_frame(render)
        self.add_start = bool(causal_lm.preprocessor.add_start_token)
        self.max_new_tokens = max_new_tokens
        self.max_positions = getattr(causal_lm.backbone, "max_sequence_length", None)  # Rotary decoders have none.
        self.endpoint("serving_default", self._serve, [tf.TensorSpec([None], tf.string, name="prompt")])

    def _serve(self, prompt):
        ids = self.tokenizer(tf.strings.join([self.before, prompt, self.after]))
        if self.add_start:
            start = tf.fill([ids.nrows(), 1], tf.cast(self.tokenizer.start_token_id, ids.dtype))
            ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
        ids = tf.cast(ids, tf.int32)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        width = tf.reduce_max(lengths) + self.max_new_tokens
        checks = []
        if self.max_positions:
            checks.append(tf.debugging.assert_less_equal(
                width, self.max_positions,
                message=f"prompt tokens + max_new_tokens ({self.max_new_tokens}) exceed the model's "
                        f"{self.max_positions} positions"))
        with tf.control_dependencies(checks):
            token_ids = ids.to_tensor(default_value=0, shape=tf.stack([ids.nrows(), tf.cast(width, tf.int64)]))
        positions = tf.range(width)[tf.newaxis, :]
        outputs = self._lm.value.generate_step(
            {"token_ids": token_ids, "padding_mask": positions < lengths[:, tf.newaxis]},
            stop_token_ids=[self.tokenizer.end_token_id])
        # The answer: after the prompt, before the end token, at most max_new_tokens.
        generated = (positions >= lengths[:, tf.newaxis]) & (positions < lengths[:, tf.newaxis] + self.max_new_tokens)
        kept = generated & outputs["padding_mask"] & (outputs["token_ids"] != self.tokenizer.end_token_id)
        answer = tf.ragged.boolean_mask(outputs["token_ids"], kept)
        text = self.tokenizer.detokenize(answer)
        return {"text": tf.strings.strip(text), "num_tokens": tf.cast(answer.row_lengths(), tf.int32)}


def export_text_generator(causal_lm, render, export_dir, model_name, max_new_tokens=64, version=None,
                          warmup_prompts=("Hello",), card=None):
    """Exports a causal LM as a TF Serving SavedModel, atomically.

    Args:
        causal_lm: the KerasHub `CausalLM` (LoRA merged).
        render: the prompt function (text to model text).
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        max_new_tokens: the most tokens an answer has.
        version: an integer version; the next free one if `None`.
        warmup_prompts: prompts for TF Serving's warm-up requests.
        card: extra JSON-ready facts for `model_card.json`.

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> export_text_generator(lm, generator.prompt, "exports", "answers", max_new_tokens=32)
    PosixPath('exports/answers/1')
    """
    module = GenerationServingModule(causal_lm, render, max_new_tokens)
    card = {"task": "generation", "max_new_tokens": max_new_tokens, "sampler": "greedy",
            "parameters": int(causal_lm.count_params()), **(card or {})}
    warmup = [{"prompt": [str(text)]} for text in warmup_prompts]
    # Not batched by the server: rows of a batch wait for its longest answer.
    return module.write(export_dir, model_name, version, warmup, card, batching=False)
