"""Training runs for test_distribute.py, each in a process of its own (the
logical-device layout and TF_CONFIG must be set before TensorFlow starts).

    python tests/distributed_training.py MODE FOLDER

Modes: mirrored, two_tower_mirrored, two_mirrored_runs, prepare, multi_worker,
single_for_multi_worker, resume, uninterrupted. Results go to FOLDER as .npz weights or run folders.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MODE, FOLDER = sys.argv[1], pathlib.Path(sys.argv[2])

import tensorflow as tf  # noqa: E402

if MODE in ("mirrored", "two_tower_mirrored", "two_mirrored_runs"):
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
tf.config.experimental.enable_op_determinism()

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from conftest import separable_sentences, tiny_bert, write_tsv  # noqa: E402

from tl_keras.core.settings import build_config
from tl_keras.data.texts import LabelVocabulary  # noqa: E402
from tl_keras.training.distribution import pick_distribution, worker_name  # noqa: E402
from tl_keras.models.heads import build_encoder, build_head, build_text_model  # noqa: E402
from tl_keras.data.tokens import tokenize  # noqa: E402
from tl_keras.transfer.strategies import parse_strategy  # noqa: E402
from tl_keras.workflows.text_classification import TextClassificationConfig, run  # noqa: E402
from tl_keras.training.trainer import TrainingConfig, TrainingData, train  # noqa: E402

FULL = dict(epochs=2, warmup_epochs=0, head_learning_rate=1e-3, backbone_learning_rate=1e-3, verbose=0)


def save(name, model, **extra):
    np.savez(FOLDER / f"{name}.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())}, **extra)


def mirrored():
    # Rows in file order: under MirroredStrategy Keras' `fit` draws one batch
    # before training to build the model, which advances a reshuffling
    # dataset by one permutation, so shuffled runs see other batches.
    backbone, preprocessor = tiny_bert(seed=3, dropout=0.0)
    vocab = LabelVocabulary.from_labels(["neg", "pos"])
    texts, labels = separable_sentences(64, seed=1)
    tokens = tokenize(texts, preprocessor, verbose=0)
    data = TrainingData(tokens, vocab.encode(labels), tokens, vocab.encode(labels))

    def build():
        return build_text_model(build_encoder(tiny_bert(seed=3, dropout=0.0)[0], "mean"),
                                build_head(32, 2, "classification", dropout=0.0))

    single = build()
    initial = single.get_weights()
    single, _ = train(single, parse_strategy("full"), data, TrainingConfig(batch_size=8, shuffle=False, **FULL))
    strategy = pick_distribution("mirrored")
    with strategy.scope():
        replicated = build()
        replicated.set_weights(initial)
    # The same global batch of 8: `batch_size` is per replica.
    replicated, _ = train(replicated, parse_strategy("full"), data,
                          TrainingConfig(batch_size=8 // strategy.num_replicas_in_sync, shuffle=False, **FULL),
                          distribution=strategy)
    save("single", single, **{f"initial_w{i}": w for i, w in enumerate(initial)})
    save("mirrored", replicated, replicas=strategy.num_replicas_in_sync)


def _files():
    preset = FOLDER / "tiny_bert"
    if not preset.exists():
        backbone, preprocessor = tiny_bert(seed=3, dropout=0.0)
        backbone.save_to_preset(str(preset))
        preprocessor.save_to_preset(str(preset))
        write_tsv(FOLDER / "train.tsv", *separable_sentences(256, seed=1))
        write_tsv(FOLDER / "validation.tsv", *separable_sentences(32, seed=2))
    return dict(train=str(FOLDER / "train.tsv"), validation=str(FOLDER / "validation.tsv"), backbone=str(preset),
                strategy="full", pooling="mean", dropout=0.0, sequence_length=32)


def multi_worker(distribute, batch_size, output):
    # Rows in file order here too: the multi-worker input pipeline (tf.data
    # auto-sharding) draws other shuffle permutations than a local one.
    config = build_config(TextClassificationConfig, output_dir=str(FOLDER / output), distribute=distribute, resume=False,
                                      training=TrainingConfig(batch_size=batch_size, shuffle=False, **FULL),
                                      **_files())
    result = run(config)
    name = worker_name().replace("chief", "worker-0") if distribute == "multi_worker" else "single"
    save(name, result.task, replicas=result.task.distribute_strategy.num_replicas_in_sync)


def two_tower_mirrored():
    # One epoch of the in-batch softmax on two replicas (global batch 8, 4
    # a replica) against the same steps on one device, taking the mean of
    # the two halves' gradients by hand: equal only if the loss is scaled
    # for the replica count as Keras' own losses are.
    import keras

    from tl_keras.models.two_tower import ItemTower, TwoTowerModel, UserTower

    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 5)).astype("float32")
    examples = {"user": rng.integers(1, 4, 16).astype("int32"), "history": rng.integers(0, 7, (16, 3)).astype("int32"),
                "item": rng.integers(1, 7, 16).astype("int32")}

    def build():
        keras.utils.set_random_seed(0)
        model = TwoTowerModel(ItemTower(features, None, 8), UserTower(3, 8))
        model.build({"user": (None,), "history": (None, 3), "item": (None,)})
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        return model

    strategy = pick_distribution("mirrored")
    with strategy.scope():
        mirrored = build()
    dataset = tf.data.Dataset.from_tensor_slices(examples).batch(8)
    mirrored.fit(dataset, epochs=1, shuffle=False, verbose=0)
    single = build()
    initial = [v.numpy().copy() for v in single.trainable_variables]
    for batch in dataset:
        gradients = []
        for half in (slice(0, 4), slice(4, 8)):
            x = {name: value[half] for name, value in batch.items()}
            with tf.GradientTape() as tape:
                loss = single.compute_loss(x=x, y_pred=single(x))
            gradients.append(tape.gradient(loss, single.trainable_variables))
        mean = [(tf.convert_to_tensor(a) + tf.convert_to_tensor(b)) / 2 for a, b in zip(*gradients)]
        single.optimizer.apply(mean, single.trainable_variables)
    np.savez(FOLDER / "two_tower.npz", replicas=strategy.num_replicas_in_sync,
             **{f"mirrored_{i}": v.numpy() for i, v in enumerate(mirrored.trainable_variables)},
             **{f"single_{i}": v.numpy() for i, v in enumerate(single.trainable_variables)},
             **{f"initial_{i}": v for i, v in enumerate(initial)})


def two_mirrored_runs():
    # Two image runs one after the other in one process, as in a notebook:
    # the head on frozen features, then the top stage fine-tuned.
    from image_data import tiny_efficientnet_preset

    from tl_keras.workflows.image_classification import ImageClassificationConfig, run as run_images
    from tl_keras.data.sample_images import write_sample_images

    root = write_sample_images(FOLDER / "images", per_class=8, size=48)
    preset = tiny_efficientnet_preset(FOLDER / "preset")
    replicas = []
    for strategy, augmentation in (("frozen", "flip"), ("partial:1", "none")):
        result = run_images(build_config(ImageClassificationConfig, 
            train=str(root), backbone=str(preset), output_dir=str(FOLDER / strategy.replace(":", "_")),
            image_size=32, strategy=strategy, augmentation=augmentation, distribute="mirrored",
            # 6 validation images: an even first batch on two replicas (Keras
            # reduces the first distributed batch eagerly when it builds).
            validation_fraction=0.25, training=TrainingConfig(epochs=2, batch_size=4, verbose=0)))
        replicas.append(result.task.distribute_strategy.num_replicas_in_sync)
    np.savez(FOLDER / "two_runs.npz", replicas=replicas)


def resumable(output):
    training = TrainingConfig(epochs=6, warmup_epochs=1, batch_size=8, head_learning_rate=1e-3,
                              backbone_learning_rate=1e-4, verbose=0)
    run(build_config(TextClassificationConfig, output_dir=str(FOLDER / output), training=training, **_files()))


if __name__ == "__main__":
    if MODE == "mirrored":
        mirrored()
    elif MODE == "two_tower_mirrored":
        two_tower_mirrored()
    elif MODE == "two_mirrored_runs":
        two_mirrored_runs()
    elif MODE == "multi_worker":
        multi_worker("multi_worker", 4, "multi_worker_run")  # 4 a replica, 8 in all.
    elif MODE == "single_for_multi_worker":
        multi_worker("none", 8, "single_run")
    elif MODE == "prepare":
        _files()
    else:
        resumable("resumed" if MODE == "resume" else "uninterrupted")
