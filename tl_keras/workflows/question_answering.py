"""The extractive question answering job end to end: a SQuAD file in, the
reader's SQuAD scores beside the lexical baseline's, a preset and a
SavedModel out, over `QuestionAnswerer`.

Data flows one way: read → split by article (train / validation / test,
no article in two) → lexical baseline (its variant chosen on validation) →
reader from the preset → fit (SQuAD F1 on validation each epoch; the best
epoch kept) → validation and test scores → report → export.
"""

import dataclasses
import pathlib

import keras

from tl_keras.core.files import write_json
from tl_keras.data.squad import read_squad, split_by_article
from tl_keras.evaluation.squad import plot_squad_scores, squad_scores
from tl_keras.models.lexical_qa import LexicalAnswerer
from tl_keras.tasks.question_answering import QuestionAnswerer
from tl_keras.training.runs import holding_run_folder, keep_trained_model, run_fingerprint
from tl_keras.training.trainer import prepare_distributed_training
from tl_keras.workflows.common import RunResult, distribution_card, finish
from tl_keras.workflows.configs import QuestionAnsweringConfig  # noqa: F401  (the config of `run`)


def read_question_splits(config):
    """`(train, validation, test)` `Question` lists for a config: files
    given are used as they are, the rest is held out of `train` by article."""
    train = read_squad(config.train)
    validation = read_squad(config.splits.validation) if config.splits.validation else None
    test = read_squad(config.splits.test) if config.splits.test else None
    if test is None and validation is None:
        shares = (1 - config.splits.validation_fraction - config.splits.test_fraction, config.splits.validation_fraction,
                  config.splits.test_fraction)
        train, validation, test = split_by_article(train, shares, config.training.seed)
    elif test is None or validation is None:
        share = config.splits.test_fraction if test is None else config.splits.validation_fraction
        train, held_out = split_by_article(train, (1 - share, share), config.training.seed)
        validation, test = (validation, held_out) if test is None else (held_out, test)
    if config.max_train_questions:
        train = train[: config.max_train_questions]
    return train, validation, test


def lexical_baseline(validation, test):
    """The lexical baseline's scores: its span and its whole-sentence
    answers on both splits, and the variant with the higher validation F1
    as `"chosen"` (scored on the test)."""
    baseline = LexicalAnswerer()
    scores = {
        variant: {"validation": squad_scores(predict(validation), validation),
                  "test": squad_scores(predict(test), test)}
        for variant, predict in (("span", baseline.predict), ("sentence", baseline.predict_sentences))
    }
    chosen = max(scores, key=lambda variant: scores[variant]["validation"]["f1"])
    return {**scores, "chosen": chosen}


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) saves and exports an extractive
    question answerer; see `QuestionAnsweringConfig`. Returns a `RunResult`
    whose `metrics` are `{"validation": ..., "test": ..., "lexical": ...}`."""
    train, validation, test = read_question_splits(config)
    print(f"questions: {len(train)} train, {len(validation)} validation, {len(test)} test "
          f"({len({q.title for q in train})}, {len({q.title for q in validation})} and "
          f"{len({q.title for q in test})} articles)")
    lexical = lexical_baseline(validation, test)
    output_dir = pathlib.Path(config.output_dir)
    distribution, training = prepare_distributed_training(
        config.training, output_dir, config.runtime.distribute, config.runtime.precision, config.resume, distribution,
        fingerprint=run_fingerprint(config), fresh=config.fresh)
    keras.utils.set_random_seed(config.training.seed)
    with distribution.scope():
        reader = QuestionAnswerer.from_preset(
            config.backbone, config.strategy, config.sequence_length, config.doc_stride,
            config.max_question_length, config.max_answer_length, config.no_answer_threshold)
    history = reader.fit(train, validation_data=validation, distribution=distribution, callbacks=callbacks,
                         **dataclasses.asdict(training)).history
    with keep_trained_model(reader, output_dir, "scoring"):
        test_predictions = reader.predictions(test)
        metrics = {"validation": reader.evaluate_report(validation, split="validation"),
                   "test": {"split": "test", **squad_scores(test_predictions, test)}, "lexical": lexical}

    def write_reports(folder):
        write_json(folder / "test_predictions.json", test_predictions)
        return [folder / "test_predictions.json", plot_squad_scores(metrics, history, folder / "squad.png")]

    result = RunResult(reader, metrics, history)
    return finish(result, config, write_reports,
                  lambda folder, card: reader.export(folder, config.output.model_name, card={
                      "backbone": str(config.backbone), **card},
                      warmup=[(q.question, q.context) for q in validation[:3]]),
                  distribution_card(distribution))


def describe(result):
    """The closing lines: the reader's and the lexical baseline's scores."""
    metrics, lexical = result.metrics, result.metrics["lexical"]
    lines = [f"{split}: F1 {metrics[split]['f1']:.1f}, exact match {metrics[split]['exact_match']:.1f} "
             f"({metrics[split]['questions']} questions; lexical baseline F1 "
             f"{lexical[lexical['chosen']][split]['f1']:.1f})" for split in ("validation", "test")]
    return "\n".join(lines + result.written())
