"""Backbones from KerasHub presets, pooling and heads, two-tower retrieval models, item indexes."""

__all__ = ["backbones", "efficientnet_lite", "heads", "recommender", "two_tower"]
