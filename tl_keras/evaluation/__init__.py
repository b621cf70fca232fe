"""Metrics and plots: classification reports, ranking metrics, the membership-inference audit."""

__all__ = ["classification", "explanations", "hierarchy", "plots", "privacy_audit", "ranking", "squad"]
