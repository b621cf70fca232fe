"""Continued pretraining recipe: masked-LM training of a backbone on
unlabelled in-domain text, saved as a preset folder for `--backbone`.

    python recipes/continued_pretraining.py \
        --texts data/sentiment_labelled_sentences/yelp_labelled.txt \
        --output-preset presets/minilm_yelp --epochs 2
"""

import argparse
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.continued_pretraining import continue_pretraining
from tl_keras.data import read_texts
from tl_keras.flags import main_with_error_line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--texts", required=True, help=".tsv/.txt (first field), .csv or .jsonl of texts")
    parser.add_argument("--text-column", default="text", help="the text column of a .csv/.jsonl")
    parser.add_argument("--backbone", default=None, help="KerasHub preset (default: offline MiniLM-L6)")
    parser.add_argument("--output-preset", required=True, help="a new folder for the adapted preset")
    parser.add_argument("--sequence-length", type=int, default=128, help="token positions per text")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the texts, a new mask each")
    parser.add_argument("--batch-size", type=int, default=16, help="texts a replica takes a step")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW learning rate")
    parser.add_argument("--mask-rate", type=float, default=0.15, help="share of tokens chosen for masking, in (0, 1)")
    parser.add_argument("--seed", type=int, default=1234, help="seeds weights, masks and shuffling")
    parser.add_argument("--distribute", default="auto", choices=("auto", "none", "mirrored", "multi_worker"),
                        help="the tf.distribute strategy")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    path, history = continue_pretraining(
        args.backbone or minilm_l6_offline_path(), read_texts(args.texts, args.text_column), args.output_preset,
        sequence_length=args.sequence_length, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, mask_rate=args.mask_rate, seed=args.seed, distribute=args.distribute,
    )
    print(f"masked-LM loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}; adapted preset: {path}")


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
