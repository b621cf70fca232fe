"""`TrainingConfig`: how to train, with no TensorFlow import (so the
command line can describe it quickly)."""

import dataclasses

from tl_keras.core.ranges import check_settings


@dataclasses.dataclass
class TrainingConfig:
    """How to train.

    Args:
        epochs: epochs of the strategy's main phase.
        batch_size: examples a replica takes a step (the global batch is
            this times the replicas in sync).
        head_learning_rate: the head's learning rate.
        backbone_learning_rate: the top backbone block's learning rate; `None`
            takes the strategy's default (5e-5, or 5e-4 for LoRA weights).
        layer_decay: each lower block's rate is this times the one above
            (`full` only; `partial` and `lora` use 1.0).
        warmup_epochs: head-only epochs before `full` unfreezes the backbone.
        seed: seeds weights, dropout and shuffling.
        shuffle: reshuffle the training rows every epoch (off only for
            runs that must see the rows in file order).
        jit_compile: compile training steps with XLA (one compile a bucket
            width). Off by default: on 2 CPU cores the compiles cost more
            than they save over a few epochs (benchmarks/RESULTS.md).
        backup_dir: a folder for per-epoch backups; a run killed and started
            again with the same folder resumes from its last whole epoch.
            `None` keeps no backups.
        verbose: Keras progress bars (1) or none (0).
    """

    epochs: int = 3
    batch_size: int = 16
    head_learning_rate: float = 1e-3
    backbone_learning_rate: float = None
    layer_decay: float = 0.8
    warmup_epochs: int = 1
    seed: int = 1234
    shuffle: bool = True
    jit_compile: bool = False
    backup_dir: str = None
    verbose: int = 1

    def __post_init__(self):
        check_settings(self)
