"""The settings that take one of a fixed set of values, defined once: the
modules that act on them and the command line's `choices` read them here."""

TASKS = ("classification", "multilabel", "regression")
POOLINGS = ("mean", "cls", "pooled")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
ADAPTATION_METHODS = ("source_only", "dann", "coral")
FUSIONS = ("uniform", "greedy", "ensemble")
HISTORY_POOLINGS = ("recency", "mean")
