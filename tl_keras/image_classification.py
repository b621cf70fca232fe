"""The image transfer job end to end: labelled images in, report and
SavedModel out.

Data flows one way: read (folder per class or CSV) → decode and resize once
→ label vocabulary → backbone → encoder and head → strategy and training
(augmentation in the training pipeline only) → held-out evaluation → report
→ export answering encoded image bytes.
"""

import dataclasses
import pathlib

import keras
import keras_hub

from tl_keras.data import LabelVocabulary, stratified_split
from tl_keras.distribute import WorkerOutput, is_chief
from tl_keras.evaluation import evaluate_predictions, write_report
from tl_keras.feature_cache import FeatureCache
from tl_keras.ranges import check_settings
from tl_keras.runs import holding_run_folder, run_fingerprint
from tl_keras.heads import build_head, build_image_encoder, build_image_model
from tl_keras.export import keep_model_if_export_fails
from tl_keras.image_export import export_image_model
from tl_keras.images import ImageArray, build_augmentation, load_images, read_labelled_images
from tl_keras.strategies import parse_strategy
from tl_keras.text_classification import RunResult
from tl_keras.training import (
    TrainingConfig, TrainingData, predict_through_cache, prepare_distributed_training, train,
)


@dataclasses.dataclass
class ImageClassificationConfig:
    """Everything an image transfer run needs; `recipes/image_classification.py`
    fills it from flags or YAML.

    Args:
        train: a folder with one sub-folder of images per class, or a
            `path,label` CSV.
        backbone: a KerasHub image preset (Kaggle handle, local preset
            folder, local timm folder, or one made by
            `tl-keras convert-efficientnet-lite`).
        output_dir: where `metrics.json` and the plots go.
        validation: validation images; `None` holds out a stratified
            `validation_fraction` of `train`.
        strategy: `"frozen"`, `"partial:N"` (top N stages) or `"full"`.
        image_size: images are resized to `image_size` x `image_size`.
        augmentation: comma-separated `flip`, `rotation`, `zoom`,
            `contrast`, `randaugment`, or `none`; training batches only. The
            frozen strategy's feature cache is used only without it.
        skip_bad_images: leave out unreadable or non-RGB images and report
            how many, instead of stopping at the first.
        export_dir, model_name: write a TF Serving SavedModel to
            `export_dir/model_name/<version>/` when `export_dir` is set.
        distribute, precision, resume, training: as for text
            (`TextClassificationConfig`).

    Example:
    >>> run(ImageClassificationConfig(train="photos", backbone="presets/efficientnet_lite0",
    ...     output_dir="runs/photos"))
    """

    train: str
    backbone: str
    output_dir: str
    validation: str = None
    validation_fraction: float = 0.2
    strategy: str = "frozen"
    image_size: int = 224
    augmentation: str = "flip,rotation,zoom,contrast"
    skip_bad_images: bool = False
    hidden_dim: int = 0
    dropout: float = 0.1
    export_dir: str = None
    model_name: str = "image_classifier"
    distribute: str = "auto"
    precision: str = "float32"
    resume: bool = True
    fresh: bool = False
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)

    def __post_init__(self):
        check_settings(self)


def load_image_backbone(preset):
    """Loads an image backbone and its preset's pixel scale and offset.

    Returns:
        `(backbone, scale, offset)`; scale and offset are `None` when the
        preset has no image converter.

    Example:
    >>> backbone, scale, offset = load_image_backbone("presets/efficientnet_lite0")
    """
    preset = str(preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ValueError(f"Could not load image backbone preset {preset!r}: {error}") from error
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError):
        return backbone, None, None
    return backbone, converter.scale, converter.offset


def _load(rows, image_size, config):
    pixels, rows, skipped = load_images(rows, image_size, config.skip_bad_images, config.training.verbose)
    for origin, reason in skipped:
        print(f"skipped {reason}")
    return pixels, rows, len(skipped)


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) exports an image model; see
    `ImageClassificationConfig`. Returns a `RunResult` (its `preprocessor`
    is the image size)."""
    strategy = parse_strategy(config.strategy)
    if strategy.kind == "lora":
        raise ValueError(f"Strategy {config.strategy!r} needs a transformer backbone; use frozen, partial:N or full.")
    image_size = (config.image_size, config.image_size)
    augmentation = build_augmentation(config.augmentation, config.training.seed)
    train_rows = read_labelled_images(config.train)
    if config.validation:
        validation_rows = read_labelled_images(config.validation)
    else:
        train_rows, validation_rows = stratified_split(train_rows, config.validation_fraction, config.training.seed)
    train_pixels, train_rows, skipped = _load(train_rows, image_size, config)
    validation_pixels, validation_rows, more = _load(validation_rows, image_size, config)
    if skipped + more:
        print(f"skipped {skipped + more} bad image(s) of {len(train_rows) + len(validation_rows) + skipped + more}")
    vocabulary = LabelVocabulary.from_labels(train_rows.labels, "classification", train_rows.origins)
    train_targets = vocabulary.encode(train_rows.labels, train_rows.origins)
    validation_targets = vocabulary.encode(validation_rows.labels, validation_rows.origins)

    output_dir = pathlib.Path(config.output_dir)
    distribution, training = prepare_distributed_training(
        config.training, output_dir, config.distribute, config.precision, config.resume, distribution,
        fingerprint=run_fingerprint(config), fresh=config.fresh)
    keras.utils.set_random_seed(config.training.seed)
    with distribution.scope():
        backbone, scale, offset = load_image_backbone(config.backbone)
        encoder = build_image_encoder(backbone, image_size, scale, offset)
        head = build_head(encoder.output.shape[-1], vocabulary.num_outputs, "classification", config.hidden_dim,
                          config.dropout)
        model = build_image_model(encoder, head)
    data = TrainingData(ImageArray(train_pixels, augmentation), train_targets,
                        ImageArray(validation_pixels), validation_targets)
    cache = FeatureCache(output_dir / "feature_cache")
    model, history = train(model, strategy, data, "classification", training, cache, distribution, callbacks)

    outputs = predict_through_cache(model, data.validation_inputs, cache, training.batch_size)
    metrics = evaluate_predictions(outputs, validation_targets, vocabulary)
    metrics["skipped_images"] = skipped + more
    with WorkerOutput(output_dir) as report_dir:
        report_paths = write_report(metrics, history, report_dir)
    export_path = None
    if config.export_dir:
        card = {"backbone": str(config.backbone), "strategy": str(strategy), "augmentation": config.augmentation,
                "held_out_metrics": metrics, "training": dataclasses.asdict(training)}
        warmup = [pathlib.Path(path).read_bytes() for path in validation_rows.texts[:3]]
        with WorkerOutput(config.export_dir) as export_dir:
            export_path = keep_model_if_export_fails(model, output_dir, lambda: export_image_model(
                model, vocabulary, image_size, export_dir, config.model_name, warmup_images=warmup, card=card))
    if not is_chief():
        report_paths, export_path = [], None
    return RunResult(model, image_size, vocabulary, metrics, history, report_paths, export_path)
