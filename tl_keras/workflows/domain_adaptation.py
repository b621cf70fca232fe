"""The domain adaptation job: labelled source texts and unlabelled target
texts in, the adapted classifier beside the source-only baseline out."""

import pathlib

from tl_keras.data.texts import LabelVocabulary, read_labelled_texts, read_texts
from tl_keras.data.tokens import tokenize
from tl_keras.evaluation.classification import evaluate_predictions
from tl_keras.export.text import export_text_model
from tl_keras.models.backbones import default_pooling, load_text_backbone
from tl_keras.models.heads import build_encoder, build_text_model
from tl_keras.training.runs import holding_run_folder
from tl_keras.transfer.domain_adaptation import adapt
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import DomainAdaptationConfig  # noqa: F401  (the config of `run`)


@holding_run_folder
def run(config):
    """Adapts a frozen-backbone classifier from `config.source` to
    `config.target` with `config.method`, trains the source-only baseline
    with the same settings, and reports target metrics for both. Returns a
    `RunResult` whose `task` is the adapted text model and whose `metrics`
    are `{"target": {method: metrics}}` (empty without
    `target_validation`)."""
    source = read_labelled_texts(config.source, config.text_column, config.label_column)
    target_texts = read_texts(config.target, config.text_column)
    vocabulary = LabelVocabulary.from_labels(source.labels, origins=source.origins)
    source_targets = vocabulary.encode(source.labels, source.origins)
    validation = None
    if config.target_validation:
        validation = read_labelled_texts(config.target_validation, config.text_column, config.label_column)
        validation_targets = vocabulary.encode(validation.labels, validation.origins)

    backbone, preprocessor = load_text_backbone(config.backbone, config.sequence_length)
    backbone.trainable = False
    encoder = build_encoder(backbone, config.pooling or default_pooling(config.backbone, backbone))
    output_dir = pathlib.Path(config.output_dir)
    cache = FeatureCache(output_dir / "feature_cache")

    def features(texts):
        return cache.features(encoder, tokenize(texts, preprocessor, verbose=0), verbose=config.verbose)

    source_features, target_features = features(source.texts), features(target_texts)
    validation_features = features(validation.texts) if validation is not None else None
    settings = dict(epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                    hidden_dim=config.hidden_dim, alpha=config.alpha, coral_weight=config.coral_weight,
                    seed=config.seed)
    metrics, heads = {}, {}
    for method in dict.fromkeys(["source_only", config.method]):
        heads[method], _ = adapt(source_features, source_targets, target_features, vocabulary.num_outputs,
                                 method, **settings)
        if validation is not None:
            outputs = heads[method].predict(validation_features, verbose=0)
            metrics[method] = evaluate_predictions(outputs, validation_targets, vocabulary)
    model = build_text_model(encoder, heads[config.method])

    def export(folder, card):
        return export_text_model(model, preprocessor, vocabulary, folder, config.model_name,
                                 warmup_texts=target_texts[:5],
                                 card={"backbone": str(config.backbone), "strategy": f"frozen+{config.method}",
                                       **card})

    return finish(RunResult(model, {"target": metrics}), config, lambda folder: [], export)


def describe(result):
    """The run's closing lines: each method's target accuracy."""
    lines = [f"target {method:12s} accuracy {figures['accuracy']:.4f}  macro F1 {figures['macro_f1']:.4f}"
             for method, figures in result.metrics["target"].items()]
    return "\n".join(lines + result.written())
