"""Metrics and plots: classification reports, ranking metrics."""

__all__ = ["classification", "explanations", "hierarchy", "plots", "ranking", "squad"]
