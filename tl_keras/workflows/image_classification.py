"""The image transfer job end to end: labelled images in, report, preset and
SavedModel out, over `ImageClassifier`.

Data flows one way: read (folder per class or CSV) → train / validation /
test split → decode and resize once → classifier from the preset → fit with
the transfer strategy (augmentation in the training pipeline only) →
validation and test metrics → report → export answering encoded image bytes.
"""

import dataclasses
import pathlib

import tensorflow as tf

from tl_keras.data.catalogue import read_catalogue
from tl_keras.data.images import ImageArray, build_augmentation, load_images, read_labelled_images, typical_side
from tl_keras.data.texts import LabelVocabulary
from tl_keras.evaluation.classification import evaluate_predictions, write_report
from tl_keras.evaluation.hierarchy import hierarchical_report, plot_fallback
from tl_keras.export.image import export_image_model
from tl_keras.models.backbones import native_image_size
from tl_keras.tasks.image_classifier import ImageClassifier
from tl_keras.training.runs import holding_run_folder, keep_trained_model
from tl_keras.transfer.fusion import ensemble
from tl_keras.workflows.common import RunResult, finish, three_way_split, train_classifier
from tl_keras.workflows.common import describe as describe_classifier
from tl_keras.workflows.configs import ImageClassificationConfig  # noqa: F401  (the config of `run`)


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) saves and exports an image
    classifier; see `ImageClassificationConfig`. With several backbones
    (`config.backbone` comma-separated), each trains its own classifier as a
    run of its own in `output_dir/member_<i>/`, on the same split, and the
    run's model is their ensemble (`tl_keras.transfer.fusion.ensemble`).
    Returns a `RunResult` whose `metrics` are `{"validation": ...,
    "test": ...}` (and `"members"`, each member's, for an ensemble)."""
    backbones = backbone_presets(config.backbone)
    if len(backbones) == 1:
        return _run_classifier(config, distribution, callbacks)
    return _run_ensemble(config, backbones, distribution, callbacks)


# A frozen ImageNet CNN reads product photos better at their own size than
# shrunk to its training size (Grocery Store val list, 348-pixel photos: Lite1
# 0.696-0.703 at 348 against 0.672-0.693 at 240), so the default keeps the photos' size,
# between the backbone's native size and this multiple of it (the cost grows
# with the square).
LARGEST_SIDE_RATIO = 1.5


def default_image_size(preset, train_paths):
    """The side images are resized to when `image_size` is not set: the
    training photos' typical shorter side (`typical_side`), at least the
    preset's native size and at most `LARGEST_SIDE_RATIO` times it.

    Example:
    >>> default_image_size("presets/efficientnet_lite1", ["photos/a.jpg"])  # 348-pixel photos
    348
    """
    native = native_image_size(preset)
    side = typical_side(train_paths) or native
    return min(max(native, side), int(native * LARGEST_SIDE_RATIO))


def backbone_presets(backbone):
    """The presets `config.backbone` names: one, or several separated by
    commas (a prediction ensemble)."""
    presets = [part.strip() for part in str(backbone).split(",")]
    if not all(presets):
        raise ValueError(f"`backbone` names an empty preset between commas, received {backbone!r}.")
    return presets


def _load_splits(config, image_size):
    """The train, validation and test splits, decoded at `image_size`:
    `[(uint8 pixels, rows, skipped entries)]`, printing what was skipped."""
    def read(source):
        return read_labelled_images(source) if source else None

    splits = three_way_split(read(config.train), read(config.splits.validation), read(config.splits.test),
                             config.splits.validation_fraction, config.splits.test_fraction, config.training.seed, stratify=True)
    loaded = [load_images(rows, image_size, config.skip_bad_images, config.training.verbose) for rows in splits]
    skipped = [entry for _, _, entries in loaded for entry in entries]
    for origin, reason in skipped:
        print(f"skipped {reason}")
    if skipped:
        print(f"skipped {len(skipped)} bad image(s) of {sum(len(rows) for rows in splits)}")
    return loaded


def _run_classifier(config, distribution=None, callbacks=()):
    """One backbone's classifier, trained, evaluated, saved and exported."""
    side = config.image_size
    if not side:
        side = default_image_size(config.backbone, read_labelled_images(config.train).texts)
        print(f"images resized to {side} x {side}: the training photos' typical side, kept within 1-"
              f"{LARGEST_SIDE_RATIO:g}x the backbone's native size (--image-size sets it)")
    image_size = (side, side)
    build_augmentation(config.augmentation)  # Checks the names before anything is read.
    loaded = _load_splits(config, image_size)
    skipped = [entry for _, _, entries in loaded for entry in entries]
    vocabulary = LabelVocabulary.from_labels(loaded[0][1].labels, "classification", loaded[0][1].origins)
    for _, rows, _ in loaded[1:]:
        vocabulary.encode(rows.labels, rows.origins)

    def make_classifier():
        return ImageClassifier.from_preset(
            config.backbone, labels=vocabulary.names, image_size=image_size, strategy=config.strategy,
            augmentation=config.augmentation, hidden_dim=config.hidden_dim, dropout=config.dropout,
            seed=config.training.seed, test_time_augmentation=config.test_time_augmentation)

    def split_inputs(classifier):
        return [(ImageArray(pixels), rows.labels) for pixels, rows, _ in loaded]

    def export(classifier, folder, card):
        warmup = [pathlib.Path(path).read_bytes() for path in loaded[1][1].texts[:3]]
        return classifier.export(folder, config.output.model_name, warmup=warmup,
                                 card={"skipped_images": len(skipped), **card})

    return train_classifier(config, make_classifier, split_inputs, export, distribution, callbacks,
                            {"skipped_images": len(skipped)}, test_raw=loaded[2][0],
                            extra_report=coarse_report(config.train))


def _run_ensemble(config, backbones, distribution, callbacks):
    """Each backbone's classifier as a run of its own (`member_<i>/`, its
    preset saved under `save_preset/member_<i>` when set), then their
    average scored on the same validation and test rows and exported."""
    output_dir = pathlib.Path(config.output_dir)
    members = []
    for index, backbone in enumerate(backbones):
        save = config.output.save_preset and str(pathlib.Path(config.output.save_preset) / f"member_{index}")
        member = dataclasses.replace(config, backbone=backbone, output_dir=str(output_dir / f"member_{index}"),
                                     output=dataclasses.replace(config.output, export_dir=None, save_preset=save))
        print(f"member {index + 1} of {len(backbones)}: {backbone}")
        members.append(_run_classifier(member, distribution, callbacks))
    tasks = [member.task for member in members]
    fused = ensemble(tasks, [task.vocabulary for task in tasks])
    image_size = tuple(fused.input.shape[1:3])
    loaded = _load_splits(config, image_size)
    vocabulary = tasks[0].vocabulary
    scored = dict(zip(("validation", "test"), loaded[1:]))
    with keep_trained_model(fused, output_dir, "scoring"):
        outputs = {split: (predict_pixels(fused, pixels), rows.labels) for split, (pixels, rows, _) in scored.items()}
        metrics = {split: {"split": split, **evaluate_predictions(probabilities, vocabulary.encode(labels), vocabulary)}
                   for split, (probabilities, labels) in outputs.items()}
        metrics["members"] = {backbone: member.metrics for backbone, member in zip(backbones, members)}
        hierarchy = hierarchy_report(config.train, vocabulary, outputs)
        if hierarchy:
            metrics["hierarchy"] = hierarchy

    def export(folder, card):
        warmup = [pathlib.Path(path).read_bytes() for path in loaded[1][1].texts[:3]]
        return export_image_model(fused, vocabulary, image_size, folder, config.output.model_name,
                                  warmup_images=warmup, card={"backbones": backbones, "fusion": "ensemble", **card})

    def write_reports(folder):
        fallback = [plot_test_fallback(hierarchy, folder)] if hierarchy else []
        return [*write_report(metrics["test"], {}, folder, write_metrics=False), *fallback]

    plain = dataclasses.replace(config, output=dataclasses.replace(config.output, save_preset=None))
    return finish(RunResult(fused, metrics), plain, write_reports, export)


def predict_pixels(model, pixels, batch_size=32):
    """`model`'s outputs for uint8 pixels, cast to float32 a batch at a time."""
    batches = tf.data.Dataset.from_tensor_slices(pixels).batch(batch_size).map(_as_float32)
    return model.predict(batches, verbose=0)


def _as_float32(pixels):
    # A named function: AutoGraph cannot read a lambda's source here and warns on every run.
    return tf.cast(pixels, "float32")


def describe(result):
    """The run's closing lines; for an ensemble, each member's test
    accuracy before the ensemble's."""
    members = [f"member {backbone}: test accuracy {figures['test']['accuracy']:.4f}"
               for backbone, figures in result.metrics.get("members", {}).items()]
    return "\n".join([*members, describe_classifier(result)])


def hierarchy_report(train, vocabulary, predicted):
    """Fine and coarse accuracy and the coarse fallback's curve of each split
    in `predicted` (`{split: (probabilities, labels)}`), for an image list
    with a catalogue beside it (`tl_keras.data.catalogue`); `None` for other
    sources."""
    if not str(train).lower().endswith(".txt"):
        return None
    coarse_of = read_catalogue(pathlib.Path(train).parent / "classes.csv").coarse_of
    return {split: hierarchical_report(probabilities, vocabulary.encode(labels), vocabulary.names, coarse_of)
            for split, (probabilities, labels) in predicted.items()}


def plot_test_fallback(reports, folder):
    """`fallback.png` of the test split's `hierarchy_report`."""
    return plot_fallback(reports["test"], folder / "fallback.png", "Test split: fall back to the coarse class")


def coarse_report(train):
    """`hierarchy_report` of a classifier's validation and test splits as
    `train_classifier`'s `extra_report` (`hierarchy.json` figures in
    `metrics.json`, the test split's `fallback.png`); `None` for sources
    without a catalogue."""
    if not str(train).lower().endswith(".txt"):
        return None

    def report(classifier, validation, test):
        reports = hierarchy_report(train, classifier.vocabulary, {
            split: (classifier.predict(inputs), labels) for split, (inputs, labels) in (("validation", validation),
                                                                                         ("test", test))})
        return {"hierarchy": reports}, lambda folder: [plot_test_fallback(reports, folder)]

    return report
