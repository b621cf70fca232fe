"""Foundation with no TensorFlow: atomic files and verified caches, progress bars, setting ranges, settings
dataclasses (help in metadata, shared groups flattened to one namespace)."""

__all__ = ["choices", "files", "offline", "progress", "quiet", "ranges", "settings"]
