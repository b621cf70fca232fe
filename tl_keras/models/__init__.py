"""Backbones from KerasHub presets, pooling and heads, two-tower retrieval models, collaborative
baselines, item indexes."""

__all__ = ["backbones", "collaborative", "efficientnet_lite", "heads", "recommender", "two_tower"]
