"""The generation job end to end: prompt → answer pairs in, the decoder
prompted as it is beside the same decoder fine-tuned (exact match and F1
on validation and test), a preset and a generation SavedModel out, over
`TextGenerator`.

Data flows one way: read → train / validation / test split → generator
from the preset → the baseline's answers (before any training) → fit (the
loss on the answers; the validation pairs' answer loss each epoch) → the
fine-tuned answers → report → export.
"""

import json

import keras

from tl_keras.core.files import write_atomically
from tl_keras.data.texts import read_labelled_texts
from tl_keras.evaluation.squad import answer_scores, plot_answer_scores
from tl_keras.tasks.text_generator import TextGenerator
from tl_keras.training.runs import holding_run_folder, keep_trained_model
from tl_keras.workflows.common import RunResult, finish, three_way_split
from tl_keras.workflows.configs import TextGenerationConfig  # noqa: F401  (the config of `run`)

SPLITS = ("validation", "test")


def read_pair_splits(config):
    """`(train, validation, test)` `LabelledTexts` of prompts (`texts`) and
    answers (`labels`): files given are used as they are, the rest is held
    out of `train` at random; `max_train_examples` keeps the first pairs."""
    def read(path):
        return read_labelled_texts(path, config.prompt_column, config.answer_column) if path else None

    train, validation, test = three_way_split(
        read(config.train), read(config.splits.validation), read(config.splits.test),
        config.splits.validation_fraction, config.splits.test_fraction, config.training.seed, stratify=False)
    if config.max_train_examples:
        train = train.subset(range(min(config.max_train_examples, len(train))))
    return train, validation, test


@holding_run_folder
def run(config, callbacks=()):
    """Scores the preset prompted as it is, fine-tunes it on the training
    pairs, scores it again and (optionally) saves and exports it; see
    `TextGenerationConfig`. Returns a `RunResult` whose `metrics` are
    `{"validation": ..., "test": ..., "prompted": {"validation": ...,
    "test": ...}}` (exact match and F1 x 100, SQuAD's normalisation)."""
    train, validation, test = read_pair_splits(config)
    rows = dict(zip(SPLITS, (validation, test)))
    print(f"prompt → answer pairs: {len(train)} train, {len(validation)} validation, {len(test)} test")
    keras.utils.set_random_seed(config.training.seed)
    generator = TextGenerator.from_preset(config.backbone, config.strategy, config.sequence_length,
                                          system_prompt=config.system_prompt)
    training = config.training

    def answer(split, stage):
        if training.verbose:
            print(f"{split} answers, {stage}:", flush=True)
        return generator.generate(rows[split].texts, config.max_new_tokens, batch_size=training.batch_size,
                                  verbose=training.verbose)

    def scored(answers):
        return {split: {"split": split, **answer_scores(answers[split], rows[split].labels)} for split in SPLITS}

    prompted = {split: answer(split, "the preset prompted as it is") for split in SPLITS}
    history = generator.fit(train.texts, train.labels, training.batch_size, training.epochs, training.verbose,
                            callbacks, (validation.texts, validation.labels), training.backbone_learning_rate,
                            training.seed).history
    with keep_trained_model(generator, config.output_dir, "scoring"):
        tuned = {split: answer(split, "fine-tuned") for split in SPLITS}
        metrics = {**scored(tuned), "prompted": scored(prompted)}

    def write_reports(folder):
        answers = folder / "test_answers.jsonl"
        write_atomically(answers, "".join(
            json.dumps({"prompt": prompt, "answer": gold, "prompted": before, "fine_tuned": after}) + "\n"
            for prompt, gold, before, after in zip(test.texts, test.labels, prompted["test"], tuned["test"])))
        return [answers, plot_answer_scores(metrics, history, folder / "answers.png")]

    return finish(RunResult(generator, metrics, history), config, write_reports,
                  lambda folder, card: generator.export(folder, config.output.model_name, warmup=validation.texts[:2],
                                                        max_new_tokens=config.max_new_tokens,
                                                        card={"backbone": str(config.backbone), **card}))


def describe(result):
    """The closing lines: each split's exact match and F1, fine-tuned and
    prompted."""
    metrics = result.metrics
    lines = [f"{split}: exact match {metrics[split]['exact_match']:.1f}, F1 {metrics[split]['f1']:.1f} "
             f"({metrics[split]['examples']} pairs; prompted before training: exact match "
             f"{metrics['prompted'][split]['exact_match']:.1f}, F1 {metrics['prompted'][split]['f1']:.1f})"
             for split in SPLITS]
    return "\n".join(lines + result.written())
