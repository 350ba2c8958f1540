"""A small fully convolutional U-Net (Ronneberger et al. 2015) for per-pixel segmentation."""

from __future__ import annotations

import numpy as np

from edgec.zoo import bn_statistics
from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 4
_WIDTHS = (16, 32, 64)  # three encoder levels; each halves H and W, so both must divide by 8
_BOTTOM = 128


def _double_conv(g: GraphBuilder, x: Tensor, cout: int) -> Tensor:
    return g.conv_bn_act(g.conv_bn_act(x, cout, 3), cout, 3)


def _scaled(size: int | str | None, factor: int) -> int | None:
    return size * factor if isinstance(size, int) else None


def _up_transposed(g: GraphBuilder, x: Tensor) -> Tensor:
    """Learned 2x upsampling (ConvTranspose k=2, s=2) that also halves the channels."""
    cin, h, w = x.c, x.h, x.w
    name = g.unique("convtranspose")
    weight, bias = g.he((cin, cin // 2, 2, 2), cin), g.small(cin // 2)
    ins = [x, g.const(weight, f"{name}.weight"), g.const(bias, f"{name}.bias")]
    value = bn_statistics.conv_transpose2x(x.val, weight, bias)
    return g.op("ConvTranspose", ins, (cin // 2, _scaled(h, 2), _scaled(w, 2)), value, name,
                kernel_shape=[2, 2], strides=[2, 2])


def _up_resize(g: GraphBuilder, x: Tensor) -> Tensor:
    """Fixed 2x nearest upsampling, as torch's Upsample(scale_factor=2) exports."""
    c, h, w = x.c, x.h, x.w
    scales = g.const(np.array([1, 1, 2, 2], np.float32), g.unique("scales"))
    return g.op("Resize", [x, "", scales], (c, _scaled(h, 2), _scaled(w, 2)),
                bn_statistics.resize2x(x.val), mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def unet(g: GraphBuilder, x: Tensor) -> None:
    skips = []
    for width in _WIDTHS:
        x = _double_conv(g, x, width)
        skips.append(x)
        x = g.maxpool(x, 2, 2)
    x = _double_conv(g, x, _BOTTOM)
    # The deepest level upsamples with ConvTranspose, the others with Resize, so the zoo
    # exercises both ways exporters spell upsampling.
    for level, skip in enumerate(reversed(skips)):
        up = _up_transposed(g, x) if level == 0 else _up_resize(g, x)
        x = _double_conv(g, g.concat([up, skip]), skip.c)
    logits = g.conv(x, CLASSES, bias=True)
    g.output(logits, "logits", [CLASSES, g.height, g.width])
