"""MobileNet V1, V2 and V3-Small, following the papers and torchvision's layer configs."""

from __future__ import annotations

from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 1000

# MobileNetV1 (Howard et al. 2017, table 1): (output channels, stride) of each dw-separable.
_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

# MobileNetV2 (Sandler et al. 2018, table 2): expansion t, channels c, repeats n, stride s.
_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

# MobileNetV3-Small (Howard et al. 2019, table 2 / torchvision):
# kernel, expanded channels, output channels, SE, activation, stride.
_V3_SMALL = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
             (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hswish", 2),
             (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
             (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1),
             (5, 288, 96, True, "hswish", 2), (5, 576, 96, True, "hswish", 1),
             (5, 576, 96, True, "hswish", 1)]


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of divisor, never more than 10% down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobilenet_v1(g: GraphBuilder, x: Tensor) -> None:
    x = g.conv_bn_act(x, 32, 3, 2)
    for cout, stride in _V1:
        x = g.conv_bn_act(g.depthwise(x, 3, stride), cout)
    g.output(g.classifier(x, CLASSES), "logits", [CLASSES])


def inverted_residual(g: GraphBuilder, x: Tensor, expand: int, cout: int, stride: int) -> Tensor:
    """V2 block: 1x1 expand -> 3x3 depthwise -> linear 1x1 project, residual when shapes match."""
    cin = x.c
    y = g.conv_bn_act(x, cin * expand, act="relu6") if expand != 1 else x
    y = g.depthwise(y, 3, stride, act="relu6")
    # The projection is linear (no activation) per the paper; a smaller BN gamma on the
    # residual branch mimics trained nets and keeps the stacked sums from growing.
    residual = stride == 1 and cin == cout
    y = g.conv_bn_act(y, cout, act=None, gamma_scale=0.5 if residual else 1.0)
    return g.add(x, y) if residual else y


def mobilenet_v2_features(g: GraphBuilder, x: Tensor) -> list[Tensor]:
    """Stem and inverted-residual stages; returns each stage's output (for detector taps)."""
    x = g.conv_bn_act(x, 32, 3, 2, act="relu6")
    stages = []
    for t, c, n, s in _V2:
        for i in range(n):
            x = inverted_residual(g, x, t, c, s if i == 0 else 1)
        stages.append(x)
    return stages


def mobilenet_v2(g: GraphBuilder, x: Tensor) -> None:
    x = mobilenet_v2_features(g, x)[-1]
    x = g.conv_bn_act(x, 1280, act="relu6")
    g.output(g.classifier(x, CLASSES), "logits", [CLASSES])


def _v3_block(g: GraphBuilder, x: Tensor, k: int, exp: int, cout: int, use_se: bool,
              act: str, stride: int) -> Tensor:
    cin = x.c
    y = g.conv_bn_act(x, exp, act=act) if exp != cin else x
    y = g.depthwise(y, k, stride, act=act)
    if use_se:
        y = g.se(y, make_divisible(exp // 4))
    residual = stride == 1 and cin == cout
    y = g.conv_bn_act(y, cout, act=None, gamma_scale=0.5 if residual else 1.0)
    return g.add(x, y) if residual else y


def mobilenet_v3_small(g: GraphBuilder, x: Tensor) -> None:
    x = g.conv_bn_act(x, 16, 3, 2, act="hswish")
    for cfg in _V3_SMALL:
        x = _v3_block(g, x, *cfg)
    x = g.conv_bn_act(x, 576, act="hswish")
    # V3's head: pooled features -> Linear 1024 + hard-swish -> Linear classes.
    x = g.act(g.gemm(g.flatten(g.gap(x)), 1024, gain=2.0), "hswish")
    g.output(g.gemm(x, CLASSES), "logits", [CLASSES])
