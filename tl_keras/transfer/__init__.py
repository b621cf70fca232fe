"""What transfers and how: strategies, LoRA, the frozen-feature cache, domain adaptation, fusion."""

__all__ = ["distillation", "domain_adaptation", "feature_cache", "fusion", "strategies"]
