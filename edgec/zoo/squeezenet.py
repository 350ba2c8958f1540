"""SqueezeNet 1.1 (Iandola et al. 2016, torchvision's v1.1): Fire modules, no BatchNorm."""

from __future__ import annotations

from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 1000
# Fire modules per pooling stage: (squeeze, expand) channels; expand is 1x1 and 3x3 each.
_STAGES = [[(16, 64), (16, 64)], [(32, 128), (32, 128)],
           [(48, 192), (48, 192), (64, 256), (64, 256)]]


def _conv_relu(g: GraphBuilder, x: Tensor, cout: int, k: int = 1, stride: int = 1,
               pad: int | None = None) -> Tensor:
    # SqueezeNet predates BatchNorm: real exports carry biased convs straight into ReLU.
    return g.act(g.conv(x, cout, k, stride, bias=True, pad=pad), "relu")


def _fire(g: GraphBuilder, x: Tensor, squeeze: int, expand: int) -> Tensor:
    s = _conv_relu(g, x, squeeze)
    return g.concat([_conv_relu(g, s, expand, 1), _conv_relu(g, s, expand, 3)])


def squeezenet1_1(g: GraphBuilder, x: Tensor) -> None:
    x = _conv_relu(g, x, 64, 3, 2, pad=0)  # the stem is unpadded in v1.1
    for fires in _STAGES:
        x = g.maxpool(x, 3, 2, ceil=True)  # torchvision pools with ceil_mode=True
        for squeeze, expand in fires:
            x = _fire(g, x, squeeze, expand)
    # The classifier is a 1x1 conv to the classes, ReLU, then global pooling.
    x = g.flatten(g.gap(_conv_relu(g, x, CLASSES)))
    g.output(x, "logits", [CLASSES])
