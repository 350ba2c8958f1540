"""ShuffleNetV2 x1.0 (Ma et al. 2018, torchvision layout): Split, branches, channel shuffle."""

from __future__ import annotations

import numpy as np

from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 1000
_REPEATS = (4, 8, 4)
_CHANNELS = (24, 116, 232, 464, 1024)  # stem, three stages, conv5 for width x1.0


def channel_shuffle(g: GraphBuilder, x: Tensor, groups: int = 2) -> Tensor:
    """Reshape -> Transpose -> Reshape, as torch's view/transpose/view exports (-1 = batch)."""
    c, h, w = x.c, x.h, x.w
    split = g.const(np.array([-1, groups, c // groups, h, w], np.int64), g.unique("shuffle_in"))
    merged = g.const(np.array([-1, c, h, w], np.int64), g.unique("shuffle_out"))
    y = g.op("Reshape", [x, split])
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    n, _, ch, cw = x.val.shape  # the calibration batch has its own spatial size
    value = x.val.reshape(n, groups, c // groups, ch, cw).swapaxes(1, 2).reshape(n, c, ch, cw)
    return g.op("Reshape", [y, merged], (c, h, w), value)


def _branch(g: GraphBuilder, x: Tensor, width: int, stride: int) -> Tensor:
    y = g.conv_bn_act(x, width)
    y = g.depthwise(y, 3, stride, act=None)
    return g.conv_bn_act(y, width)


def _unit(g: GraphBuilder, x: Tensor, cout: int, stride: int) -> Tensor:
    half = cout // 2
    if stride == 2:  # downsampling unit: both branches see the whole input
        left = g.conv_bn_act(g.depthwise(x, 3, 2, act=None), half)
        right = _branch(g, x, half, 2)
    else:  # basic unit: half the channels pass through untouched
        left, right = g.split(x, 2)
        right = _branch(g, right, half, 1)
    return channel_shuffle(g, g.concat([left, right]))


def shufflenet_v2(g: GraphBuilder, x: Tensor) -> None:
    x = g.conv_bn_act(x, _CHANNELS[0], 3, 2)
    x = g.maxpool(x, 3, 2, 1)
    for n, cout in zip(_REPEATS, _CHANNELS[1:4], strict=True):
        for i in range(n):
            x = _unit(g, x, cout, 2 if i == 0 else 1)
    x = g.conv_bn_act(x, _CHANNELS[4])
    # torchvision pools with x.mean([2, 3]), which exports as ReduceMean rather than GAP.
    x = g.op("ReduceMean", [x], (_CHANNELS[4], None, None), x.val.mean(axis=(2, 3)),
             axes=[2, 3], keepdims=0)
    g.output(g.gemm(x, CLASSES), "logits", [CLASSES])
