"""The image transfer job end to end: labelled images in, report, preset and
SavedModel out, over `ImageClassifier`.

Data flows one way: read (folder per class or CSV) → train / validation /
test split → decode and resize once → classifier from the preset → fit with
the transfer strategy (augmentation in the training pipeline only) →
validation and test metrics → report → export answering encoded image bytes.
"""

import pathlib

from tl_keras.data.catalogue import read_catalogue
from tl_keras.data.images import ImageArray, build_augmentation, load_images, read_labelled_images
from tl_keras.data.texts import LabelVocabulary
from tl_keras.evaluation.hierarchy import hierarchical_report, plot_fallback
from tl_keras.models.backbones import native_image_size
from tl_keras.tasks.image_classifier import ImageClassifier
from tl_keras.training.runs import holding_run_folder
from tl_keras.workflows.common import describe, three_way_split, train_classifier  # noqa: F401  (describe: the closing lines)
from tl_keras.workflows.configs import ImageClassificationConfig  # noqa: F401  (the config of `run`)


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) saves and exports an image
    classifier; see `ImageClassificationConfig`. Returns a `RunResult`
    whose `metrics` are `{"validation": ..., "test": ...}`."""
    side = config.image_size or native_image_size(config.backbone)
    image_size = (side, side)
    build_augmentation(config.augmentation)  # Checks the names before anything is read.

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


def coarse_report(train):
    """For an image list with a catalogue beside it (`tl_keras.data.catalogue`):
    fine and coarse accuracy of each split and the coarse fallback's curve
    (`hierarchy.json` figures in `metrics.json`, `fallback.png`); `None`
    for other sources."""
    if not str(train).lower().endswith(".txt"):
        return None
    coarse_of = read_catalogue(pathlib.Path(train).parent / "classes.csv").coarse_of

    def report(classifier, validation, test):
        reports = {split: hierarchical_report(classifier.predict(inputs), classifier.targets(labels),
                                              classifier.vocabulary.names, coarse_of)
                   for split, (inputs, labels) in (("validation", validation), ("test", test))}
        return {"hierarchy": reports}, lambda folder: [
            plot_fallback(reports["test"], folder / "fallback.png", "Test split: fall back to the coarse class")]

    return report
