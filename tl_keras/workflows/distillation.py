"""The distillation job: a saved teacher classifier in, a smaller student
out, both scored on the same test rows (the teacher is the baseline the
student is measured against)."""

from tl_keras.data.texts import read_labelled_texts, read_texts, stratified_split
from tl_keras.evaluation.classification import summary_line
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.training.distribution import pick_distribution, set_precision
from tl_keras.training.runs import holding_run_folder, keep_trained_model
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import DistillationConfig  # noqa: F401  (the config of `run`)


@holding_run_folder
def run(config):
    """Distils `config.teacher` into a `config.num_blocks`-block student and
    scores both on the test rows. Returns a `RunResult` whose `task` is the
    student and whose `metrics` are `{"teacher": ..., "student": ...}`."""
    def read(path):
        return read_labelled_texts(path, config.text_column, config.label_column) if path else None

    train, test = read(config.train), read(config.test)
    if test is None:
        train, test = stratified_split(train, config.test_fraction, config.training.seed)
    unlabelled = read_texts(config.unlabelled, config.text_column) if config.unlabelled else []
    teacher = TextClassifier.from_preset(config.teacher)
    for rows in (train, test):
        teacher.vocabulary.encode(rows.labels, rows.origins)  # Unknown labels stop the run here, named.
    set_precision(config.runtime.precision)
    training = config.training
    student = teacher.distill(train.texts, train.labels, unlabelled, config.num_blocks, config.temperature,
                              config.hard_weight, training.epochs, training.batch_size, training.head_learning_rate,
                              training.seed, training.verbose, pick_distribution(config.runtime.distribute))
    with keep_trained_model(student, config.output_dir, "scoring"):
        metrics = {"teacher": teacher.evaluate_report(test.texts, test.labels, split="test"),
                   "student": student.evaluate_report(test.texts, test.labels, split="test"),
                   "blocks": {"teacher": len(teacher.backbone.transformer_layers), "student": config.num_blocks}}

    def export(folder, card):
        return student.export(folder, config.output.model_name, warmup=test.texts[:5],
                              quantize=config.quantize or None, card={"teacher": str(config.teacher), **card})

    return finish(RunResult(student, metrics), config, lambda folder: [], export)


def describe(result):
    """The run's closing lines: teacher and student on the test rows."""
    lines = [f"{name:>8}: {summary_line(result.metrics[name])}" for name in ("teacher", "student")]
    return "\n".join(lines + result.written())
