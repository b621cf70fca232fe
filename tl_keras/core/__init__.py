"""Foundation with no TensorFlow: atomic files and verified caches, progress bars, setting ranges."""

__all__ = ["choices", "files", "offline", "progress", "quiet", "ranges"]
