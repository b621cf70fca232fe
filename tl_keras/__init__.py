"""tl_keras: transfer learning from pretrained KerasHub backbones to TF Serving.

Importing the package selects the TensorFlow backend for Keras (import
`tl_keras` before `keras`) and quiets TensorFlow's C++ start-up logging; it
imports neither, so `tl-keras --help` is quick. The task models load on
first use:

>>> import tl_keras
>>> classifier = tl_keras.TextClassifier.from_preset(preset, labels=["neg", "pos"])

The layers, in the order data flows (each imports only from those before
it): `core`, `data`, `models`, `transfer`, `training`, `evaluation`,
`export`, `tasks`, `serving`, `pipelines`, `workflows`, `cli`.
"""

import importlib
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up lines (CUDA, oneDNN) are noise on every command;
# set before TensorFlow is imported. Set TF_CPP_MIN_LOG_LEVEL=0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
    raise ImportError(
        "tl_keras needs the TensorFlow backend, but Keras was loaded with "
        f"KERAS_BACKEND={sys.modules['keras'].backend.backend()!r}. Set "
        "KERAS_BACKEND=tensorflow, or import tl_keras before keras."
    )

__version__ = "0.2.0"
LAYERS = ("core", "data", "models", "transfer", "training", "evaluation", "export", "tasks", "serving",
          "pipelines", "workflows", "cli")
_TASKS = {"TextClassifier": "tl_keras.tasks.text_classifier", "ImageClassifier": "tl_keras.tasks.image_classifier",
          "Retrieval": "tl_keras.tasks.retrieval", "QuestionAnswerer": "tl_keras.tasks.question_answering",
          "CatalogueRecognizer": "tl_keras.tasks.catalogue_recognizer",
          "TokenClassifier": "tl_keras.tasks.token_classifier",
          "PromptedClassifier": "tl_keras.tasks.prompted_classifier", "TextGenerator": "tl_keras.tasks.text_generator"}
__all__ = [*_TASKS, *LAYERS]


def __getattr__(name):
    # Lazy: the task modules import TensorFlow, which the command line's
    # help must not wait for.
    if name in _TASKS:
        from tl_keras.core.quiet import import_tensorflow_quietly

        import_tensorflow_quietly()  # Without TensorFlow's C++ start-up lines.
        return getattr(importlib.import_module(_TASKS[name]), name)
    if name in LAYERS:
        return importlib.import_module(f"tl_keras.{name}")
    raise AttributeError(f"module 'tl_keras' has no attribute {name!r}")
