"""PP-LCNet x1.0 (Cui et al. 2021) laid out the way paddle2onnx exports PaddleClas's model."""

from __future__ import annotations

import numpy as np

from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 1000
CLASS_EXPAND = 1280
# PaddleClas NET_CONFIG, blocks2..blocks6 flattened: kernel, output channels, stride, SE.
_BLOCKS = [(3, 32, 1, False),
           (3, 64, 2, False), (3, 64, 1, False),
           (3, 128, 2, False), (3, 128, 1, False),
           (3, 256, 2, False)] + [(5, 256, 1, False)] * 5 + [
           (5, 512, 2, True), (5, 512, 1, True)]


def _dw_separable(g: GraphBuilder, x: Tensor, k: int, cout: int, stride: int, se: bool) -> Tensor:
    x = g.depthwise(x, k, stride, act="hswish")
    if se:  # PaddleClas SEModule squeezes by 4 and gates with Hardsigmoid(x / 6 + 0.5)
        x = g.se(x, x.c // 4)
    return g.conv_bn_act(x, cout, act="hswish")


def flatten_dynamic(g: GraphBuilder, x: Tensor) -> Tensor:
    """Flatten to [N, -1] through Shape->Gather->Unsqueeze->Concat->Reshape.

    Exporters emit this chain for `x.reshape([x.shape[0], -1])`; importers must fold or
    evaluate it, so the zoo keeps one model that has it.
    """
    c = x.c
    n = g.op("Gather", [g.op("Shape", [x]), g.const(np.array(0, np.int64), g.unique("idx"))],
             axis=0)
    n = g.op("Unsqueeze", [n, g.const(np.array([0], np.int64), g.unique("axes"))])
    shape = g.op("Concat", [n, g.const(np.array([-1], np.int64), g.unique("rest"))], axis=0)
    value = x.val.reshape(x.val.shape[0], -1)
    return g.op("Reshape", [x, shape], (c, None, None), value)


def _linear(g: GraphBuilder, x: Tensor, n: int) -> Tensor:
    """Paddle's Linear keeps its weight as [in, out] and exports as MatMul + Add."""
    cin = x.c
    name = g.unique("linear")
    weight, bias = g.he((cin, n), cin, gain=1.0), g.small(n)
    y = g.op("MatMul", [x, g.const(weight, f"{name}.weight")])
    return g.op("Add", [y, g.const(bias, f"{name}.bias")], (n, None, None),
                x.val @ weight + bias)


def pp_lcnet(g: GraphBuilder, x: Tensor) -> None:
    x = g.conv_bn_act(x, 16, 3, 2, act="hswish")
    for cfg in _BLOCKS:
        x = _dw_separable(g, x, *cfg)
    # Head: pool, then a BN-free 1x1 "last_conv" to 1280 with hard-swish, then the FC.
    x = g.act(g.conv(g.gap(x), CLASS_EXPAND), "hswish")
    g.output(_linear(g, flatten_dynamic(g, x), CLASSES), "logits", [CLASSES])
