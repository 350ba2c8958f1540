"""The model zoo: standard CNNs built in code as ONNX models with seeded random weights.

Nothing is downloaded; every model is generated from its layer config, so tests and demos
get real architectures (BatchNorm unfolded, opset 17, IR 8) in a second or two each. The
weights are random, but BatchNorm statistics are calibrated so outputs stay O(1).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgec.errors import ConfigError, did_you_mean
from edgec.zoo import detector, lcnet, mobilenet, resnet, shufflenet, squeezenet, unet
from edgec.zoo.layers import GraphBuilder, Tensor

__all__ = ["build", "describe", "names", "save"]


@dataclass(frozen=True)
class _Entry:
    make: Callable[[GraphBuilder, Tensor], None]
    description: str
    image_size: int = 224
    symbolic_hw: bool = False  # H/W are `height`/`width` unless image_size is given
    multiple: int = 1  # H/W must be a multiple of this


_ZOO: dict[str, _Entry] = {
    "mobilenet_v1": _Entry(mobilenet.mobilenet_v1, "MobileNetV1 1.0, 224x224, 1000 classes"),
    "mobilenet_v2": _Entry(mobilenet.mobilenet_v2, "MobileNetV2 1.0, 224x224, 1000 classes"),
    "mobilenet_v3_small": _Entry(
        mobilenet.mobilenet_v3_small,
        "MobileNetV3-Small 1.0 (HardSwish, SE blocks), 224x224, 1000 classes"),
    "resnet18": _Entry(resnet.resnet18, "ResNet-18, 224x224, 1000 classes"),
    "resnet50": _Entry(resnet.resnet50, "ResNet-50 v1.5, 224x224, 1000 classes"),
    "squeezenet1_1": _Entry(squeezenet.squeezenet1_1,
                            "SqueezeNet 1.1 (biased convs, no BatchNorm), 224x224, 1000 classes"),
    "shufflenet_v2": _Entry(shufflenet.shufflenet_v2,
                            "ShuffleNetV2 x1.0 (Split, channel shuffle), 224x224, 1000 classes"),
    "pp_lcnet": _Entry(lcnet.pp_lcnet,
                       "PP-LCNet x1.0 (Paddle-style export, Shape->Reshape flatten), "
                       "symbolic height x width, 1000 classes", symbolic_hw=True),
    "unet": _Entry(unet.unet, "U-Net, 3 levels (MaxPool, Resize + ConvTranspose), "
                   "symbolic height x width (multiples of 8), 4-class mask",
                   symbolic_hw=True, multiple=8),
    "ssd_lite": _Entry(detector.ssd_lite,
                       "SSDLite detector (MobileNetV2, 3 maps), 320x320, 3150 anchors x 21 classes",
                       image_size=320),
}


def names() -> list[str]:
    """Sorted names of every zoo model."""
    return sorted(_ZOO)


def describe(name: str) -> str:
    """One-line description of a zoo model."""
    return _lookup(name).description


def _lookup(name: str) -> _Entry:
    entry = _ZOO.get(name)
    if entry is None:
        raise ConfigError(f'unknown zoo model "{name}"{did_you_mean(name, names())}; '
                          f"valid names: {', '.join(names())}")
    return entry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(name: str, entry: _Entry, batch: int | None,
                 image_size: int | None) -> None:
    if batch is not None and (not _is_int(batch) or batch < 1):
        raise ConfigError(f"batch must be a positive integer or None, got {batch!r}")
    if image_size is None:
        return
    if not _is_int(image_size) or image_size < 32 or image_size % entry.multiple:
        rule = f" and a multiple of {entry.multiple}" if entry.multiple > 1 else ""
        raise ConfigError(f"image_size for {name} must be an integer >= 32{rule}, "
                          f"got {image_size!r}")


def build(name: str, *, batch: int | None = 1, image_size: int | None = None,
          seed: int = 0) -> onnx.ModelProto:
    """Build zoo model `name` as a checked ONNX model with input `input` (NCHW float32).

    batch=None makes the batch dimension symbolic ("batch"); image_size overrides H = W
    (for models with symbolic height/width it makes them static). Equal seeds give
    identical weights.
    """
    entry = _lookup(name)
    _check_sizes(name, entry, batch, image_size)
    if entry.symbolic_hw and image_size is None:
        height, width = "height", "width"
    else:
        height = width = image_size or entry.image_size
    g = GraphBuilder(seed, batch, height, width)
    entry.make(g, g.input("input"))
    model = g.model(name, entry.description)
    onnx.checker.check_model(model)
    return model


def save(name: str, path: str | os.PathLike[str], *, batch: int | None = 1,
         image_size: int | None = None, seed: int = 0) -> Path:
    """Build zoo model `name` (options as for build) and write it to path as .onnx."""
    out = Path(path)
    onnx.save(build(name, batch=batch, image_size=image_size, seed=seed), out)
    return out
