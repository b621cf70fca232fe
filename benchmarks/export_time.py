"""Export time of one MiniLM-L6 text classifier as float32, float16 and
int8 SavedModels, side by side in one run, and the int8 quantization step
alone with and without the garbage collector's existing objects frozen
(Keras collects garbage every time a layer drops its float kernel; see
`TextClassifier.export`).

    .venv/bin/python benchmarks/export_time.py
"""

import gc
import tempfile
import time
import warnings

import tl_keras
from tl_keras.core.offline import minilm_l6_offline_path


def quantize_seconds(classifier, freeze):
    model = classifier.merged_copy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
        if freeze:
            gc.freeze()
        for part in (model.backbone, model.head):
            part.quantize("int8")
        if freeze:
            gc.unfreeze()
            gc.collect()
    return time.perf_counter() - start


def main():
    classifier = tl_keras.TextClassifier.from_preset(minilm_l6_offline_path(), labels=["neg", "pos"],
                                                     strategy="partial:2", sequence_length=64)
    classifier.predict(["warm the graph"], verbose=0)
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for quantize in (None, "float16", "int8"):
            start = time.perf_counter()
            classifier.export(folder, quantize or "float32", quantize=quantize)
            seconds[quantize or "float32"] = time.perf_counter() - start
    print("| export | seconds | against float32 |\n| --- | --- | --- |")
    for name, value in seconds.items():
        print(f"| {name} | {value:.1f} | {value / seconds['float32']:.2f}x |")
    plain, frozen = quantize_seconds(classifier, freeze=False), quantize_seconds(classifier, freeze=True)
    print(f"\nint8 quantization step alone: {plain:.1f} s as Keras does it, {frozen:.1f} s with existing objects "
          f"frozen ({plain / frozen:.1f}x faster)")


if __name__ == "__main__":
    main()
