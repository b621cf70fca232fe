"""Fitting under `tf.distribute`: the strategy"s phases, the multi-worker loop, resumable runs."""

__all__ = ["config", "continued_pretraining", "distribution", "multi_worker", "runs", "trainer"]
