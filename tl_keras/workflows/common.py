"""What every workflow shares: one result type and one ending (reports,
model card, preset and export, written by the chief worker only, with the
trained model kept if a late step fails)."""

import dataclasses
import pathlib
from typing import Optional, Union

import keras
import tensorflow as tf

from tl_keras.core.files import write_json
from tl_keras.data.texts import DataError, stratified_split
from tl_keras.evaluation.classification import summary_line, write_report
from tl_keras.evaluation.explanations import most_confident_errors, write_explanations
from tl_keras.evaluation.privacy_audit import membership_audit
from tl_keras.tasks.base import TransferTask
from tl_keras.training.distribution import WorkerOutput, global_batch_size, is_chief
from tl_keras.training.runs import keep_trained_model, run_fingerprint
from tl_keras.training.trainer import predict_through_cache, prepare_distributed_training
from tl_keras.transfer.feature_cache import FeatureCache


@dataclasses.dataclass
class RunResult:
    """What a workflow produced.

    Args:
        task: the trained task (`TextClassifier`, `ImageClassifier`,
            `Retrieval`, `QuestionAnswerer`: a `TransferTask`), or `None`
            for a run whose product is a backbone preset (continued
            pretraining: see `preset_path`). A model ensemble, which is
            several tasks side by side, is a `keras.Model`.
        metrics: figures by split (`"validation"`, `"test"`) or by method,
            as written to `metrics.json`.
        history: per-epoch training metrics (with a `"phase"` list).
        report_paths: the files written to the output folder.
        export_path: the SavedModel version folder, or `None`.
        preset_path: the saved preset, or `None`.
        alternatives: other models the run made, by name (the fusions).

    Example:
    >>> result = run(TextClassificationConfig(train="reviews.tsv", backbone=b, output_dir="runs/r"))
    >>> result.task.predict_labels(["great phone"]), result.metrics["test"]["accuracy"]
    """

    task: Optional[Union[TransferTask, keras.Model]]
    metrics: dict
    history: dict = dataclasses.field(default_factory=dict)
    report_paths: list = dataclasses.field(default_factory=list)
    export_path: Optional[pathlib.Path] = None
    preset_path: Optional[pathlib.Path] = None
    alternatives: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.task is not None and not isinstance(self.task, (TransferTask, keras.Model)):
            raise TypeError(f"`task` must be a trained task, a Keras model or None, received {type(self.task)!r}.")

    def written(self):
        """Closing lines naming what the run wrote: reports, preset, export."""
        lines = [f"wrote {path}" for path in self.report_paths]
        if self.preset_path:
            lines.append(f"preset: {self.preset_path}")
        if self.export_path:
            lines.append(f"SavedModel: {self.export_path}")
        return lines


def three_way_split(train_rows, validation_rows, test_rows, validation_fraction, test_fraction, seed, stratify):
    """`(train, validation, test)` rows: files given for validation or test
    are used as they are; the rest is held out of `train_rows` (stratified
    by label when `stratify`), the test part first. Validation picks epochs
    and settings; test is scored once at the end."""
    rows = len(train_rows)
    if test_rows is None:
        train_rows, test_rows = stratified_split(train_rows, test_fraction, seed, stratify=stratify)
    if validation_rows is None:
        train_rows, validation_rows = stratified_split(train_rows, validation_fraction, seed, stratify=stratify)
    empty = [name for name, part in (("training", train_rows), ("validation", validation_rows), ("test", test_rows))
             if not len(part)]
    if empty:  # Caught here, before training, instead of as an empty array afterwards.
        where = getattr(train_rows, "origins", None)
        source = str(where[0]).rsplit(":", 1)[0] if where else "the training file"
        raise DataError(f"{source}: {rows} rows leave no {' and no '.join(empty)} rows after holding out "
                        f"test_fraction {test_fraction:g} and validation_fraction {validation_fraction:g} "
                        "(by label); give more rows, or --validation and --test files.")
    return train_rows, validation_rows, test_rows


def finish(result, config, write_reports, export=None, card=None):
    """Ends a run the same way in every workflow: `metrics.json` gets the
    metrics and history, `write_reports(folder)` writes the reports (and
    returns their paths), the preset is saved, and `export(folder, card)`
    exports the task. Only the chief keeps what it writes; the other workers
    write to removed temporary folders. If any of these steps fails, the
    trained model's weights are saved to the output folder first
    (`keep_trained_model`).

    Returns:
        `result` with `report_paths`, `export_path` and `preset_path` set.
    """
    output_dir = pathlib.Path(config.output_dir)
    with WorkerOutput(output_dir) as folder:
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with keep_trained_model(result.task, output_dir, "writing the reports"):
            write_json(folder / "metrics.json", {"metrics": result.metrics, "history": result.history})
            result.report_paths = [folder / "metrics.json", *write_reports(folder)]
    card = {"config": dataclasses.asdict(config), "metrics": result.metrics, **(card or {})}
    output = getattr(config, "output", None)  # Continued pretraining has no `OutputConfig`.
    if getattr(output, "save_preset", None):
        preset = pathlib.Path(output.save_preset)
        with WorkerOutput(preset.parent) as folder, keep_trained_model(result.task, output_dir, "saving the preset"):
            result.preset_path = result.task.save_to_preset(pathlib.Path(folder) / preset.name)
    if export is not None and getattr(output, "export_dir", None):
        with WorkerOutput(output.export_dir) as folder, keep_trained_model(result.task, output_dir, "export"):
            result.export_path = export(folder, card)
    if not is_chief():
        result.report_paths, result.export_path, result.preset_path = [], None, None
    return result


def train_classifier(config, make_classifier, split_inputs, export, distribution=None, callbacks=(),
                     extra_metrics=None, test_raw=None, extra_report=None):
    """The classifier workflows' shared middle: distribution and precision,
    seeded weights, the classifier built under the distribution scope, `fit`
    with the transfer strategy (validation each epoch), validation and test
    metrics, then `finish`.

    Args:
        config: a text or image workflow config.
        make_classifier: `() -> Classifier`, called in the scope.
        split_inputs: `classifier -> ((x, y) train, (x, y) validation,
            (x, y) test)`, the inputs prepared once.
        export: `(classifier, folder, card) -> version folder`.
        distribution: a `tf.distribute.Strategy`, or `None` to pick one
            from `config.runtime.distribute`.
        callbacks: Keras callbacks for every `fit`.
        extra_metrics: other figures for `metrics.json` (skipped images).
        test_raw: the raw test inputs (texts, uint8 images), whose most
            confidently misclassified ones the report explains
            (`errors/explanations.html`); `None` for none.
        extra_report: `(classifier, validation, test) -> (metrics, write)`
            for more figures (`metrics` joins `metrics.json`; `write(folder)`
            writes their plots and returns the paths), or `None`.

    Returns:
        A `RunResult` with `{"validation": ..., "test": ...}` metrics.
    """
    output_dir = pathlib.Path(config.output_dir)
    distribution, training = prepare_distributed_training(
        config.training, output_dir, config.runtime.distribute, config.runtime.precision, config.resume,
        distribution,
        fingerprint=run_fingerprint(config), fresh=config.fresh)
    keras.utils.set_random_seed(config.training.seed)  # The head's initial weights too.
    with distribution.scope():
        classifier = make_classifier()
    classifier.feature_cache = FeatureCache(output_dir / "feature_cache")
    (train_x, train_y), validation, test = split_inputs(classifier)
    batch = global_batch_size(training.batch_size, distribution)
    if batch > len(train_y):  # Said, not silent: every epoch is one partial batch.
        print(f"note: the global batch of {batch} is more than the {len(train_y)} training rows; each epoch is "
              f"one step of {len(train_y)} (a smaller --batch-size gives more steps)")
    history = classifier.fit(train_x, train_y, validation_data=validation, distribution=distribution,
                             callbacks=callbacks, **dataclasses.asdict(training)).history
    with keep_trained_model(classifier, output_dir, "scoring"):
        metrics = {"validation": classifier.evaluate_report(*validation, split="validation"),
                   "test": classifier.evaluate_report(*test, split="test"), **(extra_metrics or {})}
        more, write_more = extra_report(classifier, validation, test) if extra_report else ({}, lambda folder: [])
        metrics.update(more)
        if classifier.privacy:
            metrics["privacy"] = dict(classifier.privacy)
        if config.audit:
            metrics["audit"] = audit(classifier, (train_x, train_y), test)

    def write_reports(folder):
        return [*write_report(metrics["test"], history, folder, write_metrics=False),
                *_explain_errors(classifier, test, test_raw, folder / "errors"), *write_more(folder)]

    return finish(RunResult(classifier, metrics, history), config, write_reports,
                  lambda folder, card: export(classifier, folder, {"backbone": str(config.backbone), **card}),
                  distribution_card(distribution))


def audit(classifier, members, nonmembers):
    """The membership-inference audit of a trained classifier: its training
    rows against rows it never saw (`tl_keras.evaluation.privacy_audit`)."""
    def probabilities(inputs):
        return predict_through_cache(classifier, classifier.transfer_inputs(inputs), classifier.feature_cache)

    return membership_audit(probabilities(members[0]), classifier.targets(members[1]),
                            probabilities(nonmembers[0]), classifier.targets(nonmembers[1]))


def _explain_errors(classifier, test, test_raw, folder, count=3):
    """Explains the classifier's most confident test errors (classification
    only), beside the confusion matrix."""
    if test_raw is None or classifier.vocabulary.task != "classification":
        return []
    # The test features are in the cache from `evaluate_report`: only the head runs.
    probabilities = predict_through_cache(classifier, classifier.transfer_inputs(test[0]), classifier.feature_cache)
    errors = most_confident_errors(probabilities, classifier.targets(test[1]), count)
    if not errors:
        return []
    names = classifier.vocabulary.names
    explanations = classifier.explain([test_raw[i] for i in errors] if isinstance(test_raw, list)
                                      else test_raw[errors])
    captions = [f"true {test[1][i]}, predicted {names[int(probabilities[i].argmax())]}" for i in errors]
    return write_explanations(explanations, folder, "The test set's most confident errors", captions)


def distribution_card(distribution):
    """The `tf.distribute` facts a model card records."""
    distribution = distribution or tf.distribute.get_strategy()
    return {"distribution": {"strategy": type(distribution).__name__,
                             "replicas": distribution.num_replicas_in_sync}}



def describe(result):
    """A classifier run's closing lines: each split's headline metrics and
    where everything is."""
    lines = [summary_line(figures) for figures in result.metrics.values()
             if isinstance(figures, dict) and "split" in figures]
    for split, figures in result.metrics.get("hierarchy", {}).items():
        lines.append(f"{split}: coarse accuracy {figures['coarse_accuracy']:.4f} ({figures['coarse_classes']} "
                     f"coarse classes; fine {figures['fine_accuracy']:.4f})")
    if result.metrics.get("skipped_images"):
        lines.append(f"skipped {result.metrics['skipped_images']} bad image(s)")
    if result.metrics.get("privacy"):
        spent = result.metrics["privacy"]
        lines.append(f"privacy: (ε = {spent['epsilon']:.2f}, δ = {spent['delta']:.2g}) over {spent['steps']} DP-SGD "
                     f"steps, noise multiplier {spent['noise_multiplier']:.3f}, clip {spent['clip']:g} "
                     f"({spent['sampling']})")
    if result.metrics.get("audit"):
        attack = result.metrics["audit"]
        lines.append("membership audit (train vs test rows): " + "; ".join(
            f"{name} AUC {attack[name]['auc']:.3f}, TPR@1%FPR {attack[name]['tpr_at_1pct_fpr']:.3f}"
            for name in ("loss_threshold", "class_calibrated")))
    return "\n".join(lines + result.written())
