"""The `tl-keras` command and the recipes" flags."""

__all__ = ["flags", "main", "workflows"]
