"""Differentially private text classification beside the same run without
privacy: accuracy at ε ∈ {1, 3, 8} (δ = 1/(10·n)), wall time, and the
membership-inference audit of each model, in one report.

Datasets: the bundled amazon sentences (1,000) and one category of the
four-category product reviews (1,600; its path is an argument, the data is
never shipped). Each is split once (seed 1234): a stratified 25% test set
scored once at the end, and 10% of the rest for validation; the test rows are
the audit's non-members. The settings below were fixed before the runs and
are the same for every ε and for the non-private baseline.

    .venv/bin/python benchmarks/private_training.py ../shared/data/amazon_multi_domain/kitchen.tsv
    .venv/bin/python benchmarks/private_training.py --strategy lora:8 --epochs 3 --batch-size 32 \
        --head-learning-rate 1e-3 --backbone-learning-rate 5e-4

`--public-start FILE ...` first trains a frozen head on public labelled
texts (the bundled yelp and imdb sentences, say) without privacy, and every
row, private or not, starts from that classifier's preset: public data
spends no privacy budget, and only the second training sees the private
rows.
"""

import argparse
import pathlib
import tempfile
import time

from common import REVIEWS, minilm_l6_offline_path
from tl_keras.core.settings import build_config
from tl_keras.workflows.configs import TextClassificationConfig
from tl_keras.workflows.text_classification import run


def public_head(args, folder):
    """The preset of a frozen MiniLM classifier trained, without privacy,
    on the public files together (the first table's head settings)."""
    public = pathlib.Path(folder) / "public.tsv"
    public.write_text("".join(pathlib.Path(path).read_text(encoding="utf-8").rstrip("\n") + "\n"
                              for path in args.public_start), encoding="utf-8")
    preset = pathlib.Path(folder) / "public_preset"
    result = run(build_config(
        TextClassificationConfig, train=str(public), backbone=minilm_l6_offline_path(),
        output_dir=f"{folder}/public", strategy="frozen", sequence_length=64, pooling="mean", test_fraction=0.25,
        resume=False, epochs=30, batch_size=64, head_learning_rate=3e-3, save_preset=str(preset), verbose=0))
    print(f"public head: {sum(1 for _ in public.open(encoding='utf-8'))} texts, test accuracy "
          f"{result.metrics['test']['accuracy']:.4f}", flush=True)
    return preset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", nargs="?", help="one category's .tsv of the four-category product reviews "
                                                    "(left out: the bundled sentences alone)")
    parser.add_argument("--epsilons", default="1,3,8")
    parser.add_argument("--strategy", default="frozen")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--head-learning-rate", type=float, default=3e-3)
    parser.add_argument("--backbone-learning-rate", type=float, default=None)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--warmup-epochs", type=int, default=1,
                        help="head-only epochs on cached features first (`full`; under DP, `partial:N` and `lora:R` too)")
    parser.add_argument("--public-start", nargs="*", default=(),
                        help="public `text<TAB>label` files a frozen head trains on first, without privacy")
    parser.add_argument("--sentences", action=argparse.BooleanOptionalAction, default=True,
                        help="run the bundled sentences (--no-sentences: the category alone)")
    args = parser.parse_args()
    datasets = {"amazon sentences (bundled)": (REVIEWS, 64)} if args.sentences else {}
    if args.category:
        datasets[pathlib.Path(args.category).stem] = (args.category, 256)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        backbone = minilm_l6_offline_path()
        if args.public_start:
            backbone = public_head(args, folder)
        for name, (path, length) in datasets.items():
            for epsilon in [None, *(float(e) for e in args.epsilons.split(","))]:
                privacy = {} if epsilon is None else {"dp_epsilon": epsilon, "dp_clip": args.clip}
                start = time.perf_counter()
                result = run(build_config(
                    TextClassificationConfig, train=str(path), backbone=str(backbone),
                    output_dir=f"{folder}/{pathlib.Path(str(path)).stem}", strategy=args.strategy,
                    sequence_length=length, pooling="mean", test_fraction=0.25, resume=False, audit=True,
                    epochs=args.epochs, batch_size=args.batch_size, head_learning_rate=args.head_learning_rate,
                    backbone_learning_rate=args.backbone_learning_rate, warmup_epochs=args.warmup_epochs,
                    verbose=0, **privacy))
                seconds = time.perf_counter() - start
                metrics = result.metrics
                spent = metrics.get("privacy", {})
                rows.append([name, "none" if epsilon is None else f"{spent['epsilon']:.2f}",
                             f"{spent.get('noise_multiplier', 0):.3f}", f"{metrics['validation']['accuracy']:.4f}",
                             f"{metrics['test']['accuracy']:.4f}", f"{metrics['audit']['loss_threshold']['auc']:.3f}",
                             f"{metrics['audit']['class_calibrated']['auc']:.3f}",
                             f"{metrics['audit']['loss_threshold']['tpr_at_1pct_fpr']:.3f}", f"{seconds:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    start = f", from a head trained on {' + '.join(map(str, args.public_start))}" if args.public_start else ""
    print(f"\nstrategy {args.strategy}{start}, {args.epochs} epochs, batch {args.batch_size}, head lr "
          f"{args.head_learning_rate:g}, clip {args.clip:g}; δ = 1/(10·n)")
    print("| data | ε spent | noise | validation acc | test acc | audit AUC (loss) | audit AUC (calibrated) "
          "| TPR@1%FPR | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
