"""tl_keras: transfer learning from pretrained KerasHub backbones to TF Serving.

Importing the package selects the TensorFlow backend for Keras; this is the
one place that does it, so import `tl_keras` before `keras`.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up lines (CUDA, oneDNN) are noise on every command;
# set before TensorFlow is imported. Set TF_CPP_MIN_LOG_LEVEL=0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tl_keras needs the TensorFlow backend, but Keras was loaded with "
        f"KERAS_BACKEND={keras.backend.backend()!r}. Set "
        "KERAS_BACKEND=tensorflow, or import tl_keras before keras."
    )

__version__ = "0.1.0"
