"""The graph builder every zoo family shares: seeded weights and conv/BN/activation/SE layers.

Each layer method adds ONNX nodes and also runs the layer in numpy on a small calibration
batch (see bn_statistics.py), so BatchNorm running statistics match the activations they will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.zoo import bn_statistics
from edgec.zoo.bn_statistics import conv_out

OPSET = 17  # HardSwish needs opset 14; 17 keeps ReduceMean's axes an attribute.
IR_VERSION = 8  # onnxruntime 1.31 rejects the IR version onnx 1.23 writes by default.

Dim = int | str | None  # a static size, a symbolic name, or unknown while building

# Hard-sigmoid as PyTorch and Paddle define it (x / 6 + 0.5), not ONNX's default slope 0.2.
_HSIG = {"alpha": 1.0 / 6.0, "beta": 0.5}
_ACT_OPS = {"relu": "Relu", "relu6": "Clip", "hswish": "HardSwish", "hsigmoid": "HardSigmoid"}


@dataclass(eq=False)
class Tensor:
    """A graph tensor: its name, graph dims (C, H, W) and its value on the calibration batch.

    Families hold these handles, not the builder, so a calibration value is freed as soon
    as the family code stops referring to it instead of living as long as the builder.
    """

    name: str
    c: int = 0  # 0 when not an NCHW feature map (a 5-D shuffle view, a shape vector)
    h: Dim = None
    w: Dim = None
    val: np.ndarray | None = None


class GraphBuilder:
    """Appends ONNX nodes and seeded initializers; layer methods take and return Tensors."""

    def __init__(self, seed: int, batch: int | None, height: Dim, width: Dim) -> None:
        self.rng = np.random.default_rng(seed)
        self._calib_rng = np.random.default_rng([seed, 1])  # weights don't depend on it
        self.batch: int | str = "batch" if batch is None else batch
        self.height, self.width = height, width
        # Fill the model's graph in place: make_graph/make_model would copy every weight
        # twice more (ResNet-50: +200 MB at peak).
        self._model = helper.make_model(helper.make_graph([], "zoo", [], []),
                                        opset_imports=[helper.make_opsetid("", OPSET)],
                                        producer_name="edgec.zoo")
        self.graph = self._model.graph
        self.output_values: dict[str, np.ndarray | None] = {}  # on the calibration batch
        self._counts: dict[str, int] = {}

    # -- plumbing -------------------------------------------------------------------------
    def unique(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, array: np.ndarray, name: str) -> str:
        self.graph.initializer.add().CopyFrom(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[Tensor | str], dims: tuple[int, Dim, Dim] = (0,),
           value: np.ndarray | None = None, name: str | None = None,
           **attrs: object) -> Tensor:
        """Add a one-output node; dims are its graph (C, H, W), value its calibration value."""
        name = name or self.unique(op_type.lower())
        names = [t.name if isinstance(t, Tensor) else t for t in inputs]
        self.graph.node.append(helper.make_node(op_type, names, [name], name=name, **attrs))
        if value is not None:
            value = value.astype(np.float32, copy=False)
        return Tensor(name, *dims, val=value)

    def input(self, name: str = "input", channels: int = 3) -> Tensor:
        dims = [self.batch, channels, self.height, self.width]
        self.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        side = bn_statistics.CALIB_SIZE
        size = [bn_statistics.CALIB_BATCH, channels, side, side]
        if isinstance(self.height, int) and isinstance(self.width, int):
            most = bn_statistics.CALIB_MAX
            size[2:] = min(self.height, most), min(self.width, most)
        value = self._calib_rng.standard_normal(size, dtype=np.float32)
        return Tensor(name, channels, self.height, self.width, value)

    def output(self, x: Tensor, name: str, dims: list[Dim]) -> None:
        """Expose x as graph output `name` with shape [batch, *dims], renaming the tensor."""
        for node in self.graph.node:
            for slots in (node.input, node.output):
                slots[:] = [name if t == x.name else t for t in slots]
        self.output_values[name] = x.val
        full = [self.batch, *dims]
        self.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, full))

    def model(self, graph_name: str, doc: str = "") -> onnx.ModelProto:
        self.graph.name, self._model.doc_string = graph_name, doc
        self._model.ir_version = IR_VERSION
        return self._model

    # -- weights --------------------------------------------------------------------------
    def he(self, shape: tuple[int, ...], fan_in: int, gain: float = 2.0) -> np.ndarray:
        """Kaiming-normal weights, variance gain / fan_in (gain 2 suits ReLU-like nets)."""
        std = np.float32(np.sqrt(gain / fan_in))
        return self.rng.standard_normal(shape, dtype=np.float32) * std

    def small(self, n: int, std: float = 0.01) -> np.ndarray:
        return self.rng.standard_normal(n, dtype=np.float32) * np.float32(std)

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x: Tensor, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             bias: bool = False, pad: int | None = None) -> Tensor:
        pad = k // 2 if pad is None else pad
        name = self.unique("conv")
        weight = self.he((cout, x.c // groups, k, k), x.c // groups * k * k)
        b = self.small(cout) if bias else None
        ins = [x, self.const(weight, f"{name}.weight")]
        if b is not None:
            ins.append(self.const(b, f"{name}.bias"))
        dims = (cout, conv_out(x.h, k, stride, pad), conv_out(x.w, k, stride, pad))
        value = bn_statistics.conv2d(x.val, weight, b, stride, pad, groups)
        return self.op("Conv", ins, dims, value, name, kernel_shape=[k, k],
                       strides=[stride, stride], pads=[pad] * 4, group=groups,
                       dilations=[1, 1])

    def bn(self, x: Tensor, gamma_scale: float = 1.0) -> Tensor:
        """BatchNorm (left unfolded, as real exports have it) with trained-looking statistics.

        gamma ~ U(0.8, 1.2) * gamma_scale and beta ~ N(0, 0.05) as in trained nets; the
        running mean/var are the calibration batch's, off by a few percent like EMA stats.
        """
        name, uniform = self.unique("bn"), self.rng.uniform
        var = x.val.var(axis=(0, 2, 3), dtype=np.float64)
        # The floor keeps a dead (all-zero) channel from being divided by ~0.
        var = np.maximum(var, 1e-3 * var.mean() + 1e-6) * uniform(0.9, 1.1, x.c)
        mean = x.val.mean(axis=(0, 2, 3), dtype=np.float64)
        mean += np.sqrt(var) * uniform(-0.05, 0.05, x.c)
        gamma = uniform(0.8, 1.2, x.c) * gamma_scale
        params = [np.asarray(p, np.float32) for p in (gamma, self.small(x.c, 0.05), mean, var)]
        ins = [x] + [self.const(p, f"{name}.{s}")
                     for p, s in zip(params, ("scale", "bias", "mean", "var"), strict=True)]
        gamma, beta, mean, var = (p[None, :, None, None] for p in params)
        value = (x.val - mean) * (gamma / np.sqrt(var + np.float32(1e-5))) + beta
        return self.op("BatchNormalization", ins, (x.c, x.h, x.w), value, name, epsilon=1e-5)

    def act(self, x: Tensor, kind: str | None) -> Tensor:
        """Apply relu, relu6, hswish or hsigmoid; None is the identity (linear layers)."""
        if kind is None:
            return x
        ins, attrs = [x], {}
        if kind == "relu6":  # PyTorch's ReLU6 exports as Clip with min/max inputs
            ins += [self.const(np.array(v, np.float32), self.unique(n))
                    for v, n in ((0.0, "clip_min"), (6.0, "clip_max"))]
        elif kind == "hsigmoid":
            attrs = _HSIG
        value = bn_statistics.ACTIVATIONS[kind](x.val)
        return self.op(_ACT_OPS[kind], ins, (x.c, x.h, x.w), value, **attrs)

    def conv_bn_act(self, x: Tensor, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
                    act: str | None = "relu", gamma_scale: float = 1.0) -> Tensor:
        return self.act(self.bn(self.conv(x, cout, k, stride, groups), gamma_scale), act)

    def depthwise(self, x: Tensor, k: int, stride: int = 1, act: str | None = "relu") -> Tensor:
        return self.conv_bn_act(x, x.c, k, stride, groups=x.c, act=act)

    def se(self, x: Tensor, squeeze: int, gate: str = "hsigmoid") -> Tensor:
        """Squeeze-and-excitation: GAP -> Conv -> Relu -> Conv -> gate -> Mul."""
        s = self.act(self.conv(self.gap(x), squeeze, bias=True), "relu")
        s = self.act(self.conv(s, x.c, bias=True), gate)
        return self.mul(x, s)

    # -- elementwise, concat and pooling --------------------------------------------------
    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return self.op("Add", [a, b], (a.c, a.h, a.w), a.val + b.val)

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        return self.op("Mul", [a, b], (a.c, a.h, a.w), a.val * b.val)

    def concat(self, xs: list[Tensor]) -> Tensor:
        value = np.concatenate([x.val for x in xs], axis=1)
        return self.op("Concat", xs, (sum(x.c for x in xs), xs[0].h, xs[0].w), value, axis=1)

    def split(self, x: Tensor, parts: int) -> list[Tensor]:
        """Equal channel split (opset 17 Split without a sizes input)."""
        name = self.unique("split")
        outs = [f"{name}:{i}" for i in range(parts)]
        self.graph.node.append(helper.make_node("Split", [x.name], outs, name=name, axis=1))
        values = np.split(x.val, parts, axis=1)
        return [Tensor(out, x.c // parts, x.h, x.w, np.ascontiguousarray(v))
                for out, v in zip(outs, values, strict=True)]

    def maxpool(self, x: Tensor, k: int, stride: int, pad: int = 0,
                ceil: bool = False) -> Tensor:
        dims = (x.c, conv_out(x.h, k, stride, pad, ceil), conv_out(x.w, k, stride, pad, ceil))
        value = bn_statistics.maxpool(x.val, k, stride, pad, ceil)
        return self.op("MaxPool", [x], dims, value, kernel_shape=[k, k],
                       strides=[stride, stride], pads=[pad] * 4, ceil_mode=int(ceil))

    def gap(self, x: Tensor) -> Tensor:
        value = x.val.mean(axis=(2, 3), keepdims=True)
        return self.op("GlobalAveragePool", [x], (x.c, 1, 1), value)

    def flatten(self, x: Tensor) -> Tensor:
        value = x.val.reshape(len(x.val), -1)
        return self.op("Flatten", [x], (x.c, None, None), value, axis=1)

    def gemm(self, x: Tensor, n: int, gain: float = 1.0) -> Tensor:
        """Linear layer exported the PyTorch way: Gemm with a [out, in] weight and transB."""
        name = self.unique("fc")
        weight, bias = self.he((n, x.c), x.c, gain), self.small(n)
        ins = [x, self.const(weight, f"{name}.weight"), self.const(bias, f"{name}.bias")]
        return self.op("Gemm", ins, (n, None, None), x.val @ weight.T + bias, name,
                       alpha=1.0, beta=1.0, transB=1)

    def classifier(self, x: Tensor, classes: int) -> Tensor:
        """torchvision head: GlobalAveragePool -> Flatten -> Gemm."""
        return self.gemm(self.flatten(self.gap(x)), classes)
