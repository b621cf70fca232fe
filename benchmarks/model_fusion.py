"""Model fusion on the amazon reviews: three MiniLM-L6 models fine-tuned
(`partial:2`) with different seeds, their uniform soup, greedy soup and
prediction ensemble; validation and held-out accuracy of each, and parameters
(the soups cost one model's inference, the ensemble three).

    .venv/bin/python benchmarks/model_fusion.py
"""

import tempfile

from common import REVIEWS
from tl_keras.core.settings import build_config
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.workflows.model_fusion import ModelFusionConfig, run


def main():
    with tempfile.TemporaryDirectory() as folder:
        metrics = run(build_config(ModelFusionConfig, train=str(REVIEWS), backbone=minilm_l6_offline_path(), output_dir=folder,
                                        ingredients=3, epochs=2)).metrics
    print(f"{'model':14s}{'validation':>12s}{'held-out':>10s}{'parameters':>13s}")
    for name, result in metrics.items():
        print(f"{name:14s}{result['validation_accuracy']:12.4f}{result['test_accuracy']:10.4f}"
              f"{result['parameters']:13,}")
    print(f"greedy soup kept ingredients {metrics['greedy_soup']['ingredients_kept']}")


if __name__ == "__main__":
    main()
