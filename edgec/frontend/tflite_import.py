"""TFLite import: read a .tflite flatbuffer, refuse what TVM cannot convert, convert it to Relax.

The model keeps its own NHWC inputs and outputs. Float16 weights behind DEQUANTIZE (what the
TFLite converter writes for "float16 quantization") become float32 constants, and sparse
weights behind DENSIFY are densified at import, so the Relax module has neither op nor any
float16 tensor. MediaPipe's custom Convolution2DTransposeBias converts; other custom ops are
refused by name. edgec.reference runs the same file in LiteRT, the reference for checking.

TVM's TFLite converter internals are touched only in edgec.tvm_compat.tflite_converters.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ConfigError, MissingDependencyError, ModelImportError, did_you_mean
from edgec.model import Model, TensorSpec
from edgec.tvm_compat import tflite_converters
from edgec.tvm_compat.tflite_converters import KNOWN_CUSTOM

# What `pip install` needs; also in the messages of MissingDependencyError.
TFLITE_PACKAGE = "tflite==2.18.0"

# A TFLite flatbuffer carries this file identifier at bytes 4..8.
_IDENTIFIER = b"TFL3"
def _require_tflite():
    try:
        import tflite
    except ImportError as err:
        raise MissingDependencyError(
            f"importing .tflite models needs the tflite package: pip install {TFLITE_PACKAGE}"
        ) from err
    return tflite


def read_tflite(path: Path) -> tuple[Any, bytes]:
    """Read and parse a .tflite file. Returns (tflite.Model, the file's bytes).

    Raises:
        ModelImportError: missing, truncated or not a TFLite flatbuffer.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"model file {path} does not exist")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ModelImportError(f"{path} is not a TFLite model (no {_IDENTIFIER.decode()} marker)")
    tflite = _require_tflite()
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("it has no subgraph")
        model.Subgraphs(0).OperatorsLength()
    except Exception as err:  # flatbuffers raises struct errors, IndexError, ... on bad data
        raise ModelImportError(
            f"{path} is not a readable TFLite model (truncated?): {err}"
        ) from err
    return model, data


def op_census(model: Any) -> collections.Counter:
    """Ops of the main subgraph by name, custom ops as "custom:NAME"."""
    from tflite.BuiltinOperator import BuiltinOperator

    names = {v: k for k, v in vars(BuiltinOperator).items() if isinstance(v, int)}
    subgraph = model.Subgraphs(0)
    counts: collections.Counter = collections.Counter()
    for i in range(subgraph.OperatorsLength()):
        code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
        # Builtin codes above 127 live only in BuiltinCode(); older files use the other field.
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if number == BuiltinOperator.CUSTOM:
            custom = (code.CustomCode() or b"").decode("utf-8", "replace")
            counts[KNOWN_CUSTOM.get(custom, f"custom:{custom}")] += 1
        else:
            counts[names.get(number, f"builtin#{number}")] += 1
    return counts


def _fold_weights_fix_transpose_convs(ir: Any) -> Any:
    """Fold the astype / permute_dims / reshape the converters put on weights, in numpy, and
    turn NHWC transposed convolutions into the NCHW form TVM can lower.

    relax.transform.FoldConstant does the same by compiling every folded op (6-15 s per
    MediaPipe model); numpy takes a tenth of a second. Quantized weights keep their
    R.dequantize, so the int8 structure stays visible to later stages.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def permute(x, call):
        axes = call.attrs.axes
        return np.transpose(x, None if axes is None else [int(a) for a in axes])

    folds = {
        "relax.permute_dims": permute,
        "relax.reshape": lambda x, call: x.reshape([int(d) for d in call.args[1].values]),
        "relax.astype": lambda x, call: x.astype(call.attrs.dtype),
    }

    @mutator
    class Folder(PyExprMutator):
        def _constant(self, expr):
            if isinstance(expr, relax.Var):
                expr = self.lookup_binding(expr)
            return expr if isinstance(expr, tvm.ir.expr.Constant) else None

        def visit_var_(self, var):
            return self._constant(var) or super().visit_var_(var)

        def visit_dataflow_var_(self, var):
            var = super().visit_dataflow_var_(var)
            return self._constant(var) or var

        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            name = getattr(call.op, "name", None)
            fold = folds.get(name)
            if (fold is not None and isinstance(call.args[0], tvm.ir.expr.Constant)
                    and not any(isinstance(a, relax.Var) for a in call.args[1:])):
                return relax.const(fold(call.args[0].value.numpy(), call))
            if name == "relax.nn.conv2d_transpose" and call.attrs.data_layout == "NHWC":
                return self._transpose_conv_nchw(call)
            return call

        def _transpose_conv_nchw(self, call):
            # TVM legalizes conv2d_transpose only as NCHW (data) / IOHW (kernel); TFLite's
            # converters emit NHWC, which reaches VM codegen unlowered and fails there.
            a = call.attrs
            if a.out_layout != "NHWC" or a.kernel_layout != "IOHW":
                return call
            data = self.builder_.emit(relax.op.permute_dims(call.args[0], axes=[0, 3, 1, 2]))
            out = self.builder_.emit(relax.op.nn.conv2d_transpose(
                data, call.args[1], strides=a.strides, padding=a.padding,
                output_padding=a.output_padding, dilation=a.dilation, groups=a.groups,
                data_layout="NCHW", kernel_layout="IOHW", out_layout="NCHW",
                out_dtype=a.out_dtype,
            ))
            return relax.op.permute_dims(out, axes=[0, 2, 3, 1])

    ir = tvm.IRModule({"main": Folder().visit_expr(ir["main"])})
    return relax.transform.DeadCodeElimination()(ir)


def _check_supported(model: Any, census: collections.Counter, source: str) -> None:
    """Refuse custom and unconverted ops, and quantized ops TVM cannot lower, in one line."""
    import tvm

    converter = tflite_converters.converter(model)
    missing = {op: n for op, n in census.items() if op not in converter.convert_map}
    if missing:
        listing = ", ".join(
            f"{op[len('custom:'):]} (custom, {n})" if op.startswith("custom:") else f"{op} ({n})"
            for op, n in sorted(missing.items())
        )
        raise ModelImportError(f"{source}: TVM's TFLite frontend cannot convert these ops: "
                               f"{listing}")
    try:
        converter.check_unsupported_ops()
    except tvm.error.OpNotImplemented as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        hint = " (a float32 or float16 export of the model would import)" if any(
            "quantiz" in line for line in lines) else ""
        raise ModelImportError(
            f"{source}: TVM's TFLite frontend refuses it: {' '.join(lines) or err}{hint}"
        ) from err


def _input_shapes(
    inputs: list, overrides: Mapping[str, tuple[int, ...]], source: str
) -> dict[str, tuple[int, ...]]:
    """The model's input shapes with overrides applied where the model leaves a dim open.

    TFLite bakes shapes into RESHAPE and friends, so only dims the file's shape signature
    marks dynamic (-1) may change.
    """
    names = [name for name, *_ in inputs]
    for name in overrides:
        if name not in names:
            raise ConfigError(f'--input-shape names "{name}", but {source} has inputs '
                              f"{', '.join(names)}{did_you_mean(name, names)}")
    shapes = {}
    for name, shape, signature, _ in inputs:
        wanted = tuple(int(d) for d in overrides.get(name, shape))
        open_dims = [i for i, s in enumerate(signature) if s == -1]
        if len(wanted) != len(shape) or any(
            wanted[i] != shape[i] for i in range(len(shape)) if i not in open_dims
        ):
            raise ConfigError(
                f"--input-shape {name}: {source} was converted for {list(shape)} and leaves "
                f"{'dims ' + str(open_dims) if open_dims else 'no dim'} open; TFLite bakes "
                f"the others into its ops"
            )
        shapes[name] = wanted
    return shapes


def _output_specs(ir: Any, outputs: list, source: str) -> list[TensorSpec]:
    """Output specs named as in the file; Relax's shapes must agree with the file's."""
    from tvm import relax

    ret = ir["main"].ret_ty
    relax_outs = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(relax_outs) != len(outputs):
        raise ModelImportError(f"{source}: TVM's frontend produced {len(relax_outs)} outputs, "
                               f"the file declares {len(outputs)}")
    specs = []
    for (name, shape, signature, _), rtype in zip(outputs, relax_outs, strict=True):
        relax_shape = tuple(int(d) for d in rtype.shape.values)
        if -1 not in signature and shape and relax_shape != shape:
            raise ModelImportError(
                f"{source}: output {name}: TVM's frontend produced shape {relax_shape}, the "
                f"file says {shape}; this is a frontend bug edgec cannot route around"
            )
        specs.append(TensorSpec(name, relax_shape, str(rtype.dtype)))
    return specs


def import_tflite(
    path: Path, input_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> tuple[Any, dict | None, list[TensorSpec], list[TensorSpec]]:
    """Convert a .tflite model to Relax, weights bound as float32 (or int8) constants.

    Args:
        path: the .tflite file.
        input_shapes: shapes for inputs whose shape signature leaves dims open (-1).

    Returns:
        (ir, params, inputs, outputs): the tvm.IRModule whose "main" takes the inputs in
        order (NHWC, as the file has them); params is None (weights are constants); input
        and output specs named as in the file, which are also the names LiteRT reports.

    Raises:
        ModelImportError: unreadable file, custom or unsupported ops (named, with counts),
            quantized ops TVM cannot lower, or a failure inside TVM's frontend.
        ConfigError: an input shape override that names no input or changes a fixed dim.
        MissingDependencyError: the tflite package is not installed.
    """
    source = str(path)
    model, _ = read_tflite(Path(path))
    census = op_census(model)
    _check_supported(model, census, source)
    subgraph = model.Subgraphs(0)
    inputs = tflite_converters.tensor_specs(model, subgraph.InputsAsNumpy())
    outputs = tflite_converters.tensor_specs(model, subgraph.OutputsAsNumpy())
    shapes = _input_shapes(inputs, input_shapes or {}, source)

    try:
        ir = _fold_weights_fix_transpose_convs(tflite_converters.from_tflite(model, shapes))
    except Exception as err:  # the frontend raises anything from AssertionError to TVMError
        text = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise ModelImportError(f"{source}: TVM's TFLite frontend failed: "
                               f"{text[-1] if text else type(err).__name__}") from err
    input_specs = [TensorSpec(name, shapes[name], dtype) for name, _, _, dtype in inputs]
    return ir, None, input_specs, _output_specs(ir, outputs, source)


def check_inputs(path: Path, input_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """The checks of import_tflite that need no conversion: a readable file, ops TVM
    converts and input shapes that fit (see edgec.frontend.check_inputs)."""
    model, _ = read_tflite(path)
    _check_supported(model, op_census(model), str(path))
    subgraph = model.Subgraphs(0)
    _input_shapes(tflite_converters.tensor_specs(model, subgraph.InputsAsNumpy()), input_shapes,
                  str(path))


def weight_notes(path: Path) -> dict[str, int]:
    """What import_tflite folds, counted in the file: DEQUANTIZE of float16 weights, DENSIFY."""
    from tflite.TensorType import TensorType

    model, _ = read_tflite(Path(path))
    subgraph = model.Subgraphs(0)
    census = op_census(model)
    float16 = sum(1 for i in range(subgraph.TensorsLength())
                  if subgraph.Tensors(i).Type() == TensorType.FLOAT16)
    return {"float16_tensors": float16, "densify": census.get("DENSIFY", 0),
            "dequantize": census.get("DEQUANTIZE", 0)}




def import_model(source: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None
                 ) -> Model:
    """A .tflite file as a Model: NHWC convs, weights as float32 (or int8) constants, the
    file itself as the reference LiteRT runs.

    Raises:
        ModelImportError, ConfigError, MissingDependencyError: see import_tflite.
    """
    ir, _, inputs, outputs = import_tflite(Path(source), input_shapes)
    notes = weight_notes(Path(source))
    applied = ["imported", "tflite"]
    if notes["float16_tensors"]:
        applied.append(f"fold:float16 x{notes['float16_tensors']}")
    if notes["densify"]:
        applied.append(f"densify x{notes['densify']}")
    return Model(name=Path(source).stem, reference=str(Path(source).resolve()), ir=ir,
                 inputs=tuple(inputs), outputs=tuple(outputs), layout="NHWC",
                 applied=tuple(applied))
