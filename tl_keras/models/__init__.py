"""Backbones from KerasHub presets, pooling and heads, two-tower retrieval models, collaborative
baselines, item indexes."""

__all__ = ["backbones", "catalogue_matching", "collaborative", "decoders", "efficientnet_lite", "extractive_qa", "gguf", "heads", "lexical_qa", "recommender", "two_tower"]
