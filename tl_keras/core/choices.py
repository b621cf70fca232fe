"""The settings that take one of a fixed set of values, defined once: the
modules that act on them and the command line's `choices` read them here."""

TASKS = ("classification", "multilabel", "regression")
POOLINGS = ("mean", "cls", "pooled")
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
