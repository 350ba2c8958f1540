"""The only place edgec reaches into TVM's Relax TFLite frontend: its OperatorConverter,
subclassed for float16 weights, sparse weights and MediaPipe's transposed convolution, its
ExprTable (for asking which ops convert) and its tensor name and type helpers.

Float16 weights behind DEQUANTIZE (what the TFLite converter writes for "float16
quantization") become float32 constants, also behind DENSIFY, where TVM's converter fails
("a bytes-like object is required"); DENSIFY is done in numpy (TVM's walks every element in
Python: 1.4 s and 7.4 s on MediaPipe's two sparse models, 0.05-0.1 s here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Custom ops that convert: TVM's frontend maps the first; edgec converts MediaPipe's
# transposed convolution (LiteRT ships a kernel for it, so the reference runs it too).
_TRANSPOSE_CONV_BIAS = "CONVOLUTION_2D_TRANSPOSE_BIAS"
KNOWN_CUSTOM = {
    "TFLite_Detection_PostProcess": "DETECTION_POSTPROCESS",
    "Convolution2DTransposeBias": _TRANSPOSE_CONV_BIAS,
}


def _index_vector(table: Any, kind: int) -> np.ndarray:
    """The values of a sparsity index vector (a union of int32 / uint16 / uint8 vectors)."""
    from tflite.Int32Vector import Int32Vector
    from tflite.Uint8Vector import Uint8Vector
    from tflite.Uint16Vector import Uint16Vector

    vector = {1: Int32Vector, 2: Uint16Vector, 3: Uint8Vector}[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def densify(tensor: Any, values: np.ndarray) -> np.ndarray:
    """The dense array of a sparse TFLite constant (DENSIFY's output), in numpy.

    Follows the schema's SparsityParameters: one level per entry of traversal_order, each
    DENSE (every index) or SPARSE_CSR (segments and indices); levels past the tensor's rank
    index inside blocks of the dims that block_map names. TVM's own densify walks every
    element in Python and takes seconds per model.
    """
    sparsity = tensor.Sparsity()
    shape = [int(d) for d in tensor.ShapeAsNumpy()]
    rank = len(shape)
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    position = np.zeros(1, dtype=np.int64)  # where each partial path sits in its level
    coords: list[np.ndarray] = []
    for level in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == 0:  # DENSE
            size = int(meta.DenseSize())
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size), len(position)))
            position = (position[:, None] * size + np.arange(size)).ravel()
        else:  # SPARSE_CSR
            segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
            indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
            starts, counts = segments[position], segments[position + 1] - segments[position]
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            position = np.repeat(starts, counts) + offsets
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(indices[position])
    if len(position) != values.size:
        raise ValueError(f"sparse tensor {tensor.Name()!r}: {values.size} values for "
                         f"{len(position)} indices")
    index = [np.zeros(0)] * rank
    for level in range(rank):
        index[order[level]] = coords[level]
    for level in range(rank, len(order)):
        block = order[level] - rank
        dim = block_map[block]
        index[dim] = index[dim] * int(sparsity.DimMetadata(level).DenseSize()) + coords[level]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index)] = values
    return dense


def converter_class():
    """TVM's TFLite op converter with edgec's DENSIFY and DEQUANTIZE (float16 weights become
    float32 constants, also behind DENSIFY, where TVM's converter fails) and MediaPipe's
    transposed convolution."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter, get_pad_value

    class Converter(OperatorConverter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.convert_map[_TRANSPOSE_CONV_BIAS] = self.convert_transpose_conv_bias

        def get_op_code_str(self, op):
            custom = self.model.OperatorCodes(op.OpcodeIndex()).CustomCode()
            if custom == b"Convolution2DTransposeBias":
                return _TRANSPOSE_CONV_BIAS
            return super().get_op_code_str(op)

        def convert_transpose_conv_bias(self, op):
            """MediaPipe's Convolution2DTransposeBias: inputs (data NHWC, weight OHWI, bias);
            its custom options are a raw TfLiteTransposeConvParams (padding, strides)."""
            data, weight, bias = self.get_input_tensors(op)
            (output,) = self.get_output_tensors(op)
            options = op.CustomOptionsAsNumpy().tobytes()
            padding, stride_w, stride_h = (int(v) for v in np.frombuffer(options[:12], "<i4"))
            _, kernel_h, kernel_w, _ = (int(d) for d in weight.tensor.ShapeAsNumpy())
            _, out_h, out_w, _ = (int(d) for d in output.tensor.ShapeAsNumpy())
            if padding == 1:  # kTfLitePaddingSame, computed from the output size as TFLite does
                top, bottom = get_pad_value(out_h, kernel_h, stride_h)
                left, right = get_pad_value(out_w, kernel_w, stride_w)
            elif padding == 2:  # kTfLitePaddingValid
                top = bottom = left = right = 0
            else:
                raise tvm.error.OpNotImplemented(
                    f"Convolution2DTransposeBias with padding code {padding}")
            kernel = relax.op.permute_dims(self.get_tensor_expr(weight), axes=(3, 0, 1, 2))
            out = relax.op.nn.conv2d_transpose(
                self.get_tensor_expr(data), kernel, strides=(stride_h, stride_w),
                padding=(top, left, bottom, right), data_layout="NHWC", kernel_layout="IOHW",
                out_dtype="float32",
            )
            return relax.op.add(out, self.get_tensor_expr(bias))

        def convert_densify(self, op):
            (sparse,) = self.get_input_tensors(op)
            (output,) = self.get_output_tensors(op)
            values = self.get_tensor_value(sparse, is_sparse=True)
            self.set_prefetched_node(output.tensor_idx, densify(sparse.tensor, values))

        def convert_dequantize(self, op):
            from tflite.TensorType import TensorType

            (tensor,) = self.get_input_tensors(op)
            if tensor.tensor.Type() != TensorType.FLOAT16:
                return super().convert_dequantize(op)
            if self.has_expr(tensor.tensor_idx):  # a computed float16 tensor, not a weight
                return relax.op.astype(self.get_expr(tensor.tensor_idx), "float32")
            # The weight's bytes, or its dense form when DENSIFY produced it (the stock
            # converter reads the buffer, which DENSIFY's output does not have).
            value = self.get_tensor_value_or_prefetched(tensor)
            return self.exp_tab.new_const(
                np.asarray(value, dtype=np.float32), dtype="float32",
                source_name=tensor.tensor.Name(),
            )

    return Converter


def converter(model: Any) -> Any:
    """A converter for the main subgraph, to ask which ops it can convert."""
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import ExprTable

    return converter_class()(model, model.Subgraphs(0), ExprTable(), relax.BlockBuilder())


def from_tflite(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """TVM's from_tflite with edgec's converter. The frontend also lists every weight in a
    "params" attribute; edgec binds weights as constants (as the ONNX import does), so the
    duplicate copies are dropped."""
    from tvm.relax.frontend.tflite import from_tflite as tvm_from_tflite

    ir = tvm_from_tflite(model, shape_dict=shapes, op_converter=converter_class())
    ir["main"] = ir["main"].without_attr("params")
    return ir


def tensor_specs(model: Any, indices) -> list[tuple[str, tuple[int, ...], tuple[int, ...], str]]:
    """(name, shape, shape signature, dtype) of the main subgraph's tensors at `indices`."""
    from tvm.relax.frontend.tflite.tflite_frontend import _decode_type, get_tensor_name

    subgraph = model.Subgraphs(0)
    specs = []
    for index in indices:
        tensor = subgraph.Tensors(int(index))
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        signature = (tuple(int(d) for d in tensor.ShapeSignatureAsNumpy())
                     if tensor.ShapeSignatureLength() else shape)
        specs.append((get_tensor_name(subgraph, int(index)), shape, signature,
                      _decode_type(tensor.Type())))
    return specs


