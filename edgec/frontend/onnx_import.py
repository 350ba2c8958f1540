"""Import stage: read an ONNX model, fix its input shapes, simplify it and convert it to Relax."""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from edgec.errors import ConfigError, ModelImportError, did_you_mean
from edgec.frontend import graph_fixes
from edgec.model import Model, TensorSpec
from edgec.tvm_compat import onnx_converters
from edgec.tvm_compat.errors import without_op_dump

ZOO_PREFIX = "zoo:"
# Models older than this are converted up (onnx.version_converter) before anything else:
# ONNX Runtime 1.31 no longer runs opset 1-6 kernels (AveragePool-1, Gemm-6, Add-6,
# BatchNormalization-6), so the reference check could not run them, and TVM's Relax
# frontend is written against current opsets.
MIN_OPSET = 13


def read_onnx(source: str) -> tuple[onnx.ModelProto, str]:
    """Read an ONNX file, or build a zoo model for "zoo:NAME". Returns (model, short name).

    Raises:
        ModelImportError: missing, unreadable, truncated or non-ONNX file.
    """
    if source.startswith(ZOO_PREFIX):
        from edgec import zoo

        name = source[len(ZOO_PREFIX):]
        return zoo.build(name), name
    path = Path(source)
    if not path.is_file():
        raise ModelImportError(
            f"model file {source} does not exist (or use zoo:NAME; see `edgec zoo`)"
        )
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise ModelImportError(
            f"{source} is not a readable ONNX model (truncated or another format?): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    if not model.graph.node or not model.opset_import:
        raise ModelImportError(f"{source} is not an ONNX model: it has no graph nodes or opset")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelImportError(f"{source} is not a valid ONNX model: {first}") from err
    return model, path.stem


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: graph inputs that are not initializers (old exports list weights too)."""
    weights = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in weights]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value.type.tensor_type.shape.dim:
        static = d.HasField("dim_value") and d.dim_value > 0
        dims.append(d.dim_value if static else d.dim_param or "?")
    return dims


def _dtype(value: onnx.ValueInfoProto) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, tuple[int, ...]], source: str
) -> dict[str, tuple[int, ...]]:
    """Static shape of every input: the model's own dims, replaced by --input-shape overrides.

    Raises:
        ConfigError: an override names no input, or has the wrong rank.
        ModelImportError: an input stays dynamic; the message lists every input and its dims.
    """
    inputs = {v.name: _dims(v) for v in graph_inputs(model)}
    for name, shape in overrides.items():
        if name not in inputs:
            raise ConfigError(
                f'--input-shape names "{name}", but {source} has inputs '
                f"{', '.join(inputs)}{did_you_mean(name, inputs)}"
            )
        if inputs[name] and len(shape) != len(inputs[name]):
            raise ConfigError(
                f"--input-shape {name}: rank {len(shape)} given, the model's input has rank "
                f"{len(inputs[name])} {inputs[name]}"
            )
    shapes = {}
    for name, dims in inputs.items():
        shape = overrides.get(name) or dims
        if not shape or not all(isinstance(d, int) for d in shape):
            listing = "; ".join(f"{n}: [{', '.join(map(str, d))}]" for n, d in inputs.items())
            open_inputs = {n: d for n, d in inputs.items()
                           if n not in overrides and not (d and all(isinstance(x, int) for x in d))}
            raise ModelImportError(f"{source} has dynamic input dims ({listing}); fix them "
                                   f"with {_shape_hint(open_inputs)}")
        shapes[name] = tuple(int(d) for d in shape)
    return shapes


# Names exporters give dims nobody named (PaddlePaddle's "DynamicDimension.0", tf2onnx's
# "unk__123", "?"): as placeholders they read as noise ("DYNAMICDIMENSION_0").
_GENERATED_DIM = re.compile(r"^(\?|DynamicDimension\.\d+|unk__\d+|dim_?\d*|-1)?$", re.IGNORECASE)
_IMAGE_AXES = ("BATCH", "C", "H", "W")


def _shape_hint(open_inputs: Mapping[str, list[int | str]]) -> str:
    """--input-shape options spelled from the model's own dims, its dynamic ones as
    placeholders to fill: "--input-shape image:BATCH,3,H,W (replace BATCH, H, W by sizes)"."""
    options, placeholders = [], []
    for name, dims in open_inputs.items():
        if not dims:  # no shape at all in the file: only the user knows its rank
            options.append(f"--input-shape {name}:D1,D2,...")
            continue
        cells = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                cells.append(str(dim))
                continue
            word = "" if _GENERATED_DIM.match(dim) else re.sub(r"\W+", "_", dim).strip("_").upper()
            if not word or word[0].isdigit():  # no name of the model's own: the axis's role
                word = _IMAGE_AXES[axis] if len(dims) == 4 else f"DIM{axis}"
            cells.append(word)
            if word not in placeholders:
                placeholders.append(word)
        options.append(f"--input-shape {name}:{','.join(cells)}")
    fill = f" (replace {', '.join(placeholders)} by sizes)" if placeholders else ""
    return " ".join(options) + fill


def _simplify(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], source: str):
    import onnxsim

    graph_fixes.fill_output_shapes(model)
    try:
        simplified, ok = onnxsim.simplify(
            model, overwrite_input_shapes={k: list(v) for k, v in shapes.items()}
        )
    except Exception as err:  # onnxsim raises bare RuntimeErrors from C++
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelImportError(f"{source}: simplification failed: {first}") from err
    if not ok:
        raise ModelImportError(f"{source}: the simplified model no longer matches the original")
    return onnx.shape_inference.infer_shapes(simplified)


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def upgrade_opset(model: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, int | None]:
    """The model converted to MIN_OPSET if it is older; (model, the old opset or None).

    Raises:
        ModelImportError: the converter has no adapter for one of the model's ops; names it.
    """
    version = _default_opset(model)
    if version is None or version >= MIN_OPSET:
        return model, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # the converter raises bare RuntimeErrors from C++
        text = " ".join(str(err).split())
        blocking = re.search(r"(?:for|op) ([A-Z][A-Za-z0-9]+)", text)
        what = f"at op {blocking.group(1)}" if blocking else f"({text[:160]})"
        raise ModelImportError(
            f"{source} uses opset {version}, older than ONNX Runtime and TVM run, and "
            f"converting it to opset {MIN_OPSET} failed {what}; re-export the model with "
            f"opset {MIN_OPSET} or newer") from err
    if converted.ir_version < 3:
        converted.ir_version = 3
    return converted, version


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _check_supported(model: onnx.ModelProto, original: onnx.ModelProto, source: str) -> None:
    """Refuse ops the frontend lacks, counted as in the user's own file (simplification may
    have merged duplicates), once simplification had its chance to fold them away."""
    known = onnx_converters.known_ops()
    remaining = {_op_name(n) for n in model.graph.node if _op_name(n) not in known}
    if remaining:
        counts = collections.Counter(
            _op_name(n) for n in original.graph.node if _op_name(n) in remaining
        )
        listing = ", ".join(f"{op} ({count})" for op, count in counts.most_common())
        raise ModelImportError(
            f"{source}: TVM's Relax frontend cannot convert these ops: {listing}"
        )


def _output_specs(model: onnx.ModelProto, ir) -> tuple[TensorSpec, ...]:
    """Output specs from ONNX; checks that Relax agrees, since a disagreement is a frontend bug."""
    from tvm import relax

    ret = ir["main"].ret_ty
    relax_outs = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for value, rtype in zip(model.graph.output, relax_outs, strict=True):
        relax_shape = tuple(int(d) for d in rtype.shape.values)
        onnx_shape = _dims(value)
        if all(isinstance(d, int) for d in onnx_shape) and tuple(onnx_shape) != relax_shape:
            raise ModelImportError(
                f"output {value.name}: TVM's frontend produced shape {relax_shape}, ONNX says "
                f"{tuple(onnx_shape)}; this is a frontend bug edgec cannot route around"
            )
        specs.append(TensorSpec(value.name, relax_shape, str(rtype.dtype)))
    return tuple(specs)


@dataclass(frozen=True)
class PreparedOnnx:
    """An ONNX model with static input shapes, simplified and fixed up, not yet in Relax.

    Stages that work on the ONNX side (quantization) take this and hand it on with a new
    `graph`; `reference` is what ONNX Runtime runs to check the compiled code.
    """

    name: str
    source: str
    graph: onnx.ModelProto
    reference: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]]
    applied: tuple[str, ...]


def prepare_onnx(source: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None
                 ) -> PreparedOnnx:
    """Read, fix shapes and simplify a model; the ONNX half of import_model.

    Raises:
        ModelImportError, ConfigError: see the message; nothing is written.
    """
    original, name = read_onnx(source)
    applied = ["imported"]
    # The converted model is also the reference: ONNX Runtime cannot run the old one.
    original, old_opset = upgrade_opset(original, source)
    if old_opset is not None:
        applied.append(f"opset:{old_opset}->{MIN_OPSET}")
    shapes = resolve_input_shapes(original, input_shapes or {}, source)
    if graph_fixes.set_input_shapes(original, shapes):  # the reference runs at these too
        applied.append("reshaped")
    model = onnx.ModelProto()
    model.CopyFrom(original)  # the fixes below edit in place; keep the original as reference
    if n := graph_fixes.decompose_prelu(model):
        applied.append(f"fix:prelu x{n}")
    model = _simplify(model, shapes, source)
    applied.append("simplified")
    if n := graph_fixes.make_expand_shapes_explicit(model):
        applied.append(f"fix:expand x{n}")
    _check_supported(model, original, source)
    return PreparedOnnx(name, source, model, original, shapes, tuple(applied))


def convert(prepared: PreparedOnnx) -> Model:
    """Convert a prepared ONNX model to Relax; the Relax half of import_model.

    Raises:
        ModelImportError: TVM's frontend failed or produced inconsistent shapes.
    """
    model, shapes, source = prepared.graph, prepared.shapes, prepared.source
    dtypes = {v.name: _dtype(v) for v in graph_inputs(model)}
    try:
        from tvm.relax.frontend.onnx import from_onnx

        with onnx_converters.converter_overrides():
            ir = from_onnx(
                model, shape_dict={k: list(v) for k, v in shapes.items()}, dtype_dict=dtypes
            )
    except Exception as err:  # the frontend raises anything from ValueError to TVMError
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ModelImportError(f"{source}: TVM's Relax frontend failed: "
                               f"{without_op_dump(first)}") from err
    inputs = tuple(TensorSpec(n, shapes[n], dtypes[n]) for n in shapes)
    return Model(
        name=prepared.name, reference=prepared.reference, ir=ir, inputs=inputs,
        outputs=_output_specs(model, ir), applied=prepared.applied,
    )


def import_model(source: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Model:
    """Read, fix shapes, simplify and convert a model to Relax.

    Args:
        source: path to an .onnx file, or "zoo:NAME".
        input_shapes: static shapes for inputs with dynamic dims, by input name.

    Returns:
        A Model with applied = ("imported", "simplified", ...fixes).

    Raises:
        ModelImportError, ConfigError: see the message; nothing is written.
    """
    return convert(prepare_onnx(source, input_shapes))


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse "NAME:1,3,224,224" (the name may itself contain colons).

    Raises:
        ConfigError: malformed text.
    """
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise ConfigError(f'--input-shape "{text}" is not NAME:D1,D2,... with positive dims')
    return name, shape

