"""The settings that take one of a fixed set of values, defined once: the
modules that act on them and the command line's `choices` read them here.
The transfer strategy's grammar (`partial:N`, `lora:R`) is here too, with no
TensorFlow, so a bad `--strategy` is refused before TensorFlow loads."""

import dataclasses

TASKS = ("classification", "multilabel", "regression")
POOLINGS = ("mean", "cls", "last", "pooled")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Over frozen features (an adapter trained with the adaptation loss):
FEATURE_ADAPTATION_METHODS = ("source_only", "dann", "coral")
# With a few labelled target texts as well:
FEW_LABEL_METHODS = ("source_then_target", "joint")
# What a domain-adaptation run can use (self-training fine-tunes the backbone):
ADAPTATION_METHODS = ("self_training", *FEATURE_ADAPTATION_METHODS, *FEW_LABEL_METHODS)
FUSIONS = ("uniform", "greedy", "ensemble")
HISTORY_POOLINGS = ("recency", "mean")
TEST_TIME_AUGMENTATIONS = ("none", "flip")

# Each task's default transfer strategy, the same in `from_preset`, the
# workflow configs and the command line (measured in benchmarks/RESULTS.md):
TEXT_STRATEGY = "partial:2"  # Text classification, adaptation, fusion: above frozen, near full, a third of its time.
IMAGE_STRATEGY = "frozen"  # Image classification: within minutes on a CPU (partial:2 gains 1 point, at 11x the time).
# The offline image backbones the image recipe defaults to, each frozen at the photos' size, as one
# ensemble: Lite0 added nothing to Lite1 + Lite2 at 348 pixels on the Grocery val list (benchmarks/RESULTS.md).
IMAGE_BACKBONES = ("lite1", "lite2")
SPAN_STRATEGY = "full"  # Extractive QA: a new span head needs the backbone to move.
TAGGING_STRATEGY = "partial:2"  # Token classification: as text.
GENERATOR_STRATEGY = "lora:8"  # Decoders: SmolLM2 lora:8 answers SQuAD at 50.4 F1 against 12.4 prompted.


KINDS = ("frozen", "partial", "full", "lora")


@dataclasses.dataclass(frozen=True)
class TransferStrategy:
    """A transfer strategy: `kind` is one of `KINDS`; `value` is the number of
    top blocks for `partial` and the rank for `lora`."""

    kind: str
    value: int = 0

    def __str__(self):
        return f"{self.kind}:{self.value}" if self.kind in ("partial", "lora") else self.kind


def parse_strategy(text):
    """Parses `"frozen"`, `"partial:N"`, `"full"` or `"lora:R"`.

    Example:
    >>> parse_strategy("lora:8")
    TransferStrategy(kind='lora', value=8)
    """
    kind, _, value = str(text).partition(":")
    expected = "expected one of 'frozen', 'partial:N', 'full', 'lora:R'"
    if kind not in KINDS:
        raise ValueError(f"Unknown strategy {text!r}; {expected}.")
    if kind in ("frozen", "full"):
        if value:
            raise ValueError(f"Strategy {kind!r} takes no value, received {text!r}.")
        return TransferStrategy(kind)
    if not value.isdigit() or (kind == "lora" and int(value) == 0):
        raise ValueError(
            f"Strategy {text!r} needs a whole number after ':' "
            f"({'rank >= 1' if kind == 'lora' else 'blocks >= 0'}); {expected}."
        )
    return TransferStrategy(kind, int(value))
