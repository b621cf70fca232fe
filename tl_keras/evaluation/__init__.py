"""Metrics and plots: classification reports, ranking metrics."""

__all__ = ["classification", "plots", "ranking"]
