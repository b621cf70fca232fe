"""Importing TensorFlow without its C++ start-up lines.

TensorFlow's native libraries log (CUDA probing, oneDNN) to file descriptor
2 before they read `TF_CPP_MIN_LOG_LEVEL`, so the variable alone cannot
quiet them; the command line imports TensorFlow and lists its devices (where
CUDA is probed, "failed call to cuInit" on a CPU machine) and runs a graph
that meets oneDNN's once-a-process int64 notice, with that descriptor
pointed at /dev/null, unless `TF_CPP_MIN_LOG_LEVEL` is 0.
"""

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_devices_listed = False


def import_tensorflow_quietly():
    """Imports TensorFlow (and TF Text), its native start-up logging
    silenced; a failed import still raises its error.

    Example:
    >>> import_tensorflow_quietly()
    """
    global _devices_listed
    if _devices_listed or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        return
    _devices_listed = True
    # Also when TensorFlow was imported already (by a module that needs it):
    # its devices, and the CUDA probe's line, may still be to come.
    with _native_stderr_silenced():
        import tensorflow
        import keras  # noqa: F401

        # The CUDA platform logs "failed call to cuInit" on a machine without
        # a GPU when devices are first listed; list them here, silenced.
        tensorflow.config.list_physical_devices()
        # On CPUs without AVX-512, the first graph that meets oneDNN's rewrite
        # with an int64 op logs "oneDNN supports DT_INT64 only on platforms
        # with AVX-512" (once a process; KerasHub's packers' ragged concat
        # is such a graph); meet it here, silenced.
        ragged = tensorflow.ragged.constant([[1]])
        for _ in tensorflow.data.Dataset.from_tensors(ragged).map(lambda r: tensorflow.concat([r, r], axis=1)):
            pass


class _BeamNotices(logging.Filter):
    """Drops Apache Beam's root-logger warnings that say nothing about the
    job: the BigQuery client missing (an extra this job does not use) and
    "Resource module is not available" (logged on every batch because
    Beam's model manager imports torch, which is not installed)."""

    NOTICES = ("apitools not found", "Resource module is not available")

    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith(self.NOTICES))


@contextlib.contextmanager
def beam_notices_dropped():
    """Within it, `_BeamNotices` are not logged.

    Example:
    >>> with beam_notices_dropped():
    ...     pipeline.run().wait_until_finish()
    """
    notices = _BeamNotices()
    logging.getLogger().addFilter(notices)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notices)
