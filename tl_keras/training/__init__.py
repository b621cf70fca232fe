"""Fitting under `tf.distribute`: the strategy"s phases, the multi-worker loop, resumable runs, DP-SGD."""

__all__ = ["config", "continued_pretraining", "distribution", "multi_worker", "privacy", "runs", "trainer"]
