"""A decoder (SmolLM2-135M-Instruct, from its offline GGUF file) beside the
encoder (MiniLM-L6) on the bundled amazon review sentences, and beside
the baseline a user tries first: prompting the instruct model, zero- and
few-shot, its answer constrained to the label words
(`PromptedClassifier`).

The 800 sentences are split once (seed 1234): a stratified 20% test set
(160), then 20% of the rest for validation (128), 512 for training. Every
setting below was fixed before the runs (none was chosen on these
figures); validation and test are both printed, and the test split
decides nothing. Seconds are training plus scoring both splits.

    .venv/bin/python benchmarks/decoder_classification.py

`--data` takes one category of the four-category product reviews
(`amazon_multi_domain/<category>.tsv`, 1,600 reviews; never committed):
a stratified 25% test set (400), 20% of the rest for validation (240),
960 to train, at 256 tokens (the truncation `amazon_domains.py` chose on
source validation for MiniLM; the same cut for SmolLM2's tokens):

    .venv/bin/python benchmarks/decoder_classification.py --data /path/to/kitchen.tsv \
        --sequence-length 256 --test-fraction 0.25 --lora-epochs 2 --only zero-shot frozen lora partial
"""

import argparse
import time

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.offline import minilm_l6_offline_path, smollm2_offline_path
from tl_keras.data.texts import read_labelled_texts, stratified_split
from tl_keras.models.gguf import gguf_preset
from tl_keras.tasks.prompted_classifier import PromptedClassifier
from tl_keras.tasks.text_classifier import TextClassifier

INSTRUCTION = "Is this product review positive or negative? Answer with one word."
WORDS = {"0": "negative", "1": "positive"}


def accuracy(predicted, labels):
    return sum(str(p) == str(t) for p, t in zip(predicted, labels)) / len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=4, help="few-shot examples (half of each class)")
    parser.add_argument("--lora-epochs", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=48, help="the longest sentence has 38 tokens")
    parser.add_argument("--data", default=str(common.REVIEWS), help="a `text<TAB>label` file (the bundled sentences)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="the stratified test share")
    parser.add_argument("--cache", default="runs/decoder_classification", help="where the GGUF file is converted")
    parser.add_argument("--only", nargs="*", help="run only rows whose name contains one of these")
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help="cut each prompted text to its first N tokens (default: whole texts)")
    args = parser.parse_args()

    rest, test = stratified_split(read_labelled_texts(args.data), args.test_fraction, seed=1234)
    train, validation = stratified_split(rest, 0.2, seed=1234)
    print(f"train {len(train.texts)}, validation {len(validation.texts)}, test {len(test.texts)}", flush=True)
    labels = sorted(set(train.labels))
    smollm2 = gguf_preset(smollm2_offline_path(), args.cache)
    examples = []
    for label in labels:
        examples += [(t, l) for t, l in zip(train.texts, train.labels) if l == label][:args.shots // 2]
    examples.sort(key=lambda pair: train.texts.index(pair[0]))  # Classes interleaved as they come.

    def prompted(shots):
        def run():
            classifier = PromptedClassifier.from_preset(smollm2, labels, INSTRUCTION, [WORDS[l] for l in labels],
                                                        examples[:shots], max_text_tokens=args.prompt_tokens)
            return classifier.predict_labels
        return run

    def trained(preset, strategy, epochs, **settings):
        def run():
            classifier = TextClassifier.from_preset(preset, labels=labels, strategy=strategy,
                                                    sequence_length=args.sequence_length)
            classifier.fit(train.texts, train.labels, epochs=epochs, batch_size=16, verbose=0, seed=1234,
                           **settings)
            return classifier.predict_labels
        return run

    cut = f", texts cut to {args.prompt_tokens} tokens" if args.prompt_tokens else ""
    runs = [
        (f"SmolLM2-135M-Instruct, zero-shot prompt{cut}", prompted(0)),
        (f"SmolLM2-135M-Instruct, {args.shots}-shot prompt{cut}", prompted(args.shots)),
        ("SmolLM2-135M frozen (last token), head 30 epochs", trained(smollm2, "frozen", 30)),
        (f"SmolLM2-135M lora:8, {args.lora_epochs} epochs", trained(smollm2, "lora:8", args.lora_epochs)),
        ("MiniLM-L6 frozen (mean), head 30 epochs", trained(minilm_l6_offline_path(), "frozen", 30)),
        ("MiniLM-L6 partial:2 (the recipe's default), 4 epochs", trained(minilm_l6_offline_path(), "partial:2", 4)),
        (f"MiniLM-L6 lora:8, {args.lora_epochs} epochs", trained(minilm_l6_offline_path(), "lora:8", args.lora_epochs)),
    ]
    rows = []
    for name, run in runs:
        if args.only and not any(part in name for part in args.only):
            continue
        started = time.perf_counter()
        predict = run()
        scores = [accuracy(predict(split.texts), split.labels) for split in (validation, test)]
        rows.append((name, *scores, time.perf_counter() - started))
        print(rows[-1], flush=True)
    print("\n| model | validation acc | test acc | seconds |\n| --- | --- | --- | --- |")
    for name, val_acc, test_acc, seconds in rows:
        print(f"| {name} | {val_acc:.3f} | {test_acc:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
