"""`TrainingConfig`: how to train, with no TensorFlow import (so the
command line can describe it quickly)."""

import dataclasses

from tl_keras.core.ranges import check_settings
from tl_keras.core.settings import documented, setting


@documented
@dataclasses.dataclass
class TrainingConfig:
    """How to train: the `training` group of every workflow's config (its
    fields are flags of their own: `--epochs`, `--head-learning-rate`).

    Example:
    >>> TextClassifier.from_preset(backbone, labels=names).fit(
    ...     texts, labels, **dataclasses.asdict(TrainingConfig(epochs=2)))
    """

    epochs: int = setting(3, "epochs of the strategy's main phase.")
    batch_size: int = setting(16, "examples a replica takes a step (the global batch is this times the replicas "
                                  "in sync).")
    head_learning_rate: float = setting(1e-3, "the learning rate of what trains above the backbone (the head, the "
                                              "recommender's towers' projections, the domain adapter, the "
                                              "distilled student).")
    backbone_learning_rate: float = setting(None, "the top backbone block's learning rate; `None` takes the "
                                                  "strategy's default (5e-5, or 5e-4 for LoRA weights).")
    layer_decay: float = setting(0.8, "each lower block's rate is this times the one above (`full` only; "
                                      "`partial` and `lora` use 1.0).")
    warmup_epochs: int = setting(1, "head-only epochs before `full` unfreezes the backbone (and, under DP-SGD, "
                                    "before `partial:N` or `lora:R` trains: a private linear probe first, in the "
                                    "same budget).")
    seed: int = setting(1234, "seeds weights, dropout, splits and shuffling.")
    shuffle: bool = setting(True, "reshuffle the training rows every epoch (off only for runs that must see the "
                                  "rows in file order).")
    jit_compile: bool = setting(False, "compile training steps with XLA (one compile a bucket width). Off by "
                                       "default: on 2 CPU cores the compiles cost more than they save over a few "
                                       "epochs (benchmarks/RESULTS.md).")
    backup_dir: str = setting(None, "a folder for per-epoch backups; a run killed and started again with the same "
                                    "folder resumes from its last whole epoch. `None` keeps no backups.")
    verbose: int = setting(1, "Keras progress bars (1) or none (0).")
    dp_clip: float = setting(None, "train with DP-SGD: each example's gradient clipped to this L2 norm (1.0 when "
                                   "`dp_epsilon` or `dp_noise` is given alone); `None` trains without privacy.")
    dp_noise: float = setting(None, "DP-SGD's noise multiplier (the Gaussian noise's std over `dp_clip`), or "
                                    "`None` to solve it from `dp_epsilon`.")
    dp_epsilon: float = setting(None, "the privacy budget ε the run may spend: the least noise that stays within "
                                      "it over all the run's steps (RDP accounting, `dp-accounting`).")
    dp_delta: float = setting(None, "the δ of the (ε, δ) guarantee; `None` takes 1/(10·n) for n training rows.")

    def __post_init__(self):
        check_settings(self)
