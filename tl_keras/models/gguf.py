"""Llama-architecture decoders from a GGUF file (llama.cpp's format) to a
KerasHub preset folder holding a `decoders.DecoderCausalLM` (KerasHub's
Llama 3 backbone, tokenizer and causal LM, see `decoders`), so every
KerasHub and tl_keras loader takes the folder as it takes any preset.

The file is read with `gguf`, the GGUF project's own reader, which also
dequantises Q4_0/Q4_1/Q8_0 blocks to float32 (F16/F32 tensors are read as
stored). Two things differ from a Hugging Face checkpoint:

- llama.cpp rotates adjacent pairs of each attention head (RoPE "normal"
  mode), so its converter permutes the query and key rows of every head;
  KerasHub rotates the two halves of a head, as Hugging Face does, so the
  rows are put back (`unpermute_heads`).
- The tokenizer (GPT-2 style byte-level BPE) is stored as metadata: the
  vocabulary, the merges, token types (control tokens are special) and the
  ids of the start, end and padding tokens.

A file with another architecture, an unsupported tensor type, a missing or
misshaped tensor, or non-finite weights is refused with the file and the
tensor named; nothing is written then.
"""

import hashlib
import os
import pathlib
import shutil
import uuid

import numpy as np

from tl_keras.core.files import writable_folder
from tl_keras.models.decoders import (TEMPLATE_FILE, DecoderBackbone, DecoderCausalLM, DecoderCausalLMPreprocessor,
                                      DecoderTokenizer)

SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
CONTROL_TOKEN = 3  # llama.cpp's token type for control (special) tokens.


class GGUFError(ValueError):
    """A GGUF file tl_keras cannot convert; the message names the file."""


def _reader(path):
    import gguf  # Only conversion needs it.

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such GGUF file: {path}")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as error:
        raise GGUFError(f"{path} is not a readable GGUF file: {error}") from None


def _field(reader, path, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise GGUFError(f"{path} has no {key!r} metadata.")
        return default
    return field.contents()


def backbone_config(reader, path):
    """`DecoderBackbone` arguments from a GGUF file's `llama.*` metadata."""
    architecture = _field(reader, path, "general.architecture")
    if architecture != "llama":
        raise GGUFError(f"{path} holds a {architecture!r} model; tl_keras converts 'llama' architecture GGUF files.")
    names = {tensor.name for tensor in reader.tensors}
    tokens = _field(reader, path, "tokenizer.ggml.tokens")
    heads = int(_field(reader, path, "llama.attention.head_count"))
    width = int(_field(reader, path, "llama.embedding_length"))
    rope_dimensions = int(_field(reader, path, "llama.rope.dimension_count", width // heads))
    if rope_dimensions != width // heads:
        raise GGUFError(f"{path} rotates {rope_dimensions} of each head's {width // heads} dimensions; KerasHub's "
                        "Llama rotates whole heads.")
    if _field(reader, path, "llama.rope.scaling.type", "none") not in ("none", ""):
        raise GGUFError(f"{path} scales RoPE ({_field(reader, path, 'llama.rope.scaling.type')!r}), which this "
                        "converter does not map.")
    return dict(
        vocabulary_size=int(_field(reader, path, "llama.vocab_size", len(tokens))),
        num_layers=int(_field(reader, path, "llama.block_count")),
        num_query_heads=heads,
        hidden_dim=width,
        intermediate_dim=int(_field(reader, path, "llama.feed_forward_length")),
        num_key_value_heads=int(_field(reader, path, "llama.attention.head_count_kv", heads)),
        rope_max_wavelength=float(_field(reader, path, "llama.rope.freq_base", 10000.0)),
        layer_norm_epsilon=float(_field(reader, path, "llama.attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in names,
    )


def tokenizer_parts(reader, path):
    """`DecoderTokenizer` arguments from the file's `tokenizer.ggml.*`
    metadata: vocabulary, merges, start and end tokens, the other control
    tokens."""
    model = _field(reader, path, "tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFError(f"{path} has a {model!r} tokenizer; tl_keras converts byte-level BPE ('gpt2') tokenizers.")
    tokens = list(_field(reader, path, "tokenizer.ggml.tokens"))
    types = list(_field(reader, path, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = list(_field(reader, path, "tokenizer.ggml.merges"))
    start = tokens[int(_field(reader, path, "tokenizer.ggml.bos_token_id"))]
    end = tokens[int(_field(reader, path, "tokenizer.ggml.eos_token_id"))]
    control = {token for token, kind in zip(tokens, types) if kind == CONTROL_TOKEN}
    return dict(vocabulary={token: index for index, token in enumerate(tokens)}, merges=merges, bos_token=start,
                eos_token=end, misc_special_tokens=control - {start, end})


def unpermute_heads(rows, heads):
    """Undoes llama.cpp's per-head query/key permutation: within each head,
    rows `[0, 2, 4, ..., 1, 3, 5, ...]` of the Hugging Face layout were
    interleaved; (out, in) rows come back in halves."""
    out = rows.shape[0]
    return rows.reshape(heads, out // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def read_tensors(reader, path):
    """Every tensor of the file as float32 numpy, in numpy's (rows, columns)
    order, after checking its type and values."""
    from gguf import quants

    arrays = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise GGUFError(f"{path}: tensor {tensor.name} is {kind}; supported: {', '.join(SUPPORTED_TYPES)}.")
        value = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        value = value.reshape(tuple(int(n) for n in reversed(tensor.shape)))
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise GGUFError(f"{path}: tensor {tensor.name} holds {bad} NaN or infinite value(s) of {value.size}.")
        arrays[tensor.name] = value
    return arrays


def weight_map(backbone, config):
    """Pairs each Keras weight of a `DecoderBackbone` with the GGUF tensor
    and the layout conversion it comes from."""
    heads, kv_heads, width = config["num_query_heads"], config["num_key_value_heads"], config["hidden_dim"]
    head_dim = width // heads

    def projection(count, unpermute):
        def convert(rows):  # (heads * head_dim, width) -> (width, heads, head_dim)
            rows = unpermute_heads(rows, count) if unpermute else rows
            return rows.T.reshape(width, count, head_dim)
        return convert

    def attention_output(rows):  # (width, heads * head_dim) -> (heads, head_dim, width)
        return rows.T.reshape(heads, head_dim, width)

    def transposed(rows):
        return rows.T

    def same(value):
        return value

    pairs = [(backbone.token_embedding.embeddings, "token_embd.weight", same)]
    if not config["tie_word_embeddings"]:
        pairs.append((backbone.token_embedding.reverse_embeddings, "output.weight", transposed))
    for index, block in enumerate(backbone.transformer_layers):
        attention, prefix = block._self_attention_layer, f"blk.{index}."
        pairs += [
            (block._self_attention_layernorm.scale, prefix + "attn_norm.weight", same),
            (block._feedforward_layernorm.scale, prefix + "ffn_norm.weight", same),
            (attention._query_dense.kernel, prefix + "attn_q.weight", projection(heads, True)),
            (attention._key_dense.kernel, prefix + "attn_k.weight", projection(kv_heads, True)),
            (attention._value_dense.kernel, prefix + "attn_v.weight", projection(kv_heads, False)),
            (attention._output_dense.kernel, prefix + "attn_output.weight", attention_output),
            (block._feedforward_gate_dense.kernel, prefix + "ffn_gate.weight", transposed),
            (block._feedforward_intermediate_dense.kernel, prefix + "ffn_up.weight", transposed),
            (block._feedforward_output_dense.kernel, prefix + "ffn_down.weight", transposed),
        ]
    pairs.append((backbone.layer_norm.scale, "output_norm.weight", same))
    return pairs


def convert_gguf(path, output_dir, sequence_length=512):
    """Converts a Llama-architecture GGUF file into a KerasHub preset folder
    holding a `DecoderCausalLM`: backbone, tokenizer and a causal-LM
    preprocessor packing `sequence_length` tokens. The folder is written
    atomically; `tl_keras.TextClassifier.from_preset` loads it, and so do
    `keras_hub.models.CausalLM.from_preset` and `Backbone.from_preset` once
    `tl_keras.models.decoders` is imported (it registers the classes the
    preset names).

    Args:
        path: the `.gguf` file.
        output_dir: the preset folder to create; it must not exist.
        sequence_length: the preprocessor's packed length.

    Example:
    >>> convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "presets/smollm2_135m")
    PosixPath('presets/smollm2_135m')
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; choose a new folder.")
    writable_folder(output_dir.parent)
    reader = _reader(path)
    config = backbone_config(reader, path)
    tokenizer = DecoderTokenizer(**tokenizer_parts(reader, path))
    arrays = read_tensors(reader, path)
    backbone = DecoderBackbone(**config)
    pairs = weight_map(backbone, config)
    used = {name for _, name, _ in pairs}
    missing, unused = sorted(used - set(arrays)), sorted(set(arrays) - used - {"rope_freqs.weight"})
    if missing or unused:
        raise GGUFError(f"{path} is not a Llama decoder of its metadata's shape: missing {missing[:5]}, "
                        f"unexpected {unused[:5]}.")
    for variable, name, convert in pairs:
        value = convert(arrays[name])
        if tuple(value.shape) != tuple(variable.shape):
            raise GGUFError(f"{path}: tensor {name} of shape {arrays[name].shape} does not fit {variable.path} "
                            f"{tuple(variable.shape)}.")
        variable.assign(value)
    preprocessor = DecoderCausalLMPreprocessor(
        tokenizer, sequence_length=sequence_length,
        add_start_token=bool(_field(reader, path, "tokenizer.ggml.add_bos_token", True)))
    causal_lm = DecoderCausalLM(backbone, preprocessor)
    staging = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        causal_lm.save_to_preset(str(staging))
        template = reader.fields.get("tokenizer.chat_template")
        if template is not None:  # Kept beside the preset for prompting (KerasHub has no slot for it).
            (staging / TEMPLATE_FILE).write_text(template.contents(), encoding="utf-8")
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def gguf_preset(preset, cache_dir=None):
    """`preset` itself, or for a `.gguf` file the preset folder it converts
    to, once: `cache_dir` (default `$TL_KERAS_CACHE`, else
    `~/.cache/tl_keras`) / `gguf` / the file's name and a key of its path,
    size and modification time, so an edited file converts again.

    Args:
        preset: any preset handle or folder, or a `.gguf` file.
        cache_dir: where converted files are kept.

    Example:
    >>> gguf_preset("SmolLM2-135M-Instruct.Q4_1.gguf")
    PosixPath('/home/me/.cache/tl_keras/gguf/SmolLM2-135M-Instruct.Q4_1-3f2a91c0')
    """
    path = pathlib.Path(str(preset))
    if path.suffix.lower() != ".gguf":
        return preset
    if not path.is_file():
        raise FileNotFoundError(f"No such GGUF file: {path}")
    stat = path.resolve().stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    root = pathlib.Path(cache_dir or os.environ.get("TL_KERAS_CACHE") or pathlib.Path.home() / ".cache" / "tl_keras")
    folder = root / "gguf" / f"{path.stem}-{key}"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            convert_gguf(path, folder)
        except (FileExistsError, OSError):
            if not folder.is_dir():  # Another process converted it first otherwise.
                raise
    return folder
