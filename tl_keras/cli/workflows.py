"""The `tl-keras` subcommands that run workflows (`train-text`,
`train-image`, `recommend`, `adapt`, `fuse`, `pretrain`, `train-qa`,
`distill`, `train-generator`): flags from the
workflow's config, defaults filled where a run can make its own (the offline
backbones, sample data), the workflow run, its closing lines printed.

This module imports no TensorFlow: the workflow is imported when it runs.
"""

import argparse
import dataclasses
import importlib
import pathlib

from tl_keras.cli.flags import add_config_flags, build, settings_from
from tl_keras.core.choices import IMAGE_BACKBONES
from tl_keras.core.offline import minilm_l6_offline_path, smollm2_offline_path
from tl_keras.core.quiet import import_tensorflow_quietly
from tl_keras.workflows import configs


def _default_text_backbone(settings):
    settings["backbone"] = settings.get("backbone") or minilm_l6_offline_path()


def _default_decoder_backbone(settings):
    settings["backbone"] = settings.get("backbone") or smollm2_offline_path()


def _image_defaults(settings):
    from tl_keras.data.sample_images import write_sample_images
    from tl_keras.models.efficientnet_lite import offline_lite_preset

    output_dir = pathlib.Path(settings["output_dir"])
    if not settings.get("backbone"):
        settings["backbone"] = ",".join(str(offline_lite_preset(output_dir / "presets", variant))
                                        for variant in IMAGE_BACKBONES)
    if not settings.get("train"):
        settings["train"] = str(write_sample_images(output_dir / "sample_images"))


def _shop_defaults(settings):
    _default_text_backbone(settings)
    if settings.get("movielens"):
        if settings.get("interactions") or settings.get("items"):
            raise ValueError("--movielens replaces --interactions/--items/--users; give one or the other.")
        from tl_keras.data.movielens import convert_movielens

        folder = pathlib.Path(settings["output_dir"]) / "movielens_data"
        items, interactions, users = convert_movielens(settings["movielens"], folder)
        settings.update(items=str(items), interactions=str(interactions), users=str(users))
        print(f"MovieLens-100k converted to {folder}")
        return
    if settings.get("interactions"):
        if not settings.get("items"):
            raise ValueError("--interactions needs --items (an item_id,text CSV).")
        return
    if settings.get("items") or settings.get("users"):
        raise ValueError("--items and --users need --interactions too.")
    from tl_keras.data.synthetic_shop import make_synthetic_shop

    folder = pathlib.Path(settings["output_dir"]) / "synthetic_shop"
    items, interactions, users = make_synthetic_shop(seed=settings.get("seed", 1234)).write(folder)
    settings.update(items=str(items), interactions=str(interactions), users=str(users))
    print(f"synthetic shop written to {folder}")


@dataclasses.dataclass(frozen=True)
class WorkflowCommand:
    """One workflow subcommand.

    Args:
        name: the subcommand (`train-text`).
        summary: its one-line help.
        config: the workflow's config dataclass.
        module: the workflow module (`tl_keras.workflows.<module>`), whose
            `run(config)` runs it and whose `describe(result)`, if any,
            gives the closing lines.
        defaults: settings over the config's own defaults.
        fill: `settings -> None`, filling what a run can make itself.
        help: `{field: text}` over the docstring's help.
        fills: the settings `fill` sets when the flags leave them out.
    """

    name: str
    summary: str
    config: type
    module: str
    defaults: dict = dataclasses.field(default_factory=dict)
    fill: object = _default_text_backbone
    help: dict = dataclasses.field(default_factory=dict)
    fills: tuple = ("backbone",)

    def add_parser(self, commands):
        parser = commands.add_parser(self.name, help=self.summary, description=self.summary)
        add_config_flags(parser, self.config, self.defaults, self.help)
        parser.set_defaults(run=self.run, tensorflow=False)  # `run` loads it after checking the settings.
        return parser

    def check(self, settings):
        """Every setting checked before TensorFlow loads (seconds here):
        the required ones the run cannot fill itself, and each value's range
        and form (`SETTING_RANGES`, the strategy's grammar, the configs' own
        checks), with what the run fills (backbone, data) standing in."""
        filled = {name: f"<{name}>" for name in self.fills if settings.get(name) is None}
        build(self.config, {**settings, **filled})

    def run(self, args, defaults=None):
        """Builds the config from `args` (over `defaults`, then the
        command's own), runs the workflow and prints its closing lines."""
        settings = settings_from(args, self.config, {**self.defaults, **(defaults or {})})
        self.check(settings)
        import_tensorflow_quietly()
        self.fill(settings)
        config = build(self.config, settings)
        workflow = importlib.import_module(f"tl_keras.workflows.{self.module}")
        print(f"{self.name}: {getattr(config, 'backbone', None) or getattr(config, 'teacher', '')}")
        result = workflow.run(config)
        if hasattr(workflow, "describe"):
            print(workflow.describe(result))
        else:
            print(f"metrics: {result.metrics}")
        return 0


BACKBONE_HELP = ("KerasHub preset: Kaggle handle, preset folder, Hugging Face folder or Llama-architecture .gguf file "
                 "(default: offline MiniLM-L6)")
COMMANDS = (
    WorkflowCommand("train-text", "train a text classifier (or regressor) on a labelled file and export it",
                    configs.TextClassificationConfig, "text_classification",
                    {"output_dir": "runs/text_classification", "sequence_length": 64},
                    help={"backbone": BACKBONE_HELP, "strategy": "frozen, partial:N, full or lora:R"}),
    WorkflowCommand("train-image", "train an image classifier on labelled photos and export it",
                    configs.ImageClassificationConfig, "image_classification",
                    {"output_dir": "runs/image_classification"}, _image_defaults,
                    {"backbone": "KerasHub image preset, or several separated by commas, whose classifiers are averaged "
                                 "(default: offline EfficientNet-Lite1 and Lite2, converted once)",
                     "train": "folder of a sub-folder per class, or a path,label CSV (default: sample photos)",
                     "strategy": "frozen, partial:N (top N stages) or full",
                     "epochs": "epochs of the strategy's main phase (default: 30 with frozen, 8 with partial:N or "
                               "full)"}, fills=("backbone", "train")),
    WorkflowCommand("recommend", "train a two-tower recommender with a pretrained item text tower",
                    configs.RecommendationConfig, "recommendation",
                    {"output_dir": "runs/recommendation", "model_name": "shop_retrieval"}, _shop_defaults,
                    {"backbone": BACKBONE_HELP, "interactions": "user_id,item_id[,timestamp][,rating] CSV "
                     "(default: generate the synthetic shop)"}, fills=("backbone", "interactions", "items", "users")),
    WorkflowCommand("adapt", "adapt a classifier from labelled source texts to unlabelled target texts",
                    configs.DomainAdaptationConfig, "domain_adaptation", {"output_dir": "runs/domain_adaptation"},
                    help={"backbone": BACKBONE_HELP}),
    WorkflowCommand("fuse", "fine-tune several classifiers and fuse them (soups, ensemble)",
                    configs.ModelFusionConfig, "model_fusion", {"output_dir": "runs/model_fusion"},
                    help={"backbone": BACKBONE_HELP}),
    WorkflowCommand("pretrain", "continue masked-LM pretraining of a backbone on in-domain texts",
                    configs.ContinuedPretrainingConfig, "continued_pretraining", help={"backbone": BACKBONE_HELP}),
    WorkflowCommand("train-qa", "train an extractive question answerer on SQuAD-format data and export it",
                    configs.QuestionAnsweringConfig, "question_answering", {"output_dir": "runs/question_answering"},
                    help={"backbone": BACKBONE_HELP + "; BERT family",
                          "strategy": "full, partial:N, lora:R or frozen"}),
    WorkflowCommand("distill", "distil a saved text classifier into a student with fewer blocks",
                    configs.DistillationConfig, "distillation", {"output_dir": "runs/distillation"},
                    fill=lambda settings: None, fills=()),
    WorkflowCommand("train-generator", "fine-tune a decoder on prompt → answer pairs beside it prompted, and export "
                    "a generation SavedModel", configs.TextGenerationConfig, "text_generation",
                    {"output_dir": "runs/text_generation"}, _default_decoder_backbone,
                    {"backbone": "Llama-family decoder: .gguf file (converted once), preset folder or Hugging Face "
                                 "Llama folder (default: offline SmolLM2-135M-Instruct)",
                     "strategy": "lora:R, partial:N or full"}),
)


def command(name):
    """The `WorkflowCommand` called `name`."""
    for candidate in COMMANDS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown workflow command {name!r}; one of {[c.name for c in COMMANDS]}")


def run_recipe(name, argv=None, defaults=None, description=None):
    """What a recipe script does: runs the workflow command `name` with the
    recipe's own `defaults` (under `--config` and the flags); errors raise
    (wrap in `main_with_error_line` for one error line).

    Example:
    >>> run_recipe("train-text", ["--epochs", "2"], {"train": "data/reviews.tsv"})
    """
    workflow = command(name)
    defaults = {**workflow.defaults, **(defaults or {})}
    parser = argparse.ArgumentParser(description=description or workflow.summary,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, workflow.config, defaults, workflow.help)
    return workflow.run(parser.parse_args(argv), defaults)
