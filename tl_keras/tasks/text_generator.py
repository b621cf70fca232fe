"""A decoder that answers prompts, fine-tuned on prompt → answer pairs.

`TextGenerator` holds KerasHub's causal LM for a Llama-family preset (a
`.gguf` file, a converted preset folder, a local Hugging Face Llama folder):
generation is KerasHub's own (`CausalLM.generate`, its KV cache and
samplers). Fine-tuning packs `start + prompt + answer + end` and weights the
loss on the answer's tokens and the end token only, so the model learns to
answer, not to repeat prompts; `lora:R` (the default), `partial:N` or `full`
choose what trains. Prompts are rendered with the preset's chat template
(`chat_template.jinja`, as `gguf.convert_gguf` writes it) unless
`chat=False`.

Example:
>>> generator = TextGenerator.from_preset("SmolLM2-135M-Instruct.Q4_1.gguf", strategy="lora:8")
>>> generator.fit(["Capital of France?"], ["Paris"], epochs=1)
>>> generator.generate(["Capital of France?"], max_new_tokens=8)
['Paris']
"""

import pathlib
import tempfile

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tl_keras.core.choices import GENERATOR_STRATEGY, parse_strategy
from tl_keras.core.progress import progress_bar
from tl_keras.export.generation import check_max_new_tokens, export_text_generator
from tl_keras.models.backbones import unfreeze_top_blocks
from tl_keras.models.decoders import CHATML, TEMPLATE_FILE, DecoderCausalLM, chat_template_of, load_causal_lm, render_chat
from tl_keras.models.gguf import gguf_preset
from tl_keras.tasks.base import TransferTask, read_task_config, refuse_overrides

SAMPLERS = ("greedy", "top_k", "top_p")


class TextGenerator(TransferTask):
    """Prompt in, text out: a KerasHub causal LM fine-tuned on answers.

    Args:
        causal_lm: a KerasHub `CausalLM` (with its preprocessor).
        strategy: `"lora:R"`, `"partial:N"` or `"full"` (what `fit` trains).
        sequence_length: the longest packed prompt + answer in training;
            longer pairs lose the prompt's start.
        chat: render prompts with `chat_template` as one user turn.
        chat_template: a Jinja2 chat template (ChatML if `None`).
        system_prompt: a system turn put before each prompt, or `None`.

    Example:
    >>> generator = TextGenerator(keras_hub.models.CausalLM.from_preset(folder), strategy="lora:4")
    """

    def __init__(self, causal_lm, strategy=GENERATOR_STRATEGY, sequence_length=512, chat=True, chat_template=None,
                 system_prompt=None):
        if not isinstance(causal_lm, keras_hub.models.CausalLM) or causal_lm.preprocessor is None:
            raise ValueError(f"`causal_lm` must be a KerasHub CausalLM with its preprocessor, received "
                             f"{type(causal_lm).__name__}.")
        self.strategy = parse_strategy(strategy)
        if self.strategy.kind == "frozen":
            raise ValueError("A frozen decoder generates as it was pretrained; `TextGenerator` trains with "
                             "'lora:R', 'partial:N' or 'full', received 'frozen'. Prompt the preset as it is with "
                             "`generate` before any `fit`.")
        if not isinstance(sequence_length, int) or sequence_length < 8:
            raise ValueError(f"`sequence_length` must be an integer >= 8, received {sequence_length!r}.")
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.preprocessor = causal_lm.preprocessor
        self.tokenizer = causal_lm.preprocessor.tokenizer
        self.sequence_length = sequence_length
        self.chat = bool(chat)
        self.chat_template = chat_template or CHATML
        self.system_prompt = system_prompt
        # A chat template opens each turn itself (SmolLM2's start token is its `<|im_start|>`).
        self.preprocessor.add_start_token = not self.chat
        self.name = "text_generator"
        self.trainable = True
        self._trained = False
        self._sampler = None  # The sampler name `causal_lm` was compiled with (compiling drops its traced loop).

    @classmethod
    def from_preset(cls, preset, strategy=None, sequence_length=None, chat=None, system_prompt=None):
        """A generator on a Llama-family preset: a `.gguf` file (converted
        once, `gguf.gguf_preset`), a preset folder, a Kaggle handle, a local
        Hugging Face Llama folder, or a folder `save_to_preset` wrote (it
        comes back whole: weights, strategy and prompt settings).

        Example:
        >>> TextGenerator.from_preset("presets/smollm2_qa").generate(["Who won Super Bowl 50?"])
        """
        preset = gguf_preset(preset)
        stored = read_task_config(preset, cls)
        causal_lm = load_causal_lm(preset)
        template = chat_template_of(preset)
        if stored is not None:
            refuse_overrides(preset, cls, sequence_length=sequence_length, chat=chat, system_prompt=system_prompt)
            return cls(causal_lm, strategy or stored["strategy"], stored["sequence_length"], stored["chat"],
                       template, stored["system_prompt"])
        return cls(causal_lm, strategy or GENERATOR_STRATEGY, sequence_length or 512,
                   True if chat is None else chat, template, system_prompt)

    def prompt(self, text):
        """`text` as the model reads it: a chat turn ending where the
        answer begins (or as given, with `chat=False`)."""
        if not self.chat:
            return str(text)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return render_chat(self.chat_template, messages + [{"role": "user", "content": str(text)}])

    def _ids(self, text):
        return [int(i) for i in keras.ops.convert_to_numpy(self.tokenizer(text))]

    def training_arrays(self, prompts, answers):
        """`(x, y, sample_weight)` of prompt → answer pairs: `start prompt
        answer end` packed to the longest pair's length (rounded up to 16),
        at most `sequence_length` (the prompt's start cut when too long);
        each position's target is the next token, weighted 1 on the answer
        and the end token and 0 on the prompt and padding."""
        if len(prompts) != len(answers) or not prompts:
            raise ValueError(f"`x` and `y` must be equally long and not empty, received {len(prompts)} prompts and "
                             f"{len(answers)} answers.")
        start = [self.tokenizer.start_token_id] if self.preprocessor.add_start_token else []
        end = self.tokenizer.end_token_id
        pairs = [(start + self._ids(self.prompt(p)), self._ids(str(a)) + [end]) for p, a in zip(prompts, answers)]
        longest = max(len(p) + len(a) for p, a in pairs)
        # One more than the inputs (targets are the inputs shifted by one), no wider than the longest pair needs.
        width = min(self.sequence_length, -(-longest // 16) * 16) + 1
        token_ids = np.zeros((len(prompts), width), "int32")
        weights = np.zeros((len(prompts), width), "float32")
        lengths = np.zeros(len(prompts), "int64")
        for row, (prompt_ids, answer_ids) in enumerate(pairs):
            answer_ids = answer_ids[:-1][: width - 2] + [end]
            prompt_ids = prompt_ids[-(width - len(answer_ids)):]
            ids = prompt_ids + answer_ids
            token_ids[row, :len(ids)] = ids
            lengths[row] = len(ids)
            weights[row, len(prompt_ids):len(ids)] = 1.0
        mask = np.arange(width - 1)[None, :] < (lengths[:, None] - 1)
        return {"token_ids": token_ids[:, :-1], "padding_mask": mask}, token_ids[:, 1:], weights[:, 1:]

    def _apply_strategy(self):
        if self.strategy.kind == "lora":
            if not any(getattr(layer, "lora_enabled", False) for layer in self.backbone._flatten_layers()):
                self.backbone.enable_lora(rank=self.strategy.value)
        elif self.strategy.kind == "partial":
            unfreeze_top_blocks(self.backbone, self.strategy.value)
        else:
            self.backbone.trainable = True

    def fit(self, x=None, y=None, batch_size=8, epochs=2, verbose=1, callbacks=None, validation_data=None,
            learning_rate=None, seed=1234):
        """Fine-tunes on prompt → answer pairs (the loss on the answers).

        Args:
            x, y: prompts and their answers (strings).
            batch_size, epochs, verbose, callbacks: as Keras' `fit`.
            validation_data: `(prompts, answers)` whose answer loss is
                scored each epoch, or `None`.
            learning_rate: AdamW's rate; `None` takes 5e-4 for LoRA
                weights and 5e-5 otherwise.
            seed: seeds the LoRA weights and the shuffling.

        Returns:
            A `keras.callbacks.History`.

        Example:
        >>> generator.fit(["Who won Super Bowl 50?"], ["Denver Broncos"], epochs=2)
        """
        keras.utils.set_random_seed(seed)
        self._apply_strategy()
        rate = learning_rate or (5e-4 if self.strategy.kind == "lora" else 5e-5)
        trainer = DecoderCausalLM(backbone=self.backbone, preprocessor=None)  # Takes packed arrays, shares weights.
        trainer.compile(optimizer=keras.optimizers.AdamW(rate, weight_decay=0.01),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="answer_token_accuracy")])
        inputs, targets, weights = self.training_arrays(list(x), list(y))
        data = tf.data.Dataset.from_tensor_slices((inputs, targets, weights)).shuffle(
            len(targets), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
        validation = None
        if validation_data is not None:
            validation = tf.data.Dataset.from_tensor_slices(
                self.training_arrays(list(validation_data[0]), list(validation_data[1]))).batch(batch_size)
        if verbose:
            pairs, passes = len(targets), "epoch" if epochs == 1 else "epochs"
            print(f"{self.strategy} fine-tuning on {pairs} prompt → answer pair{'' if pairs == 1 else 's'}, "
                  f"{epochs} {passes}", flush=True)
        history = trainer.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks or ()),
                              validation_data=validation, shuffle=False)  # The dataset shuffles itself.
        self._trained = True
        self._sampler = None  # New weights (LoRA factors) for the generation loop to trace.
        return history

    def generate(self, prompts, max_new_tokens=32, sampler="greedy", batch_size=8, seed=None, verbose=0):
        """Answers to `prompts`, the prompt itself left out.

        Args:
            prompts: strings.
            max_new_tokens: the most tokens an answer has.
            sampler: `"greedy"`, `"top_k"` (k = 10) or `"top_p"` (p = 0.9),
                KerasHub's samplers, or a `keras_hub.samplers.Sampler`.
            batch_size: prompts a generation pass takes.
            seed: the random samplers' seed.
            verbose: a progress bar (1) or none (0).

        Example:
        >>> generator.generate(["Who won Super Bowl 50?"], max_new_tokens=8)
        ['Denver Broncos']
        """
        check_max_new_tokens(max_new_tokens)
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS} or a keras_hub sampler, received {sampler!r}.")
        # Each compile traces the generation loop anew: greedy is kept between calls; seeded samplers and
        # sampler objects are compiled for each call.
        reused = "greedy" if sampler == "greedy" else None
        if reused is None or reused != self._sampler:
            if isinstance(sampler, str):
                sampler = {"greedy": lambda: keras_hub.samplers.GreedySampler(),
                           "top_k": lambda: keras_hub.samplers.TopKSampler(k=10, seed=seed),
                           "top_p": lambda: keras_hub.samplers.TopPSampler(p=0.9, seed=seed)}[sampler]()
            self.causal_lm.compile(sampler=sampler)
        self._sampler = reused
        texts = [self.prompt(text) for text in prompts]
        lengths = [len(self._ids(text)) + self.preprocessor.add_start_token for text in texts]
        # Shortest first, padded to multiples of 64: each padded length compiles
        # KerasHub's generation loop once, so few lengths keep compiling rare.
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        bar = progress_bar(len(prompts), "generating answers to", "prompt", verbose)
        answers = [None] * len(texts)
        for begin in range(0, len(order), batch_size):
            rows = order[begin:begin + batch_size]
            length = -(-(max(lengths[i] for i in rows) + max_new_tokens) // 64) * 64
            outputs = self.causal_lm.generate([texts[i] for i in rows], max_length=length, strip_prompt=True)
            for row, text in zip(rows, self.cut(outputs if isinstance(outputs, list) else [outputs], max_new_tokens)):
                answers[row] = text
            bar.add(len(rows))
        return answers

    def cut(self, texts, max_new_tokens):
        """Each generated text cut to `max_new_tokens` tokens (a short
        prompt in a batch of longer ones had room for more) and stripped."""
        cut = []
        for text in texts:
            ids = self._ids(text)
            if len(ids) > max_new_tokens:
                text = self.tokenizer.detokenize(ids[:max_new_tokens])
                text = text.numpy().decode("utf-8", "replace") if hasattr(text, "numpy") else str(text)
            cut.append(str(text).strip())
        return cut

    def task_config(self):
        return {"strategy": str(self.strategy), "sequence_length": self.sequence_length, "chat": self.chat,
                "system_prompt": self.system_prompt}

    def write_preset_parts(self, folder):
        self.causal_lm.save_to_preset(str(folder))
        (pathlib.Path(folder) / TEMPLATE_FILE).write_text(self.chat_template, encoding="utf-8")

    def merged(self):
        """This generator, or with LoRA a copy with the factors merged into
        the kernels (through a preset: Keras saves LoRA kernels merged)."""
        if self.strategy.kind != "lora":
            return self
        with tempfile.TemporaryDirectory() as folder:
            self.save_to_preset(pathlib.Path(folder) / "merged")
            return type(self).from_preset(pathlib.Path(folder) / "merged")

    def export(self, export_dir, model_name, version=None, warmup=(), card=None, max_new_tokens=64):
        """Exports a TF Serving SavedModel, atomically: `prompt` (raw
        strings) in, `text` out, generated greedily with the KV cache, at
        most `max_new_tokens` tokens (see `export.generation`). LoRA factors
        are merged first. The arguments are every task's `export`'s, then
        the generation bound.

        Args:
            export_dir: the base folder (TF Serving's `--model_base_path`'s parent).
            model_name: the model's folder under it (a plain name).
            version: the version number, or `None` for the next free one.
            warmup: prompts for TF Serving's warm-up requests (`"Hello"` if none).
            card: more entries for `model_card.json`.
            max_new_tokens: the most tokens one request generates.

        Example:
        >>> generator.export("exports", "answers", warmup=["Who won Super Bowl 50?"], max_new_tokens=32)
        PosixPath('exports/answers/1')
        """
        merged = self.merged()
        card = {"backbone": type(self.backbone).__name__, "strategy": str(self.strategy),
                "trained": self._trained, **(card or {})}
        return export_text_generator(merged.causal_lm, merged.prompt, export_dir, model_name, max_new_tokens,
                                     version, [str(p) for p in warmup] or ["Hello"], card)
