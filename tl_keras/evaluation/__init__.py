"""Metrics and plots: classification reports, ranking metrics."""

__all__ = ["classification", "explanations", "plots", "ranking", "squad"]
