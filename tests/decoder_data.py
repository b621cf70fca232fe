"""Tiny Llama-architecture decoders written as llama.cpp writes them (GGUF,
query/key rows permuted per head, quantised blocks) and as Hugging Face
writes them (config.json, model.safetensors, tokenizer.json), and a numpy
float64 forward pass that reads the stored tensors directly: the
independent reference the converters are checked against."""

import json

import numpy as np

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "Ġ t", "Ġt he"]
CONFIG = dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2, intermediate_dim=128,
              rope_max_wavelength=10000.0, layer_norm_epsilon=1e-5)


PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP_LEVEL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(name):
    """llama.cpp's name for a Hugging Face Llama tensor."""
    if not name.startswith("model.layers."):
        return TOP_LEVEL[name]
    layer, part = name[len("model.layers."):].split(".", 1)
    return f"blk.{layer}.{PARTS[part.removesuffix('.weight')]}.weight"


def byte_symbols():
    """GPT-2's byte-to-character table (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def tokens():
    """The vocabulary in id order: control tokens, bytes, merged pieces."""
    return SPECIAL + byte_symbols() + [merge.replace(" ", "") for merge in MERGES]


def random_weights(seed, tied=True):
    """Hugging Face-layout (out, in) weights of a tiny Llama."""
    rng = np.random.default_rng(seed)
    width, ffn = CONFIG["hidden_dim"], CONFIG["intermediate_dim"]
    head_dim = width // CONFIG["num_query_heads"]
    kv = CONFIG["num_key_value_heads"] * head_dim
    weights = {"model.embed_tokens.weight": rng.normal(0, 0.5, (len(tokens()), width)),
               "model.norm.weight": rng.uniform(0.5, 1.5, width)}
    if not tied:
        weights["lm_head.weight"] = rng.normal(0, 0.3, (len(tokens()), width))
    for layer in range(CONFIG["num_layers"]):
        prefix = f"model.layers.{layer}."
        for name, shape in [("self_attn.q_proj", (width, width)), ("self_attn.k_proj", (kv, width)),
                            ("self_attn.v_proj", (kv, width)), ("self_attn.o_proj", (width, width)),
                            ("mlp.gate_proj", (ffn, width)), ("mlp.up_proj", (ffn, width)),
                            ("mlp.down_proj", (width, ffn))]:
            weights[prefix + name + ".weight"] = rng.normal(0, 0.6 / np.sqrt(shape[1]), shape)
        weights[prefix + "input_layernorm.weight"] = rng.uniform(0.5, 1.5, width)
        weights[prefix + "post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, width)
    return {name: value.astype(np.float32) for name, value in weights.items()}


def llama_cpp_permute(rows, heads):
    """llama.cpp's converter's query/key row order (adjacent rotary pairs)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def write_gguf(path, weights, quantisation="Q8_0"):
    """Writes `weights` as llama.cpp would: GGUF names, permuted query/key
    rows, matrices in `quantisation` (vectors stay F32)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(CONFIG["num_layers"])
    writer.add_context_length(256)
    writer.add_embedding_length(CONFIG["hidden_dim"])
    writer.add_feed_forward_length(CONFIG["intermediate_dim"])
    writer.add_head_count(CONFIG["num_query_heads"])
    writer.add_head_count_kv(CONFIG["num_key_value_heads"])
    writer.add_rope_freq_base(CONFIG["rope_max_wavelength"])
    writer.add_layer_norm_rms_eps(CONFIG["layer_norm_epsilon"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens())
    writer.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens()) - len(SPECIAL)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    for name, value in weights.items():
        target = gguf_name(name)
        if target.endswith("attn_q.weight"):
            value = llama_cpp_permute(value, CONFIG["num_query_heads"])
        if target.endswith("attn_k.weight"):
            value = llama_cpp_permute(value, CONFIG["num_key_value_heads"])
        if value.ndim == 2 and quantisation != "F32":
            kind = gguf.GGMLQuantizationType[quantisation]
            writer.add_tensor(target, gguf.quants.quantize(value, kind), raw_dtype=kind)
        else:
            writer.add_tensor(target, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_hugging_face_folder(folder, weights):
    """A local Hugging Face Llama folder: config.json, model.safetensors and
    tokenizer.json, holding `weights` as stored (no permutation)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(tokens()),
              "hidden_size": CONFIG["hidden_dim"], "intermediate_size": CONFIG["intermediate_dim"],
              "num_hidden_layers": CONFIG["num_layers"], "num_attention_heads": CONFIG["num_query_heads"],
              "num_key_value_heads": CONFIG["num_key_value_heads"], "rope_theta": CONFIG["rope_max_wavelength"],
              "rms_norm_eps": CONFIG["layer_norm_epsilon"], "tie_word_embeddings": "lm_head.weight" not in weights,
              "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "max_position_embeddings": 256,
              "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(weights, str(folder / "model.safetensors"))
    vocabulary = {token: index for index, token in enumerate(tokens())}
    tokenizer = {"version": "1.0",
                 "added_tokens": [{"id": index, "content": token, "special": True, "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False}
                                  for index, token in enumerate(SPECIAL)],
                 "model": {"type": "BPE", "vocab": vocabulary, "merges": MERGES}}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": SPECIAL[1], "eos_token": SPECIAL[2]}))
    return folder


def gguf_tensors(path):
    """The file's tensors, dequantised by the GGUF project's reader, in
    (out, in) order, as float64."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {tensor.name: np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float64).reshape(
        tuple(int(n) for n in reversed(tensor.shape))) for tensor in reader.tensors}


def _rms_norm(x, scale, epsilon):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon) * scale


def reference_logits(tensors, token_ids, config, rotary="adjacent"):
    """Next-token logits at every position of `token_ids`, by a plain numpy
    float64 Llama forward pass over GGUF-named `tensors`. `rotary` is
    `"adjacent"` for llama.cpp's permuted rows (pairs 2i, 2i+1 rotate) or
    `"halves"` for Hugging Face rows (i and i + head_dim/2 rotate)."""
    heads, kv_heads = config["num_query_heads"], config["num_key_value_heads"]
    width = tensors["token_embd.weight"].shape[1]
    head_dim, length = width // heads, len(token_ids)
    epsilon = config["layer_norm_epsilon"]
    frequencies = config["rope_max_wavelength"] ** (-np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(length)[:, None] * frequencies[None, :]
    cos, sin = np.cos(angles), np.sin(angles)

    def rotate(x):  # (length, heads, head_dim)
        if rotary == "adjacent":
            even, odd = x[..., 0::2], x[..., 1::2]
            out = np.empty_like(x)
            out[..., 0::2] = even * cos[:, None] - odd * sin[:, None]
            out[..., 1::2] = even * sin[:, None] + odd * cos[:, None]
            return out
        first, second = x[..., :head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([first * cos[:, None] - second * sin[:, None],
                               second * cos[:, None] + first * sin[:, None]], axis=-1)

    x = tensors["token_embd.weight"][token_ids]
    causal = np.tril(np.ones((length, length), bool))
    for layer in range(config["num_layers"]):
        weight = {name.split(".", 2)[2].removesuffix(".weight"): value for name, value in tensors.items()
                  if name.startswith(f"blk.{layer}.")}
        h = _rms_norm(x, weight["attn_norm"], epsilon)
        q = rotate((h @ weight["attn_q"].T).reshape(length, heads, head_dim))
        k = rotate((h @ weight["attn_k"].T).reshape(length, kv_heads, head_dim))
        v = (h @ weight["attn_v"].T).reshape(length, kv_heads, head_dim)
        k, v = (np.repeat(t, heads // kv_heads, axis=1) for t in (k, v))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim)
        scores = np.where(causal[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = np.einsum("hqk,khd->qhd", scores / scores.sum(-1, keepdims=True), v).reshape(length, width)
        x = x + attention @ weight["attn_output"].T
        h = _rms_norm(x, weight["ffn_norm"], epsilon)
        gate = h @ weight["ffn_gate"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ weight["ffn_up"].T)) @ weight["ffn_down"].T
    x = _rms_norm(x, tensors["output_norm.weight"], epsilon)
    return x @ tensors.get("output.weight", tensors["token_embd.weight"]).T


def hugging_face_as_gguf_names(weights):
    """Hugging Face tensors under the GGUF names `reference_logits` reads
    (no permutation: use `rotary="halves"`)."""
    return {gguf_name(name): value.astype(np.float64) for name, value in weights.items()}


def greedy_reference(tensors, prompt_ids, steps, config, rotary="adjacent"):
    """`steps` greedy next tokens after `prompt_ids` by `reference_logits`."""
    ids = list(prompt_ids)
    for _ in range(steps):
        ids.append(int(np.argmax(reference_logits(tensors, ids, config, rotary)[-1])))
    return ids[len(prompt_ids):]
