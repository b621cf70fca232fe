"""The text transfer job end to end: files in, report, preset and SavedModel
out, over `TextClassifier`.

Data flows one way: read → train / validation / test split → classifier
from the preset → tokenise once → fit with the transfer strategy (validation
each epoch) → validation and test metrics → report → export.
"""

import pathlib

import numpy as np

from tl_keras.data.texts import LabelVocabulary, read_labelled_texts
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.training.runs import holding_run_folder
from tl_keras.workflows.common import describe, three_way_split, train_classifier  # noqa: F401  (describe: the closing lines)
from tl_keras.workflows.configs import TextClassificationConfig  # noqa: F401  (the config of `run`)


def read_text_splits(config):
    """`(train, validation, test)` `LabelledTexts` for a text config, and the
    `LabelVocabulary` of the training labels, with every validation and test
    label checked against it (an unknown label stops the run here, naming
    its file and line)."""
    def read(path):
        return read_labelled_texts(path, config.text_column, config.label_column, config.pair_column) if path else None

    splits = three_way_split(read(config.train), read(config.splits.validation), read(config.splits.test),
                             config.splits.validation_fraction, config.splits.test_fraction, config.training.seed,
                             stratify=config.task != "regression")
    vocabulary = LabelVocabulary.from_labels(splits[0].labels, config.task, splits[0].origins)
    for rows in splits[1:]:
        vocabulary.encode(rows.labels, rows.origins)
    return splits, vocabulary


@holding_run_folder
def run(config, distribution=None, callbacks=()):
    """Trains, evaluates and (optionally) saves and exports a text
    classifier; see `TextClassificationConfig`. `callbacks` go to every
    `fit`. Returns a `RunResult` whose `metrics` are
    `{"validation": ..., "test": ...}`."""
    splits, vocabulary = read_text_splits(config)

    def make_classifier():
        classifier = TextClassifier.from_preset(
            config.backbone, labels=vocabulary.names, task=config.task, strategy=config.strategy,
            sequence_length=config.sequence_length, pooling=config.pooling, hidden_dim=config.hidden_dim,
            dropout=config.dropout)
        classifier.text_pairs = config.pair_column is not None  # `fit` sees token ids, not the pairs.
        return classifier

    def split_inputs(classifier):  # Tokenised once, in one pass.
        classifier.token_cache_dir = pathlib.Path(config.output_dir) / "token_cache"
        tokens = classifier.tokenize([text for rows in splits for text in rows.texts], config.training.verbose)
        ends = np.cumsum([0] + [len(rows) for rows in splits])
        return [(tokens.take(np.arange(start, end)), rows.labels)
                for rows, start, end in zip(splits, ends[:-1], ends[1:])]

    def export(classifier, folder, card):
        return classifier.export(folder, config.output.model_name, warmup=splits[1].texts[:5], card=card)

    return train_classifier(config, make_classifier, split_inputs, export, distribution, callbacks,
                            test_raw=None if config.pair_column else splits[2].texts)
