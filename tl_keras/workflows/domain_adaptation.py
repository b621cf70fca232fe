"""The domain adaptation job: labelled source texts and unlabelled target
texts in, the adapted classifier beside the source-only baseline out.

Two routes, both ending in a `TextClassifier` that saves and exports like
any other. Fine-tuning (`partial:N`, `full`, `lora:R`): a classifier
fine-tuned with the run's strategy on the source is the source-only
baseline; self-training then trains it on its own confident predictions on
the target texts, while DANN and CORAL train a fresh classifier with the
same strategy, epochs and batches on the source and the target texts at
once (`Classifier.fit_adapted`). With `pretraining_epochs`, the backbone
is first trained as a masked LM on the target texts and the method starts
from it, reported as `pretraining+<method>` beside the source fine-tune
from it (`pretraining`) and the source-only baseline. Frozen: DANN, CORAL
and self-training train an adapter over cached features beside an adapter
trained on the source alone, and the adapter becomes the frozen
classifier's head. When the labelled target file is the target file
itself, its test rows are held out of the unlabelled texts.
"""

import dataclasses
import hashlib
import json
import pathlib

import keras
import tensorflow as tf

from tl_keras.core.choices import FEATURE_ADAPTATION_METHODS, FEW_LABEL_METHODS
from tl_keras.data.texts import DataError, read_labelled_texts, read_texts, stratified_split
from tl_keras.evaluation.classification import evaluate_predictions
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.training.continued_pretraining import continue_pretraining
from tl_keras.training.distribution import pick_distribution, set_precision
from tl_keras.training.runs import holding_run_folder, keep_trained_model
from tl_keras.transfer.domain_adaptation import adapt
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.self_training import changed_share, self_train_head
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import DomainAdaptationConfig  # noqa: F401  (the config of `run`)


def read_target(config):
    """The unlabelled target texts and the labelled target test rows (or
    `None`). A `target_validation` that is the target file itself is split:
    its `target_test_fraction` (stratified) is the test, the rest the
    unlabelled texts."""
    if config.target_validation and pathlib.Path(config.target_validation).resolve() == \
            pathlib.Path(config.target).resolve():
        rows = read_labelled_texts(config.target, config.text_column, config.label_column)
        pool, test = stratified_split(rows, config.target_test_fraction, seed=config.training.seed)
        return list(pool.texts), test
    test = None
    if config.target_validation:
        test = read_labelled_texts(config.target_validation, config.text_column, config.label_column)
    return read_texts(config.target, config.text_column), test


@holding_run_folder
def run(config, distribution=None):
    """Adapts a classifier from `config.source` to `config.target` with
    `config.method`, beside the source-only baseline trained with the same
    strategy and settings, and reports target metrics for both. Every
    classifier is built under `distribution` (from `config.runtime` when
    `None`) and trains through the trainer with `config.training`. Returns
    a `RunResult` whose `task` is the adapted `TextClassifier` and whose
    `metrics` are `{"target": {method: metrics}}`, or without
    `target_validation` `{"changed_from_source_only": {method: share}}`
    (the share of the target texts whose predicted label the method
    changed)."""
    source = read_labelled_texts(config.source, config.text_column, config.label_column)
    target_texts, test = read_target(config)
    labelled = read_target_labelled(config, test)
    print(f"{len(source)} labelled source texts, {len(target_texts)} unlabelled target texts, "
          f"{0 if test is None else len(test)} labelled target test texts")
    set_precision(config.runtime.precision)
    distribution = distribution or pick_distribution(config.runtime.distribute)
    if config.pretraining_epochs and isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        # Only the chief keeps the pretrained preset (`WorkerOutput`), so the other workers could not load it.
        raise ValueError(f"`pretraining_epochs` ({config.pretraining_epochs}) runs on one machine; across workers, "
                         f"pretrain first (`tl-keras pretrain`) and pass its preset as `backbone`.")
    labels = sorted({str(label) for label in source.labels})

    def new_classifier(backbone=config.backbone, **settings):
        keras.utils.set_random_seed(config.training.seed)
        with distribution.scope():
            return TextClassifier.from_preset(backbone, labels=labels, strategy=config.strategy,
                                              sequence_length=config.sequence_length, pooling=config.pooling,
                                              **settings)

    if config.strategy == "frozen" and config.method in (*FEATURE_ADAPTATION_METHODS, "self_training"):
        return _adapt_features(config, source, target_texts, test, new_classifier, distribution)
    source_texts, source_labels = list(source.texts), [str(label) for label in source.labels]
    training = dataclasses.asdict(config.fine_tuning())
    settings = dict(training, distribution=distribution)
    print(f"fine-tuning on the source ({config.strategy})")
    classifier = new_classifier()
    classifier.fit(source_texts, source_labels, **settings)
    metrics, history = {}, {}

    def score(name, model=None):
        model = model or classifier
        with keep_trained_model(model, config.output_dir, f"scoring {name}"):
            if test is not None:
                metrics[name] = model.evaluate_report(list(test.texts), [str(l) for l in test.labels])
            elif config.method != "source_only" or config.pretraining_epochs:  # No labels: the move from source-only.
                predictions[name] = model.predict(target_texts).argmax(-1)

    predictions = {}
    score("source_only")
    backbone, method = config.backbone, config.method
    if config.pretraining_epochs:
        backbone, history["pretraining"] = pretrain_on_target(config, target_texts)
        print(f"fine-tuning on the source from the target-pretrained backbone ({config.strategy})")
        classifier = new_classifier(backbone)
        classifier.fit(source_texts, source_labels, **settings)
        score("pretraining")
        method = "pretraining" if config.method == "source_only" else f"pretraining+{config.method}"
    if config.method == "self_training":
        print(f"self-training on {len(target_texts)} target texts")
        history[method] = classifier.self_train(target_texts, shares=config.shares, **dict(settings, epochs=1))
        score(method)
    elif config.method in ("dann", "coral"):
        print(f"fine-tuning on the source with {config.method} towards {len(target_texts)} target texts "
              f"({config.strategy}, the baseline's epochs and batches)")
        classifier = new_classifier(backbone)
        weight = config.coral_weight if config.method == "coral" else config.domain_weight
        history[method] = classifier.fit_adapted(
            source_texts, source_labels, target_texts, config.method, adaptation_weight=weight,
            alpha=config.alpha, hidden_dim=config.hidden_dim, **settings).history
        score(method)
    elif config.method in FEW_LABEL_METHODS:
        classifier = _few_labels(config, labelled, classifier, new_classifier, source_texts, source_labels, score,
                                 settings)
    if len(predictions) > 1:
        baseline = predictions.pop("source_only")
        metrics = {"changed_from_source_only": {name: changed_share(baseline, predicted)
                                                for name, predicted in predictions.items()}}

    def export(folder, card):
        return classifier.export(folder, config.output.model_name, warmup=target_texts[:5],
                                 card={"adaptation": method, **card})

    return finish(RunResult(classifier, {"target": metrics} if test is not None else metrics, history), config,
                  lambda folder: [], export)


def pretrain_on_target(config, texts):
    """`config.backbone` trained as a masked LM on the target `texts` for
    `config.pretraining_epochs` (`continue_pretraining`, at the run's
    sequence length and seed), saved as a preset in the run's folder, named
    by a digest of everything that shapes it, so a rerun with the same
    texts and settings reuses it. Returns `(preset folder, history)`."""
    shaped_by = [str(config.backbone), config.sequence_length, config.pretraining_epochs, config.training.seed, texts]
    digest = hashlib.sha256(json.dumps(shaped_by).encode()).hexdigest()[:12]
    preset = pathlib.Path(config.output_dir) / f"target_pretrained_{digest}"
    if preset.is_dir():  # Written whole or not at all (`continue_pretraining` renames a finished folder).
        print(f"masked LM on the target texts: reusing {preset}")
        return preset, {}
    print(f"masked LM on {len(texts)} target texts, {config.pretraining_epochs} epoch(s), into {preset}")
    return continue_pretraining(config.backbone, texts, preset, sequence_length=config.sequence_length,
                                epochs=config.pretraining_epochs, seed=config.training.seed,
                                distribute=config.runtime.distribute, verbose=config.training.verbose)


def read_target_labelled(config, test):
    """The few labelled target texts (or `None`); any that is also a test
    text stops the run before training, naming the file."""
    if not config.target_labelled:
        return None
    labelled = read_labelled_texts(config.target_labelled, config.text_column, config.label_column)
    shared = set(labelled.texts) & set(test.texts) if test is not None else set()
    if shared:
        raise DataError(f"{config.target_labelled}: {len(shared)} labelled target text(s) are also test texts, "
                        f"such as {sorted(shared)[0]!r}; the test must be texts no method trained on.")
    return labelled


def _few_labels(config, labelled, classifier, new_classifier, source_texts, source_labels, score, settings):
    """With a few labelled target texts: those alone, the joint loss and
    source-then-target, each scored; returns the model of `config.method`.
    `settings` are the source fine-tune's (`epochs` among them)."""
    texts, labels = list(labelled.texts), [str(label) for label in labelled.labels]
    print(f"{len(texts)} labelled target texts: alone, joint (λ = {config.target_weight:g}) and source then target")
    alone = new_classifier()
    alone.fit(texts, labels, **dict(settings, epochs=config.target_epochs))
    score("target_labelled_only", alone)
    joint = new_classifier()
    # L_source + λ·L_target as λ copies of each target text (the trainer has
    # no sample weights; for whole λ each epoch's gradient is the same sum).
    repeats = round(config.target_weight)
    joint.fit(source_texts + texts * repeats, source_labels + labels * repeats, **settings)
    score("joint", joint)
    classifier.fit(texts, labels, **dict(settings, warmup_epochs=0))
    score("source_then_target")
    return joint if config.method == "joint" else classifier


def _adapt_features(config, source, target_texts, validation, new_classifier, distribution):
    """DANN, CORAL or self-training: adapters over the frozen classifier's
    cached features, beside the source-only adapter (self-training starts
    from it: `self_training.self_train_head`); the adapted head becomes the
    frozen `TextClassifier`'s own (its head has the adapter's layers: a
    hidden layer of `hidden_dim` and no dropout)."""
    classifier = new_classifier(hidden_dim=config.hidden_dim, dropout=0.0)
    cache = FeatureCache(pathlib.Path(config.output_dir) / "feature_cache")

    def features(texts):
        return cache.features(classifier.encoder, classifier.tokenize(texts), verbose=config.training.verbose)

    source_targets = classifier.targets(source.labels, source.origins)
    source_features, target_features = features(source.texts), features(target_texts)
    validation_features = features(validation.texts) if validation is not None else None
    settings = dict(epochs=config.training.epochs or 10, batch_size=config.training.batch_size or 32,
                    learning_rate=config.training.head_learning_rate, hidden_dim=config.hidden_dim,
                    alpha=config.alpha, adaptation_weight=config.coral_weight if config.method == "coral" else 1.0,
                    seed=config.training.seed, verbose=config.training.verbose)
    metrics, heads = {}, {}
    for method in dict.fromkeys(["source_only", config.method]):
        with distribution.scope():
            heads[method], _ = adapt(source_features, source_targets, target_features,
                                     classifier.vocabulary.num_outputs,
                                     "source_only" if method == "self_training" else method, **settings)
            if method == "self_training":
                self_train_head(heads[method], source_features, source_targets, target_features, config.shares,
                                **{name: settings[name] for name in ("epochs", "batch_size", "learning_rate",
                                                                      "seed", "verbose")})
        if validation is not None:
            outputs = heads[method].predict(validation_features, verbose=0)
            metrics[method] = evaluate_predictions(outputs, classifier.targets(validation.labels, validation.origins),
                                                   classifier.vocabulary)
    if validation is None and config.method != "source_only":  # No target labels: the move from source-only.
        source_only, adapted = (heads[m].predict(target_features, verbose=0).argmax(-1) for m in heads)
        metrics = {"changed_from_source_only": {config.method: changed_share(source_only, adapted)}}
    classifier.head.set_weights(heads[config.method].get_weights())  # The same layers, in the same order.

    def export(folder, card):
        return classifier.export(folder, config.output.model_name, warmup=target_texts[:5],
                                 card={"adaptation": f"frozen+{config.method}", **card})

    return finish(RunResult(classifier, {"target": metrics} if validation is not None else metrics), config,
                  lambda folder: [], export)


def describe(result):
    """The run's closing lines: each method's target accuracy beside
    source-only's or, without target labels, the share of target
    predictions the method changed from source-only's."""
    lines = [f"target {method:12s} accuracy {figures['accuracy']:.4f}  macro F1 {figures['macro_f1']:.4f}"
             for method, figures in result.metrics.get("target", {}).items()]
    lines += [f"no target labels (--target-validation): {method} changed {share:.1%} of the source-only "
              f"model's target predictions" for method, share in result.metrics.get("changed_from_source_only",
                                                                                      {}).items()]
    return "\n".join(lines + result.written())
