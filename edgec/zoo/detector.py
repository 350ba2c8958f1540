"""SSDLite-style detector: MobileNetV2 backbone, three feature maps, depthwise-separable heads."""

from __future__ import annotations

import numpy as np

from edgec.zoo.layers import GraphBuilder, Tensor
from edgec.zoo.mobilenet import mobilenet_v2_features

CLASSES = 21  # Pascal VOC's 20 classes plus background, scored with a softmax
ANCHORS = 6  # default boxes per feature-map cell, as in SSDLite


def _extra_layer(g: GraphBuilder, x: Tensor, cout: int) -> Tensor:
    """SSDLite extra block: 1x1 squeeze, stride-2 depthwise, 1x1 expand (stride 64 map)."""
    x = g.conv_bn_act(x, cout // 2, act="relu6")
    x = g.depthwise(x, 3, 2, act="relu6")
    return g.conv_bn_act(x, cout, act="relu6")


def _head(g: GraphBuilder, x: Tensor, per_anchor: int) -> Tensor:
    """Depthwise 3x3 + 1x1 predictor, then NCHW -> [N, H*W*anchors, per_anchor]."""
    y = g.conv(g.depthwise(x, 3, act="relu6"), ANCHORS * per_anchor, bias=True)
    anchors = y.h * y.w * ANCHORS
    value = y.val.transpose(0, 2, 3, 1).reshape(len(y.val), -1, per_anchor)
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])
    shape = g.const(np.array([0, -1, per_anchor], np.int64), g.unique("head_shape"))
    return g.op("Reshape", [y, shape], (anchors, None, None), value)


def ssd_lite(g: GraphBuilder, x: Tensor) -> None:
    stages = mobilenet_v2_features(g, x)
    # Taps at stride 16 (the 96-channel stage), stride 32 (320 channels), and one extra at 64.
    maps = [stages[4], stages[6]]
    maps.append(_extra_layer(g, maps[-1], 256))
    boxes = [_head(g, m, 4) for m in maps]
    scores = [_head(g, m, CLASSES) for m in maps]
    anchors = sum(b.c for b in boxes)
    # The output concats and softmax skip calibration values: no BatchNorm comes after them.
    g.output(g.op("Concat", boxes, axis=1), "boxes", [anchors, 4])
    scores = g.op("Softmax", [g.op("Concat", scores, axis=1)], axis=-1)
    g.output(scores, "scores", [anchors, CLASSES])
