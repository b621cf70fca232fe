"""What transfers and how: strategies, LoRA, the frozen-feature cache, domain adaptation,
self-training, fusion."""

__all__ = ["distillation", "domain_adaptation", "feature_cache", "fusion", "self_training", "sharded_features", "strategies"]
