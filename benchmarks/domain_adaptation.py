"""Domain adaptation across the three review domains: target accuracy of
source-only, DANN and Deep CORAL for every ordered pair (amazon, yelp, imdb),
averaged over seeds, with the spread.

MiniLM-L6 stays frozen (masked-mean features, computed once a domain); the
adapter and classifier train on all 800 labelled source sentences and the 800
unlabelled target sentences, and are scored on the target's labels.

    .venv/bin/python benchmarks/domain_adaptation.py --seeds 3
"""

import argparse
import itertools

import numpy as np

from common import REVIEWS
from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.data.texts import LabelVocabulary, read_labelled_texts
from tl_keras.core.choices import FEATURE_ADAPTATION_METHODS as METHODS
from tl_keras.transfer.domain_adaptation import adapt
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.models.heads import build_encoder
from tl_keras.data.tokens import tokenize

DOMAINS = {"amazon": "amazon_cells_labelled.txt", "yelp": "yelp_labelled.txt", "imdb": "imdb_labelled.txt"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), 64)
    encoder = build_encoder(backbone, "mean")
    cache = FeatureCache()
    vocabulary = LabelVocabulary.from_labels(["0", "1"])
    data = {}
    for name, file in DOMAINS.items():
        rows = read_labelled_texts(REVIEWS.parent / file)
        data[name] = (cache.features(encoder, tokenize(rows.texts, preprocessor, verbose=0), verbose=0),
                      vocabulary.encode(rows.labels))
    print(f"target accuracy, mean ± std over {args.seeds} seeds, {args.epochs} epochs, frozen MiniLM-L6 features")
    print(f"{'source → target':18s}" + "".join(f"{m:>18s}" for m in METHODS))
    totals = {m: [] for m in METHODS}
    for source, target in itertools.permutations(DOMAINS, 2):
        (source_x, source_y), (target_x, target_y) = data[source], data[target]
        row = f"{source + ' → ' + target:18s}"
        for method in METHODS:
            scores = []
            for seed in range(args.seeds):
                head, _ = adapt(source_x, source_y, target_x, 2, method, epochs=args.epochs, seed=seed)
                scores.append(float(np.mean(head.predict(target_x, verbose=0).argmax(axis=1) == target_y)))
            totals[method].append(np.mean(scores))
            row += f"{np.mean(scores):12.4f} ± {np.std(scores):.3f}"
        print(row, flush=True)
    print(f"{'mean of pairs':18s}" + "".join(f"{np.mean(totals[m]):18.4f}" for m in METHODS))


if __name__ == "__main__":
    main()
