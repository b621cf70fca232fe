"""Zero- and few-shot classification by prompting an instruct decoder: the
baseline a user tries before training anything.

Each text is put in the model's own chat template (after an instruction
and, few-shot, solved examples as earlier turns); each label's answer word
is scored by its log-probability as the assistant's reply, and the label
whose word is likeliest wins. Nothing is generated as free text, so every
answer is a label. Nothing trains either: this is a plain object, not a
Keras model, and has no `fit`.

The template is rendered by Jinja2's sandbox (as Hugging Face renders chat
templates), so a template from a downloaded file cannot reach Python.
"""


import keras
import keras_hub
import numpy as np

from tl_keras.models.decoders import CHATML, chat_template_of, render_chat
from tl_keras.models.gguf import gguf_preset

class PromptedClassifier:
    """Classifies texts by asking an instruct decoder, constrained to the
    label words.

    Args:
        causal_lm: a KerasHub `CausalLM` (its backbone and tokenizer).
        labels: the class names.
        instruction: the user turn before each text, as
            `"Is this review positive or negative?"`.
        label_words: the answer word of each label (default: the labels).
        examples: few-shot `(text, label)` pairs, shown as solved turns.
        chat_template: a Jinja chat template (default: ChatML).
        max_text_tokens: keep each text's (and each example's) first this
            many tokens, as a trained classifier's `sequence_length` does
            (`None`: whole texts; a 1,000-token review costs ten times a
            100-token one).

    Example:
    >>> prompted = PromptedClassifier.from_preset("presets/smollm2_135m", ["negative", "positive"],
    ...                                           "Is this product review positive or negative?")
    >>> prompted.predict_labels(["Works great."])
    ['positive']
    """

    def __init__(self, causal_lm, labels, instruction, label_words=None, examples=(), chat_template=None,
                 max_text_tokens=None):
        if max_text_tokens is not None and (isinstance(max_text_tokens, bool) or not isinstance(max_text_tokens, int)
                                            or max_text_tokens < 1):
            raise ValueError(f"`max_text_tokens` must be a whole number >= 1 or None, received {max_text_tokens!r}.")
        self.max_text_tokens = max_text_tokens
        self.labels = [str(label) for label in labels]
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"`labels` must name two or more distinct classes, received {labels!r}.")
        self.label_words = [str(word) for word in (label_words or self.labels)]
        if len(self.label_words) != len(self.labels):
            raise ValueError(f"`label_words` must give one word a label ({len(self.labels)}), received "
                             f"{label_words!r}.")
        unknown = sorted({str(label) for _, label in examples} - set(self.labels))
        if unknown:
            raise ValueError(f"`examples` use labels that are not in `labels`: {unknown}.")
        self.causal_lm = causal_lm
        self.tokenizer = causal_lm.preprocessor.tokenizer
        self.instruction = instruction
        self.examples = [(str(text), str(label)) for text, label in examples]
        self.chat_template = chat_template or CHATML
        self._answers = [self._ids(word) for word in self.label_words]
        if any(not ids for ids in self._answers):
            raise ValueError(f"Every label word must have tokens, received {self.label_words!r}.")

    @classmethod
    def from_preset(cls, preset, labels, instruction, label_words=None, examples=(), max_text_tokens=None):
        """Loads the causal LM of `preset` (and the `chat_template.jinja`
        beside it, as `gguf.convert_gguf` writes) and builds the classifier.

        Args:
            preset: a causal-LM preset folder or handle, or a `.gguf` file
                (converted once, `gguf.gguf_preset`).
            labels, instruction, label_words, examples, max_text_tokens: as
                for the class.
        """
        preset = gguf_preset(preset)
        causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
        return cls(causal_lm, labels, instruction, label_words, examples, chat_template_of(preset), max_text_tokens)

    def _ids(self, text):
        return [int(i) for i in keras.ops.convert_to_numpy(self.tokenizer(text))]

    def truncated(self, text):
        """`text` cut to its first `max_text_tokens` tokens (whole if it is
        shorter or there is no cap)."""
        if self.max_text_tokens is None:
            return text
        ids = self._ids(text)
        return text if len(ids) <= self.max_text_tokens else self.tokenizer.detokenize(ids[:self.max_text_tokens])

    def prompt(self, text):
        """The chat prompt for `text`: the few-shot turns, then the
        instruction with the text, ending where the answer begins (texts
        cut to `max_text_tokens`)."""
        messages = []
        for example, label in self.examples:
            messages.append({"role": "user", "content": f"{self.instruction}\n\n{self.truncated(example)}"})
            messages.append({"role": "assistant", "content": self.label_words[self.labels.index(label)]})
        messages.append({"role": "user", "content": f"{self.instruction}\n\n{self.truncated(text)}"})
        return render_chat(self.chat_template, messages)

    def answer_log_probabilities(self, texts, batch_size=16):
        """`(len(texts), len(labels))` summed log-probabilities of each
        label word as the reply to each text's prompt."""
        backbone = self.causal_lm.backbone
        # One-token label words are all scored from one pass over the prompt;
        # longer ones need a pass each, with the word appended.
        single = all(len(answer) == 1 for answer in self._answers)
        answers = [[]] if single else self._answers
        sequences, spans = [], []
        for text in texts:
            prompt = self._ids(self.prompt(text))
            for answer in answers:
                sequences.append(prompt + answer)
                spans.append((len(prompt), max(len(answer), 1)))
        scores = np.zeros((len(sequences), len(self._answers)) if single else len(sequences))
        # Batches of similar lengths: reviews run from 20 to 1,000+ tokens, and
        # each batch is padded to its longest prompt.
        order = sorted(range(len(sequences)), key=lambda index: len(sequences[index]))
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = [sequences[index] for index in indices]
            width = -(-max(len(ids) for ids in batch) // 16) * 16  # Few distinct shapes, so few compilations.
            token_ids = np.zeros((len(batch), width), "int32")
            mask = np.zeros((len(batch), width), bool)
            for row, ids in enumerate(batch):
                token_ids[row, :len(ids)], mask[row, :len(ids)] = ids, True
            hidden = backbone.predict_on_batch({"token_ids": token_ids, "padding_mask": mask})
            for row, (index, ids) in enumerate(zip(indices, batch)):
                begin, count = spans[index]
                # The token at position p is predicted by the output at p - 1.
                logits = backbone.token_embedding(hidden[row, begin - 1:begin - 1 + count], reverse=True)
                log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(keras.ops.cast(logits, "float32")))
                if single:
                    scores[index] = log_probs[0, [answer[0] for answer in self._answers]]
                else:
                    scores[index] = log_probs[np.arange(count), ids[begin:begin + count]].sum()
        return scores.reshape(len(texts), len(self._answers))

    def predict(self, texts, batch_size=16):
        """Label probabilities: a softmax over the label words' scores."""
        scores = self.answer_log_probabilities(list(texts), batch_size)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    def predict_labels(self, texts, batch_size=16):
        """The likeliest label of each text."""
        return [self.labels[i] for i in self.predict(texts, batch_size).argmax(axis=1)]
