"""One config shape: every workflow's settings in the shared groups, help in
the fields' metadata, flattened to flags and built back, nothing ignored."""

import dataclasses
import inspect
import pathlib
import subprocess
import sys

import pytest

from tl_keras.cli.flags import parse_flags
from tl_keras.cli.workflows import COMMANDS, command
from tl_keras.core.choices import IMAGE_STRATEGY, SPAN_STRATEGY, TAGGING_STRATEGY, TEXT_STRATEGY
from tl_keras.core.settings import build_config, flat_fields, flatten
from tl_keras.training.config import TrainingConfig
from tl_keras.workflows.configs import OutputConfig, RecommendationConfig, TextClassificationConfig

CONFIGS = [workflow.config for workflow in COMMANDS]


@pytest.mark.parametrize("config_type", CONFIGS, ids=lambda kind: kind.__name__)
def test_every_setting_has_help_and_one_name(config_type):
    fields = flat_fields(config_type)  # Raises if two groups share a name.
    undocumented = [name for name, (field, _, _) in fields.items() if len(field.metadata.get("help", "")) < 10]
    assert undocumented == []
    groups = {field.name for field in dataclasses.fields(config_type) if dataclasses.is_dataclass(field.default_factory)
              or (field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(field.default_factory()))}
    assert "training" in groups  # Every job trains with a TrainingConfig.
    for name in groups:  # The docstring's Args: is written from the metadata.
        assert f"    {name}: " in config_type.__doc__


def test_flat_settings_build_the_nested_groups_and_flatten_back():
    config = build_config(TextClassificationConfig, train="a.tsv", backbone="b", output_dir="runs", epochs=2,
                          export_dir="exports", validation="v.tsv", distribute="none", unknown="skipped")
    assert (config.training.epochs, config.output.export_dir, config.splits.validation) == (2, "exports", "v.tsv")
    assert config.runtime.distribute == "none"
    assert config.output.model_name == "text_classifier"  # The job's own default for its group.
    flat = flatten(config)
    assert flat["epochs"] == 2 and flat["model_name"] == "text_classifier" and "training" not in flat
    assert build_config(TextClassificationConfig, flat) == config


def test_flags_and_yaml_use_the_flat_names(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 4\nexport_dir: out\nhead_learning_rate: 1e-4\n")
    settings = parse_flags("", TextClassificationConfig, ["--config", str(tmp_path / "run.yaml"), "--epochs", "5"])
    config = build_config(TextClassificationConfig, settings, train="a", backbone="b", output_dir="r")
    assert (config.training.epochs, config.training.head_learning_rate, config.output.export_dir) == (5, 1e-4, "out")
    with pytest.raises(ValueError, match=r"unknown settings \['training'\]"):
        (tmp_path / "nested.yaml").write_text("training: 3\n")
        parse_flags("", TextClassificationConfig, ["--config", str(tmp_path / "nested.yaml")])


def test_boolean_flags_take_a_value_and_their_negation_takes_none(capsys):
    def resume(*argv):
        return parse_flags("", TextClassificationConfig, list(argv)).get("resume")

    assert (resume("--resume"), resume("--resume", "false"), resume("--no-resume")) == (True, False, False)
    with pytest.raises(SystemExit) as refused:
        resume("--no-resume", "true")
    assert refused.value.code == 2 and "unrecognized arguments: true" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        resume("--resume", "maybe")
    assert "expected true or false, received 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_flags("", TextClassificationConfig, ["--help"])
    text = capsys.readouterr().out
    assert "--resume [true|false]" in text and "--no-resume [true|false]" not in text and "--no-resume " in text


def test_a_group_setting_a_job_cannot_apply_is_refused_and_has_no_flag():
    with pytest.raises(ValueError, match=r"RecommendationConfig cannot apply layer_decay=0.5"):
        RecommendationConfig(interactions="i", items="t", backbone="b", output_dir="r",
                             training=TrainingConfig(layer_decay=0.5))
    assert "layer_decay" not in flat_fields(RecommendationConfig)
    assert "head_learning_rate" in flat_fields(RecommendationConfig)
    help_text = subprocess.run([sys.executable, "-m", "tl_keras.cli.main", "recommend", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--head-learning-rate" in help_text and "--layer-decay" not in help_text


def test_one_strategy_default_per_task_across_entry_points():
    from tl_keras.tasks.image_classifier import ImageClassifier
    from tl_keras.tasks.question_answering import QuestionAnswerer
    from tl_keras.tasks.text_classifier import TextClassifier
    from tl_keras.tasks.token_classifier import TokenClassifier

    def default(method):
        return inspect.signature(method).parameters["strategy"].default

    assert default(TextClassifier.from_preset) == default(TextClassifier) == TEXT_STRATEGY
    assert default(ImageClassifier.from_preset) == default(ImageClassifier) == IMAGE_STRATEGY
    assert default(QuestionAnswerer.from_preset) == default(QuestionAnswerer) == SPAN_STRATEGY
    assert default(TokenClassifier.from_preset) == TAGGING_STRATEGY
    expected = {"train-text": TEXT_STRATEGY, "adapt": TEXT_STRATEGY, "fuse": TEXT_STRATEGY,
                "train-image": IMAGE_STRATEGY, "train-qa": SPAN_STRATEGY}
    for name, strategy in expected.items():  # The command line's default is the config's.
        workflow = command(name)
        settings = {**workflow.defaults, **{n: "x" for n in ("train", "backbone", "output_dir", "source", "target")}}
        assert build_config(workflow.config, settings).strategy == strategy, name


def test_image_command_and_recipe_train_the_same_measured_default():
    recipes = pathlib.Path(__file__).resolve().parent.parent / "recipes"
    sys.path.insert(0, str(recipes))
    try:
        import image_classification as recipe
    finally:
        sys.path.pop(0)
    # The recipe adds its data and where to export, no model setting: `tl-keras train-image` trains the same model.
    assert set(recipe.DEFAULTS) <= {"train", "validation", "test", "export_dir", "model_name"}, recipe.DEFAULTS
    workflow = command("train-image")
    config = build_config(workflow.config, {**workflow.defaults, "train": "x", "backbone": "x"})
    assert (config.strategy, config.augmentation, config.training.epochs) == ("frozen", "none", 30)
    fine_tuned = build_config(workflow.config, {**workflow.defaults, "train": "x", "backbone": "x",
                                                "strategy": "partial:2"})
    assert fine_tuned.training.epochs == 8
    assert build_config(workflow.config, {**workflow.defaults, "train": "x", "backbone": "x", "epochs": 2}
                        ).training.epochs == 2


def test_run_results_hold_a_task():
    from tl_keras.workflows.common import RunResult

    with pytest.raises(TypeError, match=r"must be a trained task, a Keras model or None, received <class 'pathlib"):
        RunResult(pathlib.Path("presets/x"), {})
    assert RunResult(None, {}, preset_path=pathlib.Path("presets/x")).task is None


def test_output_group_defaults_come_from_the_job():
    assert OutputConfig().model_name == "model"
    assert {workflow.name: build_config(workflow.config, {n: "x" for n in flat_fields(workflow.config)
                                                          if n in ("train", "backbone", "output_dir")}
                                        ).output.model_name
            for workflow in COMMANDS if workflow.name in ("train-text", "train-image")} == {
        "train-text": "text_classifier", "train-image": "image_classifier"}
