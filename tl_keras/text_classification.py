"""The text transfer job end to end: files in, report and SavedModel out.

Data flows one way: read → label vocabulary → backbone and preprocessor →
tokenise once → encoder and head → strategy and training → held-out
evaluation → report → export.
"""

import dataclasses
import pathlib

import keras
import numpy as np

from tl_keras.backbones import default_pooling, load_text_backbone
from tl_keras.data import LabelVocabulary, read_labelled_texts, stratified_split
from tl_keras.distribute import WorkerOutput, is_chief
from tl_keras.evaluation import evaluate_predictions, summary_line, write_report
from tl_keras.export import export_text_model, keep_model_if_export_fails
from tl_keras.feature_cache import FeatureCache
from tl_keras.ranges import check_settings
from tl_keras.runs import holding_run_folder, run_fingerprint
from tl_keras.heads import build_encoder, build_head, build_text_model
from tl_keras.preprocessing import tokenize
from tl_keras.strategies import parse_strategy
from tl_keras.training import (
    TrainingConfig, TrainingData, predict_through_cache, prepare_distributed_training, train,
)


@dataclasses.dataclass
class TextClassificationConfig:
    """Everything a text transfer run needs; `recipes/text_classification.py`
    fills it from flags or YAML.

    Args:
        train: training file (`.tsv`/`.txt`, `.csv`, `.jsonl`).
        backbone: a KerasHub preset (Kaggle handle or local folder).
        output_dir: where `metrics.json` and the plots go.
        validation: validation file; `None` holds out a stratified
            `validation_fraction` of `train`.
        strategy: `"frozen"`, `"partial:N"`, `"full"` or `"lora:R"`.
        task: `"classification"`, `"multilabel"` or `"regression"`.
        pooling: `"mean"`, `"cls"`, `"pooled"`, or `None` for the backbone's
            default.
        export_dir, model_name: write a TF Serving SavedModel to
            `export_dir/model_name/<version>/` when `export_dir` is set.
        distribute: `"auto"`, `"none"`, `"mirrored"` or `"multi_worker"`
            (see `tl_keras.distribute.pick_strategy`).
        precision: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`
            (GPU only; float32 on a CPU).
        resume: keep per-epoch backups in `output_dir/backup` so a killed run
            started again resumes where it stopped; a restart with other
            data or settings stops, naming what changed.
        fresh: discard backups of an earlier run with other settings and
            start again.
        training: the `TrainingConfig`; its `batch_size` is per replica.

    Example:
    >>> run(TextClassificationConfig(train="reviews.tsv", backbone=
    ...     minilm_l6_offline_path(), output_dir="runs/reviews"))
    """

    train: str
    backbone: str
    output_dir: str
    validation: str = None
    validation_fraction: float = 0.2
    strategy: str = "frozen"
    task: str = "classification"
    text_column: str = "text"
    label_column: str = "label"
    sequence_length: int = 128
    pooling: str = None
    hidden_dim: int = 0
    dropout: float = 0.1
    export_dir: str = None
    model_name: str = "text_classifier"
    distribute: str = "auto"
    precision: str = "float32"
    resume: bool = True
    fresh: bool = False
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class RunResult:
    """What a run produced: the trained model and where its outputs are."""

    model: object
    preprocessor: object
    vocabulary: LabelVocabulary
    metrics: dict
    history: dict
    report_paths: list
    export_path: pathlib.Path = None


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) exports a text model; see
    `TextClassificationConfig`. `callbacks` go to every `fit`. Returns a
    `RunResult`."""
    strategy = parse_strategy(config.strategy)
    train_rows = read_labelled_texts(config.train, config.text_column, config.label_column)
    if config.validation:
        validation_rows = read_labelled_texts(config.validation, config.text_column, config.label_column)
    else:
        train_rows, validation_rows = stratified_split(
            train_rows, config.validation_fraction, config.training.seed,
            stratify=config.task != "regression",
        )
    vocabulary = LabelVocabulary.from_labels(train_rows.labels, config.task, train_rows.origins)
    train_targets = vocabulary.encode(train_rows.labels, train_rows.origins)
    validation_targets = vocabulary.encode(validation_rows.labels, validation_rows.origins)

    output_dir = pathlib.Path(config.output_dir)
    distribution, training = prepare_distributed_training(
        config.training, output_dir, config.distribute, config.precision, config.resume, distribution,
        fingerprint=run_fingerprint(config), fresh=config.fresh)
    keras.utils.set_random_seed(config.training.seed)  # The head's initial weights too.
    with distribution.scope():
        backbone, preprocessor = load_text_backbone(config.backbone, config.sequence_length)
        pooling = config.pooling or default_pooling(config.backbone, backbone)
        encoder = build_encoder(backbone, pooling)
        head = build_head(encoder.output.shape[-1], vocabulary.num_outputs, config.task, config.hidden_dim, config.dropout)
        model = build_text_model(encoder, head)
    tokens = tokenize(train_rows.texts + validation_rows.texts, preprocessor, verbose=config.training.verbose,
                      cache_dir=output_dir / "token_cache")
    split = len(train_rows)
    data = TrainingData(
        tokens.take(np.arange(split)), train_targets,
        tokens.take(np.arange(split, len(tokens))), validation_targets,
    )
    cache = FeatureCache(output_dir / "feature_cache")
    model, history = train(model, strategy, data, config.task, training, cache, distribution, callbacks)

    outputs = predict_through_cache(model, data.validation_inputs, cache, training.batch_size)
    metrics = evaluate_predictions(outputs, validation_targets, vocabulary)
    with WorkerOutput(output_dir) as report_dir:
        report_paths = write_report(metrics, history, report_dir)
    export_path = None
    if config.export_dir:
        card = {
            "backbone": str(config.backbone),
            "pooling": pooling,
            "strategy": str(strategy),
            "sequence_length": config.sequence_length,
            "held_out_metrics": metrics,
            "training": dataclasses.asdict(training),
            "distribution": {"strategy": type(distribution).__name__,
                             "replicas": distribution.num_replicas_in_sync},
        }
        with WorkerOutput(config.export_dir) as export_dir:
            export_path = keep_model_if_export_fails(model, output_dir, lambda: export_text_model(
                model, preprocessor, vocabulary, export_dir, config.model_name,
                warmup_texts=validation_rows.texts[:5], card=card,
            ))
    if not is_chief():  # Its reports and export went to removed temporary folders.
        report_paths, export_path = [], None
    return RunResult(model, preprocessor, vocabulary, metrics, history, report_paths, export_path)


def describe(result):
    """The run's closing lines: held-out metrics and where everything is."""
    lines = [summary_line(result.metrics)]
    lines += [f"wrote {path}" for path in result.report_paths]
    if result.export_path:
        lines.append(f"SavedModel: {result.export_path}")
    return "\n".join(lines)

