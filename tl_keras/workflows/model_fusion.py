"""The model fusion job: several fine-tunes of one backbone, fused as a
uniform soup, a greedy soup and an ensemble, each reported."""

import dataclasses
import json
import pathlib

import keras
import numpy as np

from tl_keras.data.texts import read_labelled_texts, stratified_split
from tl_keras.data.tokens import predict_in_length_order, tokenize
from tl_keras.export.text import export_text_model
from tl_keras.training.runs import holding_run_folder
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.transfer.fusion import ensemble, greedy_soup, uniform_soup
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import ModelFusionConfig, SplitsConfig, TextClassificationConfig  # noqa: F401
from tl_keras.workflows.text_classification import run as train_text

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(rows.texts, rows.labels)))
    return str(path)


@holding_run_folder
def run(config):
    """Fine-tunes `config.ingredients` classifiers from one backbone with
    different seeds, fuses them three ways, and reports validation and test
    accuracy for every ingredient and fusion (the greedy soup picks its
    ingredients on validation). Returns a `RunResult` whose `task` is the
    fused model `config.export` names (a `TextClassifier` for the soups, a
    Keras model for the ensemble), whose `metrics` are by model and whose
    `alternatives` are all three fused models."""
    rows = read_labelled_texts(config.train)
    rest, test = stratified_split(rows, 0.2, config.training.seed)
    train, validation = stratified_split(rest, 0.2, config.training.seed)
    folder = pathlib.Path(config.output_dir)
    (folder / "splits").mkdir(parents=True, exist_ok=True)
    files = {name: _write_jsonl(folder / "splits" / f"{name}.jsonl", part)
             for name, part in (("train", train), ("validation", validation), ("test", test))}
    ingredients = []
    for index in range(config.ingredients):
        ingredients.append(train_text(TextClassificationConfig(
            train=files["train"], backbone=config.backbone, output_dir=str(folder / f"ingredient_{index}"),
            strategy=config.strategy, sequence_length=config.sequence_length, resume=False,
            splits=SplitsConfig(validation=files["validation"], test=files["test"]),
            training=dataclasses.replace(config.training, seed=config.training.seed + index),
            runtime=config.runtime)).task)
    vocabulary, preprocessor = ingredients[0].vocabulary, ingredients[0].preprocessor
    # Plain functional views of the classifiers, which the soups copy.
    models = [keras.Model(task.input, task.output, name=f"ingredient_{i}") for i, task in enumerate(ingredients)]
    vocabularies = [task.vocabulary for task in ingredients]
    parts = {name: (tokenize(part.texts, preprocessor, verbose=0), vocabulary.encode(part.labels, part.origins))
             for name, part in (("validation", validation), ("test", test))}

    def accuracy(model, part="validation"):
        tokens, targets = parts[part]
        return float(np.mean(predict_in_length_order(model, tokens).argmax(axis=1) == targets))

    greedy, kept = greedy_soup(models, accuracy, vocabularies)
    fused = {"uniform": uniform_soup(models, vocabularies), "greedy": greedy,
             "ensemble": ensemble(models, vocabularies)}
    candidates = {f"ingredient_{i}": m for i, m in enumerate(models)} | {f"{k}_soup" if k != "ensemble" else k: m
                                                                          for k, m in fused.items()}
    metrics = {name: {"validation_accuracy": accuracy(m), "test_accuracy": accuracy(m, "test"),
                      "parameters": int(m.count_params())} for name, m in candidates.items()}
    metrics["greedy_soup"]["ingredients_kept"] = kept

    # A soup has the ingredients' architecture: it becomes a `TextClassifier`
    # (preset, card, quantisation) through a view built as the ingredients' were.
    task = fused[config.export]
    if config.export != "ensemble":
        task = ingredients[0].merged_copy()  # A copy through a preset: backbone, preprocessor, head.
        keras.Model(task.input, task.output).set_weights(fused[config.export].get_weights())

    def export(output, card):
        if isinstance(task, TextClassifier):
            return task.export(output, config.output.model_name, warmup=validation.texts[:5],
                               card={"fusion": config.export, **card})
        # An ensemble is several backbones side by side, not one task.
        return export_text_model(task, preprocessor, vocabulary, output, config.output.model_name,
                                 warmup_texts=validation.texts[:5],
                                 card={"backbone": str(config.backbone), "fusion": config.export, **card})

    result = RunResult(task, metrics, alternatives=fused)
    return finish(result, config, lambda output: [], export)


def describe(result):
    """The run's closing lines: every ingredient's and fusion's accuracy."""
    lines = [f"{name:14s} validation {figures['validation_accuracy']:.4f}  test {figures['test_accuracy']:.4f}"
             f"  parameters {figures['parameters']:,}" for name, figures in result.metrics.items()]
    return "\n".join(lines + result.written())
