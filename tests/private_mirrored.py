"""DP-SGD under `MirroredStrategy` on two logical CPUs, for test_privacy.py
(the device layout must be set before TensorFlow starts):

    python tests/private_mirrored.py FOLDER

Writes `FOLDER/private.npz`: the weights of one model trained with clipping
alone (noise 0) on two replicas and on one device, and the update of a
weight the loss does not reach (so its update is the noise alone) on two
replicas, with the batch and the noise's standard deviation.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tl_keras.training.privacy import Privacy, PrivateTraining  # noqa: E402


class Unreached(keras.layers.Layer):
    """A dense layer plus a wide weight that multiplies into zero: its
    gradient is exactly 0, so its update is the noise alone."""

    def build(self, shape):
        self.dense = keras.layers.Dense(2, kernel_initializer="glorot_uniform")
        self.dense.build(shape)
        self.idle = self.add_weight(shape=(20_000,), initializer="zeros", name="idle")

    def call(self, x):
        return self.dense(x) + 0.0 * tf.reduce_sum(self.idle)


def model():
    inputs = keras.Input((8,))
    net = keras.Model(inputs, keras.layers.Softmax()(Unreached()(inputs)))
    rng = np.random.default_rng(0)  # The same start in every run (Keras' seed state moves on).
    net.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") if w.ndim == 2 else np.zeros(w.shape, "float32")
                     for w in net.get_weights()])
    return net


def train(distribution, privacy, x, y):
    with distribution.scope():
        net = model()
        trainer = PrivateTraining(net, privacy)
        trainer.compile(optimizer=keras.optimizers.SGD(1.0), loss=keras.losses.SparseCategoricalCrossentropy())
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    trainer.fit(data, epochs=1, verbose=0, shuffle=False)
    return net


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.integers(0, 2, 32).astype("int32")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    clipped = Privacy(clip=0.5, noise_multiplier=0.0)
    two = train(mirrored, clipped, x, y)
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), clipped, x, y)
    noisy = train(mirrored, Privacy(clip=1.0, noise_multiplier=4.0), x[:16], y[:16])  # One step of 16.
    np.savez(folder / "private.npz", two=two.layers[1].dense.kernel.numpy(), one=one.layers[1].dense.kernel.numpy(),
             idle=noisy.layers[1].idle.numpy(), batch=16, deviation=4.0)
