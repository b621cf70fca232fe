"""Model fusion: weight soups and prediction ensembles of fine-tuned models.

A soup averages the weights of models fine-tuned from the same backbone with
the same architecture (Wortsman et al. 2022, "Model soups"), so it costs one
model's inference; an ensemble averages their probabilities and costs all of
them. Both return a plain functional `keras.Model` that exports like any
other.
"""

import dataclasses
import json
import pathlib

import keras
import numpy as np

from tl_keras.data import read_labelled_texts, stratified_split
from tl_keras.distribute import WorkerOutput
from tl_keras.export import export_text_model
from tl_keras.preprocessing import predict_in_length_order, tokenize
from tl_keras.files import write_json
from tl_keras.ranges import check_settings
from tl_keras.runs import holding_run_folder


class FusionError(ValueError):
    """Models that cannot be fused, with what differs."""


def _signature(model):
    """The layer classes and weight shapes, in order (names differ between
    models built in one session, so they are left out)."""
    layers = [type(layer).__name__ for layer in model._flatten_layers()]
    return layers + [tuple(weight.shape) for weight in model.weights]


def check_compatible(models, vocabularies=None, same_architecture=True):
    """Raises `FusionError` unless all `models` share one architecture (the
    same layers and weight shapes) and, if given, one label vocabulary."""
    if len(models) < 2:
        raise FusionError(f"Fusion needs at least two models, received {len(models)}.")
    reference = _signature(models[0])
    for index, model in enumerate(models[1:], start=1):
        signature = _signature(model)
        if same_architecture and signature != reference:
            different = next(
                (f"{a} vs {b}" for a, b in zip(reference, signature) if a != b),
                f"{len(reference)} vs {len(signature)} layers and weights",
            )
            raise FusionError(f"Model {index} has another architecture than model 0: {different}.")
        if model.output.shape[-1] != models[0].output.shape[-1]:
            raise FusionError(
                f"Model {index} has {model.output.shape[-1]} outputs, model 0 has {models[0].output.shape[-1]}."
            )
    if vocabularies is not None:
        for index, vocabulary in enumerate(vocabularies[1:], start=1):
            if vocabulary != vocabularies[0]:
                raise FusionError(
                    f"Model {index} predicts other labels than model 0: "
                    f"{list(vocabulary.names)} ({vocabulary.task}) vs "
                    f"{list(vocabularies[0].names)} ({vocabularies[0].task})."
                )


def uniform_soup(models, vocabularies=None):
    """Returns a copy of `models[0]` holding the mean of all their weights.

    Example:
    >>> soup = uniform_soup([model_seed_1, model_seed_2, model_seed_3])
    """
    check_compatible(models, vocabularies)
    weights = [model.get_weights() for model in models]
    soup = keras.models.clone_model(models[0])
    soup.set_weights([np.mean(group, axis=0).astype(group[0].dtype) for group in zip(*weights)])
    return soup


def greedy_soup(models, score, vocabularies=None):
    """The greedy soup: models sorted by `score` (higher is better, e.g.
    validation accuracy), each added to the soup only if the soup's score
    does not drop.

    Args:
        models: fine-tuned models of one architecture.
        score: a function from a model to a number.

    Returns:
        `(soup, kept)`: the soup model and the indices of the models in it.

    Example:
    >>> soup, kept = greedy_soup(models, lambda m: accuracy(m, validation))
    """
    check_compatible(models, vocabularies)
    scores = [score(model) for model in models]
    order = sorted(range(len(models)), key=lambda i: scores[i], reverse=True)
    kept = [order[0]]
    soup, best = models[order[0]], scores[order[0]]
    for index in order[1:]:
        candidate = uniform_soup([models[i] for i in kept + [index]])
        candidate_score = score(candidate)
        if candidate_score >= best:
            kept.append(index)
            soup, best = candidate, candidate_score
    if len(kept) == 1:
        soup = keras.models.clone_model(soup)
        soup.set_weights(models[kept[0]].get_weights())
    return soup, kept


def ensemble(models, vocabularies=None):
    """Returns one functional model averaging the outputs of `models`.

    Example:
    >>> averaged = ensemble([model_a, model_b])
    """
    check_compatible(models, vocabularies, same_architecture=False)
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in models[0].input}
    # Each member in a wrapper of its own name: the members share layer names.
    members = [keras.Model(model.input, model.output, name=f"member_{i}") for i, model in enumerate(models)]
    outputs = [member(inputs) for member in members]
    return keras.Model(inputs, keras.layers.Average(name="ensemble_mean")(outputs), name="ensemble")


FUSIONS = ("uniform", "greedy", "ensemble")


@dataclasses.dataclass
class ModelFusionConfig:
    """A model-fusion run; `recipes/model_fusion.py` fills it.

    Args:
        train: labelled file; split (stratified) into ingredient training,
            validation (greedy-soup scores) and held-out test rows.
        backbone: the KerasHub preset every ingredient starts from.
        output_dir: ingredient runs, splits and `metrics.json`.
        ingredients: how many models to fine-tune, with seeds `seed`,
            `seed + 1`, ...
        export: `"uniform"`, `"greedy"` or `"ensemble"`: what to export when
            `export_dir` is set.
    """

    train: str
    backbone: str
    output_dir: str
    ingredients: int = 3
    strategy: str = "partial:2"
    sequence_length: int = 64
    epochs: int = 2
    batch_size: int = 16
    seed: int = 1234
    distribute: str = "auto"
    export: str = "greedy"
    export_dir: str = None
    model_name: str = "fused_classifier"
    verbose: int = 0

    def __post_init__(self):
        check_settings(self)
        if self.export not in FUSIONS:
            raise ValueError(f"`export` must be one of {FUSIONS}, received {self.export!r}.")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(rows.texts, rows.labels)))
    return str(path)


@holding_run_folder
def run_model_fusion(config):
    """Fine-tunes `config.ingredients` models from one backbone with
    different seeds, fuses them three ways, and reports validation and
    held-out accuracy for every ingredient and fusion. Returns
    `(fused models by name, metrics)`."""
    from tl_keras.text_classification import TextClassificationConfig, run
    from tl_keras.training import TrainingConfig

    rows = read_labelled_texts(config.train)
    rest, test = stratified_split(rows, 0.2, config.seed)
    train, validation = stratified_split(rest, 0.2, config.seed)
    folder = pathlib.Path(config.output_dir)
    (folder / "splits").mkdir(parents=True, exist_ok=True)
    files = {name: _write_jsonl(folder / "splits" / f"{name}.jsonl", part)
             for name, part in (("train", train), ("validation", validation))}
    results = []
    for index in range(config.ingredients):
        training = TrainingConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed + index,
                                  verbose=config.verbose)
        results.append(run(TextClassificationConfig(
            train=files["train"], validation=files["validation"], backbone=config.backbone,
            output_dir=str(folder / f"ingredient_{index}"), strategy=config.strategy,
            sequence_length=config.sequence_length, distribute=config.distribute, resume=False,
            training=training)))
    vocabulary, preprocessor = results[0].vocabulary, results[0].preprocessor
    models, vocabularies = [r.model for r in results], [r.vocabulary for r in results]
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
    with WorkerOutput(folder) as output:
        write_json(pathlib.Path(output) / "metrics.json", metrics)
    if config.export_dir:
        with WorkerOutput(config.export_dir) as output:
            export_text_model(fused[config.export], preprocessor, vocabulary, output, config.model_name,
                              warmup_texts=validation.texts[:5],
                              card={"backbone": str(config.backbone), "fusion": config.export, "metrics": metrics})
    return fused, metrics
