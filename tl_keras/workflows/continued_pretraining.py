"""The continued pretraining job: unlabelled in-domain texts in, an adapted
backbone preset (for any `--backbone`) and its masked-LM loss out."""

from tl_keras.data.texts import read_texts
from tl_keras.training.continued_pretraining import continue_pretraining
from tl_keras.training.distribution import set_precision
from tl_keras.training.runs import holding_run_folder
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import ContinuedPretrainingConfig  # noqa: F401  (the config of `run`)


@holding_run_folder
def run(config):
    """Continues masked-LM pretraining of `config.backbone` on
    `config.texts` and writes the adapted preset to `config.output_preset`.
    Returns a `RunResult` with no `task` (the run's product is a backbone
    preset, at `preset_path`, for any task's `from_preset`) whose `metrics`
    hold the masked-LM loss by epoch."""
    texts = read_texts(config.texts, config.text_column)
    set_precision(config.runtime.precision)
    training = config.training
    path, history = continue_pretraining(
        config.backbone, texts, config.output_preset, sequence_length=config.sequence_length, epochs=training.epochs,
        batch_size=training.batch_size, learning_rate=training.backbone_learning_rate, mask_rate=config.mask_rate,
        seed=training.seed, distribute=config.runtime.distribute, verbose=training.verbose)
    metrics = {"masked_lm_loss": [float(loss) for loss in history["loss"]], "texts": len(texts)}
    return finish(RunResult(None, metrics, history, preset_path=path), config, lambda folder: [])


def describe(result):
    """The run's closing line: the masked-LM loss and the adapted preset."""
    losses = result.metrics["masked_lm_loss"]
    return f"masked-LM loss {losses[0]:.4f} -> {losses[-1]:.4f}; adapted preset: {result.preset_path}"
