"""Numpy reference kernels for the zoo's calibration pass (BatchNorm statistics from data).

Independently drawn running statistics do not match what random weights produce, and the
mismatch compounds with depth (hard-swish nets blew up 100x). So the builder pushes a small
seeded batch through each layer as it adds it, and gives every BatchNorm the running mean
and variance that batch really has, which is what training leaves behind.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Calibrate at the model's own size (capped), not a thumbnail: on tiny maps zero padding
# hides most kernel taps, the variances come out low, and at full size the BNs overshoot.
CALIB_SIZE = 224  # for symbolic height/width
CALIB_MAX = 320
# Several images, so running_var includes the image-to-image spread of the channel means as
# real BN statistics do; from one image, other inputs' deep activations overshoot 10x.
CALIB_BATCH = 4


def conv_out(size: int | str | None, k: int, stride: int, pad: int,
             ceil: bool = False) -> int | None:
    """Spatial output size of a conv/pool, or None when the input size is not a number."""
    if not isinstance(size, int):
        return None
    span = size + 2 * pad - k
    return (-(-span // stride) if ceil else span // stride) + 1


def _windows(x: np.ndarray, k: int, stride: int, pads: tuple[int, int, int, int],
             fill: float = 0.0) -> np.ndarray:
    """[N, C, Ho, Wo, k, k] view of the k x k patches of x padded (top, bottom, left, right)."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int,
           groups: int) -> np.ndarray:
    """Dense or depthwise convolution (the only groupings the zoo uses)."""
    k = w.shape[-1]
    if groups == 1 and k == 1 and pad == 0:  # pointwise: one batched matmul, no patches
        xs = x[:, :, ::stride, ::stride]
        y = (w[:, :, 0, 0] @ xs.reshape(*xs.shape[:2], -1)).reshape(len(x), -1, *xs.shape[2:])
    elif groups == 1:  # im2col per image: the patch matrix of a whole batch can top 200 MB
        y = np.stack([np.tensordot(_windows(img[None], k, stride, (pad,) * 4)[0], w,
                                   axes=([0, 3, 4], [1, 2, 3])) for img in x])
        y = y.transpose(0, 3, 1, 2)
    elif groups == x.shape[1] == w.shape[0]:  # depthwise: sum the k*k shifted, scaled maps
        win = _windows(x, k, stride, (pad,) * 4)
        y = np.zeros(win.shape[:4], np.float32)
        for i in range(k):
            for j in range(k):
                y += win[..., i, j] * w[None, :, 0, i, j, None, None]
    else:
        raise NotImplementedError(f"grouped conv with {groups} groups")
    y = np.ascontiguousarray(y, dtype=np.float32)
    return y if b is None else y + b[None, :, None, None]


def maxpool(x: np.ndarray, k: int, stride: int, pad: int, ceil: bool) -> np.ndarray:
    h, w = x.shape[2:]
    oh, ow = conv_out(h, k, stride, pad, ceil), conv_out(w, k, stride, pad, ceil)
    # ceil_mode lets the last window hang over the bottom/right edge: pad it with -inf.
    extra_h, extra_w = (oh - 1) * stride + k - h - 2 * pad, (ow - 1) * stride + k - w - 2 * pad
    win = _windows(x, k, stride, (pad, pad + max(extra_h, 0), pad, pad + max(extra_w, 0)),
                   fill=-np.inf)
    return win[:, :, :oh, :ow].max(axis=(4, 5))


def conv_transpose2x(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ConvTranspose with kernel 2 and stride 2: every input pixel paints a 2x2 block."""
    n, _, h, wd = x.shape
    y = np.einsum("nchw,coij->nohiwj", x, w, optimize=True)
    return y.reshape(n, w.shape[1], 2 * h, 2 * wd) + b[None, :, None, None]


def resize2x(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "hswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hsigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
}
