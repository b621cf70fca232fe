"""Full fine-tune step time: the tl_keras model vs the KerasHub task model.

Both wrap the same MiniLM backbone with the same head shape (BERT pooler,
dropout, dense) and train on identical padded batches (16 x 64), with the same
optimizer. Steps alternate between the two so machine noise hits both alike.
Target: tl_keras / KerasHub <= 1.05.

    .venv/bin/python benchmarks/wrapper_overhead.py
"""

import argparse
import time

from common import keras_hub_classifier, reviews
import keras
import numpy as np

from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.data.tokens import tokenize


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=64)
    args = parser.parse_args()
    train, _, _, train_y, _ = reviews()

    hub = keras_hub_classifier(args.sequence_length, with_preprocessor=False)
    backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), args.sequence_length)
    ours = build_text_model(build_encoder(backbone, "pooled"), build_head(384, 2, "classification"))
    tokens = tokenize(train.texts[: args.batch_size], preprocessor, verbose=0)  # Padded to 64, untrimmed.
    x, y = tokens.arrays, train_y[: args.batch_size]
    # KerasHub's head returns logits, ours probabilities: each gets its loss.
    for model, from_logits in ((hub, True), (ours, False)):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        model.compile(optimizer=keras.optimizers.AdamW(5e-5), loss=loss)
        for _ in range(3):  # Trace and warm up.
            model.train_on_batch(x, y)
    times = {"hub": [], "ours": []}
    for _ in range(args.steps):
        for name, model in (("hub", hub), ("ours", ours)):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    hub_ms, ours_ms = (1000 * np.median(times[k]) for k in ("hub", "ours"))
    print(f"full fine-tune step, batch {args.batch_size} x {args.sequence_length}, median of {args.steps} alternating steps")
    print(f"KerasHub BertTextClassifier: {hub_ms:7.1f} ms/step")
    print(f"tl_keras text model:         {ours_ms:7.1f} ms/step")
    print(f"ratio {ours_ms / hub_ms:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
