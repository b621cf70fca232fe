"""Every strategy trains on a tiny backbone: loss goes down, and exactly the
weights it should change are changed."""

import keras
import numpy as np
import pytest

from conftest import separable_sentences, tiny_bert
from tl_keras.models.backbones import backbone_layer_groups, transformer_blocks, unfreeze_top_blocks
from tl_keras.data.texts import LabelVocabulary
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.data.tokens import tokenize
from tl_keras.transfer.strategies import (
    DiscriminativeAdamW,
    TransferStrategy,
    backbone_of,
    learning_rate_multipliers,
    merge_lora,
    parse_strategy,
)
from tl_keras.training.trainer import TrainingConfig, TrainingData, train


def _model_and_data(pooling="mean", task="classification"):
    backbone, preprocessor = tiny_bert(seed=3)
    vocab = LabelVocabulary.from_labels(["neg", "pos"])
    train_texts, train_labels = separable_sentences(64, seed=1)
    val_texts, val_labels = separable_sentences(32, seed=2)
    data = TrainingData(
        tokenize(train_texts, preprocessor, verbose=0), vocab.encode(train_labels),
        tokenize(val_texts, preprocessor, verbose=0), vocab.encode(val_labels),
    )
    encoder = build_encoder(backbone, pooling)
    model = build_text_model(encoder, build_head(32, 2, task), task)
    return model, data


def _snapshot(layers):
    return [w.numpy().copy() for layer in layers for w in layer.weights]


def _changed(before, after):
    return [not np.allclose(b, a) for b, a in zip(before, after)]


@pytest.mark.parametrize("text, expected", [
    ("frozen", TransferStrategy("frozen")),
    ("partial:2", TransferStrategy("partial", 2)),
    ("full", TransferStrategy("full")),
    ("lora:4", TransferStrategy("lora", 4)),
])
def test_parse_strategy(text, expected):
    assert parse_strategy(text) == expected
    assert str(parse_strategy(text)) == text


@pytest.mark.parametrize("text", ["frozen:1", "partial", "partial:x", "lora:0", "adapter:2", ""])
def test_parse_strategy_refuses_bad_values(text):
    with pytest.raises(ValueError, match=repr(text)):
        parse_strategy(text)


def test_layer_groups_found_by_structure_not_names():
    backbone, _ = tiny_bert()
    groups = backbone_layer_groups(backbone)
    blocks = transformer_blocks(backbone)
    assert len(groups) == len(blocks) + 2
    assert [g[0] for g in groups[1:-1]] == blocks
    assert backbone.get_layer("token_embedding") in groups[0]
    assert backbone.get_layer("pooled_dense") in groups[-1]
    unfreeze_top_blocks(backbone, 1)
    assert [b.trainable for b in blocks] == [False, True]
    assert not backbone.get_layer("token_embedding").trainable
    with pytest.raises(ValueError, match=r"received 3"):
        unfreeze_top_blocks(backbone, 3)


def test_frozen_trains_head_only_from_cache():
    model, data = _model_and_data()
    backbone = backbone_of(model)
    before_backbone, before_head = _snapshot([backbone]), _snapshot([model.head])
    model, history = train(model, parse_strategy("frozen"), data,
                           TrainingConfig(epochs=8, batch_size=16, head_learning_rate=1e-2, verbose=0))
    assert history["loss"][-1] < history["loss"][0]
    assert history["phase"] == ["head"] * 8
    assert not any(_changed(before_backbone, _snapshot([backbone])))
    assert all(_changed(before_head, _snapshot([model.head])))


def test_partial_trains_top_blocks_only():
    model, data = _model_and_data()
    backbone = backbone_of(model)
    blocks = transformer_blocks(backbone)
    frozen_layers = [backbone.get_layer("token_embedding"), blocks[0], backbone.get_layer("pooled_dense")]
    before_frozen, before_top = _snapshot(frozen_layers), _snapshot([blocks[1]])
    model, history = train(model, parse_strategy("partial:1"), data,
                           TrainingConfig(epochs=4, batch_size=16, head_learning_rate=1e-2,
                                          backbone_learning_rate=1e-3, verbose=0))
    assert history["loss"][-1] < history["loss"][0]
    assert not any(_changed(before_frozen, _snapshot(frozen_layers)))
    assert any(_changed(before_top, _snapshot([blocks[1]])))


def test_full_warms_up_head_then_trains_everything_with_decayed_rates():
    model, data = _model_and_data()
    backbone = backbone_of(model)
    multipliers = learning_rate_multipliers(model, backbone_ratio=0.1, layer_decay=0.5)
    embedding = backbone.get_layer("token_embedding").weights[0].path
    top_block = transformer_blocks(backbone)[-1].weights[0].path
    bottom_block = transformer_blocks(backbone)[0].weights[0].path
    assert multipliers[top_block] == pytest.approx(0.05)
    assert multipliers[bottom_block] == pytest.approx(0.025)
    assert multipliers[embedding] == pytest.approx(0.0125)
    before = _snapshot([backbone.get_layer("token_embedding")] + transformer_blocks(backbone))
    model, history = train(model, parse_strategy("full"), data,
                           TrainingConfig(epochs=3, warmup_epochs=1, batch_size=16, head_learning_rate=1e-2,
                                          backbone_learning_rate=1e-3, verbose=0))
    assert history["phase"] == ["head", "full", "full", "full"]
    assert history["loss"][-1] < history["loss"][1]
    after = _snapshot([backbone.get_layer("token_embedding")] + transformer_blocks(backbone))
    assert all(_changed(before, after)[:1]) and sum(_changed(before, after)) > len(before) // 2


def test_discriminative_optimizer_scales_each_variable_update():
    first = keras.Variable(np.ones(3, "float32"), name="slow")
    second = keras.Variable(np.ones(3, "float32"), name="fast")
    optimizer = DiscriminativeAdamW({first.path: 0.1}, learning_rate=0.01, weight_decay=0.0)
    gradient = np.ones(3, "float32")
    optimizer.apply_gradients([(gradient, first), (gradient, second)])
    # Adam's first step moves each weight by about its learning rate.
    np.testing.assert_allclose(1 - first.numpy(), 0.001, rtol=1e-3)
    np.testing.assert_allclose(1 - second.numpy(), 0.01, rtol=1e-3)


def test_lora_trains_adapters_and_merges_them_before_export():
    model, data = _model_and_data()
    backbone = backbone_of(model)
    before = {w.path: w.numpy().copy() for w in backbone.weights}
    model_after, history = train(model, parse_strategy("lora:2"), data,
                                 TrainingConfig(epochs=4, batch_size=16, head_learning_rate=1e-2,
                                                backbone_learning_rate=1e-2, verbose=0))
    assert history["loss"][-1] < history["loss"][0]
    lora_b = [w for w in backbone.weights if "lora_kernel_b" in w.path]
    assert len(lora_b) == 4 and all(np.abs(w.numpy()).sum() > 0 for w in lora_b)
    # Every weight the backbone had before LoRA stayed fixed, but for the
    # biases of the LoRA layers, which Keras' LoRA leaves trainable ...
    after = {w.path: w.numpy() for w in backbone.weights}
    changed = sorted(path for path in before if not np.array_equal(before[path], after[path]))
    assert changed == sorted(
        f"transformer_layer_{i}/self_attention_layer/{name}/bias" for i in (0, 1) for name in ("query", "value")
    )
    # ... and the merged copy has no LoRA weights yet predicts the same.
    assert model_after is not model
    assert not [w for w in model_after.weights if "lora" in w.path]
    batch = {k: v[:8] for k, v in data.validation_inputs.arrays.items()}
    np.testing.assert_allclose(model_after.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-5)


def test_merge_lora_returns_plain_model_unchanged():
    model, _ = _model_and_data()
    assert merge_lora(model) is model


def test_regression_head_trains(tmp_path):
    backbone, preprocessor = tiny_bert(seed=4)
    texts, labels = separable_sentences(64, seed=5)
    targets = np.array([4.0 if l == "pos" else 1.0 for l in labels], "float32")
    tokens = tokenize(texts, preprocessor, verbose=0)
    model = build_text_model(build_encoder(backbone, "cls"), build_head(32, 1, "regression", hidden_dim=16), "regression")
    model, history = train(model, parse_strategy("partial:2"), TrainingData(tokens, targets, tokens, targets),
                           TrainingConfig(epochs=5, batch_size=16, head_learning_rate=1e-2,
                                                        backbone_learning_rate=1e-3, verbose=0))
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert model.output.shape[-1] == 1
