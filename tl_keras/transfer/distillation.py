"""Knowledge distillation: a fine-tuned teacher taught to a smaller student.

The student keeps the teacher's family, tokenizer and width but fewer
transformer blocks, initialised from the teacher's own blocks (evenly
spaced, the top one always kept) and embeddings, with the teacher's head;
it then learns the teacher's softened probabilities (Hinton et al. 2015):

    L = T^2 * KL(softmax(log p_teacher / T) || softmax(log p_student / T))
        + hard_weight * CE(label, p_student)       (labelled rows only)

over the training texts plus any unlabelled texts.
"""

import keras
import numpy as np
from keras import ops

from tl_keras.models.backbones import transformer_blocks


def student_block_indices(num_teacher_blocks, num_student_blocks):
    """The teacher blocks a student starts from: evenly spaced, ending at
    the top block (6 → 3 gives `[1, 3, 5]`)."""
    if not 1 <= num_student_blocks <= num_teacher_blocks:
        raise ValueError(f"a student needs between 1 and {num_teacher_blocks} blocks, received "
                         f"{num_student_blocks!r}.")
    step = num_teacher_blocks / num_student_blocks
    return [int(round(step * (index + 1))) - 1 for index in range(num_student_blocks)]


def student_backbone(teacher_backbone, num_blocks):
    """A copy of a KerasHub text backbone with `num_blocks` transformer
    blocks taken from the teacher's (`student_block_indices`) and every other
    weight (embeddings, pooler) copied.

    Example:
    >>> student = student_backbone(teacher.backbone, 3)
    """
    config = teacher_backbone.get_config()
    if "num_layers" not in config:
        raise ValueError(f"{type(teacher_backbone).__name__} has no `num_layers` setting to shrink.")
    student = type(teacher_backbone).from_config({**config, "num_layers": num_blocks})
    teacher_blocks, student_blocks = transformer_blocks(teacher_backbone), transformer_blocks(student)
    block_names = {layer.name for layer in teacher_blocks + student_blocks}
    for layer in student.layers:
        if layer.name not in block_names and layer.weights:
            layer.set_weights(teacher_backbone.get_layer(layer.name).get_weights())
    for index, block in zip(student_block_indices(len(teacher_blocks), num_blocks), student_blocks):
        block.set_weights(teacher_blocks[index].get_weights())
    return student


def soft_targets(probabilities, temperature):
    """The teacher's probabilities softened at `temperature`."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype("float32")


def distillation_targets(soft, hard=None):
    """Targets for `DistillationLoss`: `[soft (C), one-hot label (C),
    labelled (1)]` a row; `hard` is integer labels, -1 for unlabelled."""
    rows, classes = soft.shape
    one_hot = np.zeros((rows, classes), "float32")
    labelled = np.zeros((rows, 1), "float32")
    if hard is not None:
        hard = np.asarray(hard)
        known = hard >= 0
        one_hot[np.flatnonzero(known), hard[known]] = 1.0
        labelled[known, 0] = 1.0
    return np.concatenate([soft, one_hot, labelled], axis=1)


@keras.saving.register_keras_serializable(package="tl_keras")
class DistillationLoss(keras.losses.Loss):
    """`T^2 KL(soft || student at T) + hard_weight CE(label)` on
    `distillation_targets`, for a student that outputs probabilities.

    Args:
        temperature: the softening temperature `T`.
        hard_weight: the weight of the labelled rows' cross-entropy.
    """

    def __init__(self, temperature=2.0, hard_weight=0.5, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, received {temperature!r}.")
        self.temperature, self.hard_weight = temperature, hard_weight

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        soft, hard, labelled = y_true[:, :classes], y_true[:, classes:2 * classes], y_true[:, -1]
        log_student = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        softened = ops.log_softmax(log_student / self.temperature, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, 1e-12, 1.0)) - softened), axis=-1)
        cross_entropy = -ops.sum(hard * log_student, axis=-1)
        return self.temperature ** 2 * kl + self.hard_weight * labelled * cross_entropy

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "hard_weight": self.hard_weight}
