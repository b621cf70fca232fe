"""The allowed range of every numeric setting, checked where a config is made.

One table for all workflows, keyed by the setting's name: a name means the
same thing in every config (`epochs`, `learning_rate`, ...), so its range is
stated once. `check_settings` raises `ValueError` echoing the value.
"""

import dataclasses
import math

from tl_keras.core.choices import parse_strategy


@dataclasses.dataclass(frozen=True)
class Range:
    """`low`/`high` bounds (`None`: unbounded), each inclusive or not, and
    whether the value must be an integer."""

    low: float = None
    high: float = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    integer: bool = False

    def contains(self, value):
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return self.high is None or value < self.high or (value == self.high and self.high_inclusive)

    def describe(self):
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}"
                    f"{']' if self.high_inclusive else ')'}")
        if self.low is not None:
            return f"{kind} {'>=' if self.low_inclusive else '>'} {self.low:g}"
        return kind


def _count(low=1, high=None):
    return Range(low, high, integer=True)


POSITIVE = Range(0, low_inclusive=False)
FRACTION = Range(0, 1, low_inclusive=False, high_inclusive=False)

SETTING_RANGES = {
    "epochs": _count(),
    "warmup_epochs": _count(0),
    "pretraining_epochs": _count(0),
    "batch_size": _count(),
    "sequence_length": _count(2),
    "image_size": _count(8, 4096),
    "hidden_dim": _count(0),
    "text_hidden_dim": _count(0),
    "embedding_dim": _count(),
    "holdout": _count(),
    "history_length": _count(),
    "patience": _count(),
    "sampled_negatives": _count(0),
    "cold_start_items": Range(0, 1, high_inclusive=False),
    "cold_start_users": Range(0, 1, high_inclusive=False),
    "cold_start_keep": _count(),
    "top_k": _count(),
    "doc_stride": _count(),
    "max_question_length": _count(),
    "max_answer_length": _count(),
    "max_train_questions": _count(),
    "max_train_examples": _count(),
    "max_new_tokens": _count(),
    "n_best": _count(),
    "ingredients": _count(),
    "seed": _count(0),
    "verbose": _count(0, 2),
    "validation_fraction": FRACTION,
    "test_fraction": FRACTION,
    "target_test_fraction": FRACTION,
    "mask_rate": FRACTION,
    "dropout": Range(0, 1, high_inclusive=False),
    "id_dropout": Range(0, 1, high_inclusive=False),
    "learning_rate": POSITIVE,
    "head_learning_rate": POSITIVE,
    "backbone_learning_rate": POSITIVE,
    "layer_decay": Range(0, 1, low_inclusive=False),
    "temperature": POSITIVE,
    "alpha": POSITIVE,
    "coral_weight": POSITIVE,
    "num_blocks": _count(),
    "hard_weight": Range(0),
    "no_answer_threshold": Range(),  # A score difference: any finite number.
    "dp_clip": POSITIVE,
    "dp_noise": Range(0),
    "dp_epsilon": POSITIVE,
    "dp_delta": FRACTION,
}


def check_settings(settings):
    """Checks each numeric setting of `settings` (a dict, or a dataclass)
    against `SETTING_RANGES`; `None` means "the default" and is not checked.

    Example:
    >>> check_settings({"mask_rate": 1.5})
    Traceback (most recent call last):
    ValueError: `mask_rate` must be a number in (0, 1), received 1.5.
    """
    if dataclasses.is_dataclass(settings):
        settings = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}
    for name, value in settings.items():
        if name == "strategy" and value is not None:
            parse_strategy(value)  # Its own grammar, named in its error.
        allowed = SETTING_RANGES.get(name)
        if allowed is None or value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (not number or (allowed.integer and not isinstance(value, int))
                or not math.isfinite(value) or not allowed.contains(value)):
            raise ValueError(f"`{name}` must be {allowed.describe()}, received {value!r}.")
    held_out = [settings.get(name) or 0 for name in ("validation_fraction", "test_fraction")]
    if sum(held_out) >= 1:
        raise ValueError(f"`validation_fraction` + `test_fraction` must be < 1 (some rows must train), received "
                         f"{held_out[0]!r} + {held_out[1]!r}.")
    pair = settings.get("pair_column")
    if pair is not None and pair in (settings.get("text_column"), settings.get("label_column")):
        raise ValueError(f"`pair_column` {pair!r} must differ from `text_column` {settings.get('text_column')!r} "
                         f"and `label_column` {settings.get('label_column')!r}.")
