"""ResNet-18 and ResNet-50 (He et al. 2016) with torchvision's v1.5 layout (stride on the 3x3)."""

from __future__ import annotations

from collections.abc import Callable

from edgec.zoo.layers import GraphBuilder, Tensor

CLASSES = 1000
_WIDTHS = (64, 128, 256, 512)
# Trained ResNets end each residual branch with a small BN gamma (torchvision even offers
# zero-init), which keeps the residual stream from growing much over the stacked additions.
_LAST_GAMMA = 0.3

Block = Callable[[GraphBuilder, Tensor, int, int], Tensor]


def _shortcut(g: GraphBuilder, x: Tensor, cout: int, stride: int) -> Tensor:
    if stride == 1 and x.c == cout:
        return x
    return g.conv_bn_act(x, cout, 1, stride, act=None)


def _basic(g: GraphBuilder, x: Tensor, width: int, stride: int) -> Tensor:
    y = g.conv_bn_act(x, width, 3, stride)
    y = g.conv_bn_act(y, width, 3, act=None, gamma_scale=_LAST_GAMMA)
    return g.act(g.add(y, _shortcut(g, x, width, stride)), "relu")


def _bottleneck(g: GraphBuilder, x: Tensor, width: int, stride: int) -> Tensor:
    y = g.conv_bn_act(x, width, 1)
    y = g.conv_bn_act(y, width, 3, stride)
    y = g.conv_bn_act(y, width * 4, 1, act=None, gamma_scale=_LAST_GAMMA)
    return g.act(g.add(y, _shortcut(g, x, width * 4, stride)), "relu")


def _resnet(g: GraphBuilder, x: Tensor, block: Block, repeats: tuple[int, ...]) -> None:
    x = g.conv_bn_act(x, 64, 7, 2)
    x = g.maxpool(x, 3, 2, 1)
    for stage, (width, n) in enumerate(zip(_WIDTHS, repeats, strict=True)):
        for i in range(n):
            x = block(g, x, width, 2 if stage > 0 and i == 0 else 1)
    g.output(g.classifier(x, CLASSES), "logits", [CLASSES])


def resnet18(g: GraphBuilder, x: Tensor) -> None:
    _resnet(g, x, _basic, (2, 2, 2, 2))


def resnet50(g: GraphBuilder, x: Tensor) -> None:
    _resnet(g, x, _bottleneck, (3, 4, 6, 3))
