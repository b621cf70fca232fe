"""Continued masked-LM pretraining of a backbone on in-domain text.

The backbone's own KerasHub masked-LM task (BERT, DistilBERT, RoBERTa,
DeBERTa-v3, ...) trains on unlabelled texts with the standard masking (15% of
tokens chosen; of those 80% masked, 10% random, 10% kept), a new mask every
epoch. The adapted backbone is saved as a KerasHub preset folder, with the
tokeniser and classifier preprocessor, that every recipe takes as
`--backbone`.
"""

import pathlib
import shutil
import uuid

import keras
import keras_hub
import tensorflow as tf

from tl_keras.core.files import writable_folder
from tl_keras.core.ranges import check_settings
from tl_keras.training import multi_worker
from tl_keras.training.distribution import WorkerOutput, global_batch_size, pick_distribution


def continue_pretraining(preset, texts, output_preset, sequence_length=128, epochs=1, batch_size=16,
                         learning_rate=5e-5, mask_rate=0.15, seed=1234, distribute="auto", verbose=1):
    """Trains `preset`'s masked LM on `texts` and writes the adapted backbone
    to the preset folder `output_preset` (atomically: written aside, then
    renamed; only the chief worker keeps it). `batch_size` is per replica
    under `distribute` (see `tl_keras.training.distribution.pick_distribution`). Returns
    `(path, history)`.

    Example:
    >>> continue_pretraining(minilm_l6_offline_path(), yelp_texts,
    ...                      "presets/minilm_yelp", epochs=2)
    """
    check_settings(dict(sequence_length=sequence_length, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate, mask_rate=mask_rate, seed=seed, verbose=verbose))
    output_preset = pathlib.Path(output_preset)
    if output_preset.exists():
        raise FileExistsError(f"{output_preset} already exists; choose a new folder for the adapted preset.")
    if not texts:
        raise ValueError("No texts to pretrain on.")
    writable_folder(output_preset.parent)  # Before training, so no trained weights are lost.
    keras.utils.set_random_seed(seed)
    preprocessor = keras_hub.models.MaskedLMPreprocessor.from_preset(
        str(preset), sequence_length=sequence_length, mask_selection_rate=mask_rate
    )
    distribution = pick_distribution(distribute)
    with distribution.scope():
        masked_lm = keras_hub.models.MaskedLM.from_preset(str(preset), preprocessor=None)
        masked_lm.compile(
            optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(list(texts)))
        .shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
        .batch(global_batch_size(batch_size, distribution))
        .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)  # A new mask every epoch.
        .prefetch(tf.data.AUTOTUNE)
    )
    history = multi_worker.fit(masked_lm, distribution, dataset, epochs=epochs, verbose=verbose)
    with WorkerOutput(output_preset.parent) as folder:
        pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(folder) / f".{output_preset.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            masked_lm.backbone.save_to_preset(str(staging))
            keras_hub.models.TextClassifierPreprocessor.from_preset(str(preset)).save_to_preset(str(staging))
            pooling = pathlib.Path(str(preset)) / "1_Pooling"  # Keep a sentence-transformers pooling choice.
            if pooling.is_dir():
                shutil.copytree(pooling, staging / "1_Pooling")
            staging.rename(pathlib.Path(folder) / output_preset.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return output_preset, history.history
