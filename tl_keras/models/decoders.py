"""Decoder (GPT-family) backbones as tl_keras text backbones: a KerasHub
model family over KerasHub's own Llama 3 classes, for Llama-architecture
decoders that are not Llama 3 (SmolLM2 from a GGUF file, say). Each class
adds only what the Llama 3 one leaves out, and KerasHub's loaders find them
by their `backbone_cls` as they find any family's:

- `DecoderBackbone`: `Llama3Backbone` whose config keeps
  `tie_word_embeddings` (KerasHub's drops it, so a tied model saved as a
  preset does not load).
- `DecoderTokenizer`: KerasHub's `Llama3Tokenizer` restores Llama 3's own
  start and end tokens when loaded from a preset (its config does not keep
  them); this one keeps the tokens it was built with, so SmolLM2's
  `<|im_start|>`/`<|im_end|>` survive `save_to_preset`.
- `DecoderClassifierPreprocessor`: KerasHub has no text-classifier
  preprocessor for Llama backbones; this is its generic
  `TextClassifierPreprocessor` (start token, text, end token, and pairs as
  `start a end b end`), registered for `Llama3Backbone` so that
  `TextClassifierPreprocessor.from_preset` finds it, and without the
  `segment_ids` a decoder does not read.
- `DecoderCausalLM` and its preprocessor: KerasHub's Llama 3 ones, for
  these backbones.

`load_decoder` takes any Llama-family preset, a local Hugging Face Llama
folder included: KerasHub reads such a folder as a `Llama3Backbone` with
Llama 3's RMS-norm epsilon (1e-6) whatever its `config.json` says, and
with a tokenizer whose config forgets its start and end tokens; both are
rebuilt here as the classes above, with the folder's own epsilon.
"""

import json
import pathlib

import keras
import keras_hub
import tensorflow as tf

TEMPLATE_FILE = "chat_template.jinja"  # Beside a converted preset, as `gguf.convert_gguf` writes it.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def render_chat(template, messages):
    """`messages` (`{"role", "content"}` dicts) as the prompt the template
    makes, ending where the assistant's reply begins.

    Example:
    >>> render_chat(CHATML, [{"role": "user", "content": "Hi"}])
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template).render(messages=messages, add_generation_prompt=True)


def chat_template_of(preset):
    """The Jinja2 chat template stored beside `preset` (`TEMPLATE_FILE`),
    or `None`."""
    path = pathlib.Path(str(preset)) / TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


@keras.saving.register_keras_serializable(package="tl_keras")
class DecoderBackbone(keras_hub.models.Llama3Backbone):
    """KerasHub's `Llama3Backbone`, with `tie_word_embeddings` in its config.

    Example:
    >>> backbone = DecoderBackbone(vocabulary_size=64, num_layers=2, num_query_heads=4, hidden_dim=32,
    ...                            intermediate_dim=64, num_key_value_heads=2, tie_word_embeddings=True)
    """

    def get_config(self):
        return {**super().get_config(), "tie_word_embeddings": self.tie_word_embeddings}


@keras.saving.register_keras_serializable(package="tl_keras")
class DecoderTokenizer(keras_hub.models.Llama3Tokenizer):
    """A byte-level BPE `Llama3Tokenizer` that keeps its start, end and
    other control tokens in its config.

    Args:
        vocabulary: token to id.
        merges: BPE merges, `"a b"` strings.
        bos_token, eos_token: the start and end tokens.
        misc_special_tokens: the other control tokens, never split.

    Example:
    >>> tokenizer = DecoderTokenizer(vocabulary, merges, "<|im_start|>", "<|im_end|>", {"<|endoftext|>"})
    """

    backbone_cls = DecoderBackbone

    def __init__(self, vocabulary=None, merges=None, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                 misc_special_tokens=(), **kwargs):
        kwargs.pop("unsplittable_tokens", None)  # Rebuilt from the special tokens.
        self._kept_tokens = (bos_token, eos_token, tuple(sorted(misc_special_tokens)))
        super().__init__(vocabulary, merges, bos_token, eos_token, set(misc_special_tokens), **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("unsplittable_tokens", None)
        bos_token, eos_token, misc = self._kept_tokens
        config.update(bos_token=bos_token, eos_token=eos_token, misc_special_tokens=list(misc))
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class DecoderClassifierPreprocessor(keras_hub.models.TextClassifierPreprocessor):
    """Packs texts (or text pairs) for a decoder backbone: `token_ids` and
    `padding_mask`, padded on the right, ending in the end token, so the
    last real token has read the whole text.

    Example:
    >>> preprocessor = DecoderClassifierPreprocessor(tokenizer, sequence_length=128)
    >>> preprocessor(["great phone"])["token_ids"].shape
    TensorShape([1, 128])
    """

    backbone_cls = DecoderBackbone
    tokenizer_cls = DecoderTokenizer

    def call(self, x, y=None, sample_weight=None):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(super().call(x, y, sample_weight))
        x = {name: value for name, value in x.items() if name != "segment_ids"}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


@keras.saving.register_keras_serializable(package="tl_keras")
class DecoderCausalLMPreprocessor(keras_hub.models.Llama3CausalLMPreprocessor):
    """KerasHub's Llama 3 causal-LM preprocessor for `DecoderBackbone`."""

    backbone_cls = DecoderBackbone
    tokenizer_cls = DecoderTokenizer


@keras.saving.register_keras_serializable(package="tl_keras")
class DecoderCausalLM(keras_hub.models.Llama3CausalLM):
    """KerasHub's Llama 3 causal LM (generation with a KV cache) for
    `DecoderBackbone`.

    Example:
    >>> lm = keras_hub.models.CausalLM.from_preset("presets/smollm2_135m")
    >>> lm.generate("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_length=32)
    """

    backbone_cls = DecoderBackbone
    preprocessor_cls = DecoderCausalLMPreprocessor

    def make_generate_function(self):
        # KerasHub's `tf.function` traces again for every new prompt length (TensorFlow warns of it after
        # five); with `reduce_retracing` a trace with unknown lengths serves them all.
        if self.generate_function is None and keras.config.backend() == "tensorflow" and not self.run_eagerly:
            self.generate_function = tf.function(self.generate_step, jit_compile=getattr(self, "jit_compile", True),
                                                 reduce_retracing=True)
        return super().make_generate_function()


def is_decoder(backbone):
    """True if KerasHub generates text with `backbone`'s class (a causal
    LM's backbone reads each token's left context only), by KerasHub's own
    task registry rather than a class-name list."""
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    return any(getattr(task, "backbone_cls", None) is type(backbone) for task in subclasses(keras_hub.models.CausalLM))


def _hugging_face_config(preset):
    """A local Hugging Face folder's `config.json`, or `None` for any other
    preset (KerasHub preset folders hold `metadata.json`)."""
    folder = pathlib.Path(str(preset))
    if not (folder / "config.json").is_file() or (folder / "metadata.json").is_file():
        return None
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def as_decoder_tokenizer(tokenizer):
    """`tokenizer` (a KerasHub byte-level BPE one) as a `DecoderTokenizer`
    keeping its start, end and control tokens."""
    if isinstance(tokenizer, DecoderTokenizer):
        return tokenizer
    start, end = tokenizer.start_token, tokenizer.end_token
    control = set(getattr(tokenizer, "unsplittable_tokens", None) or ()) - {start, end}
    return DecoderTokenizer(dict(tokenizer.vocabulary), list(tokenizer.merges), start, end, control)


def classifier_parts(preset, backbone, sequence_length):
    """The `DecoderBackbone` and `DecoderClassifierPreprocessor` of a
    Llama-family `backbone` loaded from `preset` (a folder
    `gguf.convert_gguf` wrote, a Kaggle handle, or a local Hugging Face
    Llama folder, which is rebuilt with its own RMS-norm epsilon).

    Args:
        preset: the preset handle or folder `backbone` came from.
        backbone: the loaded `keras_hub.models.Llama3Backbone`.
        sequence_length: the preprocessor's packed length.

    Example:
    >>> backbone, preprocessor = classifier_parts(preset, keras_hub.models.Backbone.from_preset(preset), 128)
    """
    if not isinstance(backbone, keras_hub.models.Llama3Backbone):
        raise ValueError(f"{preset!r} holds a {type(backbone).__name__}; tl_keras classifies with Llama-family "
                         "decoders.")
    tokenizer = as_decoder_tokenizer(keras_hub.models.Tokenizer.from_preset(str(preset)))
    config = _hugging_face_config(preset)
    if not isinstance(backbone, DecoderBackbone):
        settings = {**backbone.get_config(), "tie_word_embeddings": backbone.tie_word_embeddings}
        if config and "rms_norm_eps" in config:
            settings["layer_norm_epsilon"] = float(config["rms_norm_eps"])
        weights, backbone = backbone.get_weights(), DecoderBackbone.from_config(settings)
        backbone.set_weights(weights)
    return backbone, DecoderClassifierPreprocessor(tokenizer, sequence_length=sequence_length)


def load_causal_lm(preset):
    """KerasHub's causal LM of a Llama-family `preset` as a `DecoderCausalLM`
    (a local Hugging Face Llama folder rebuilt with its own RMS-norm
    epsilon and start and end tokens, as `classifier_parts` does).

    Example:
    >>> load_causal_lm("presets/smollm2_135m").generate("Hi", max_length=16)
    """
    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    if isinstance(causal_lm, DecoderCausalLM):
        return causal_lm
    backbone, _ = classifier_parts(preset, causal_lm.backbone, 8)
    tokenizer = as_decoder_tokenizer(causal_lm.preprocessor.tokenizer)
    return DecoderCausalLM(backbone=backbone, preprocessor=DecoderCausalLMPreprocessor(tokenizer))
