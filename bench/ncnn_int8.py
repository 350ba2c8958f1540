"""ncnn INT8 models from FP32 ones, in Python: what ncnn's ncnn2table + ncnn2int8 tools do,
which no pip or Debian package ships. Runs with the x86 `ncnn` wheel (bench/arm_peers.py
calls it in its tools venv):

    python ncnn_int8.py MODEL.ncnn.param CALIB.npy OUT.ncnn.param

ncnn quantizes FP32 weights itself at load time when a layer has `8=` (int8_scale_term) and
its scales follow the bias in the .bin (Convolution/InnerProduct::load_model), so the INT8
model is the FP32 one plus, per Convolution / ConvolutionDepthWise / InnerProduct: per-output
(per-group for depthwise) weight scales 127/absmax, and one input scale 127/absmax of that
layer's input over the calibration images (ncnn2table's default is KL; absmax is the simple,
outlier-sensitive choice: fine for these ReLU/ReLU6/HardSwish nets, say so if it is not).
"""

import struct
import sys

import numpy as np

QUANTIZED = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}  # ncnn2int8's
WEIGHTLESS = {"Input", "Split", "Pooling", "ReLU", "Clip", "HardSwish", "HardSigmoid",
              "Sigmoid", "BinaryOp", "Flatten", "Reshape", "Softmax", "Concat", "Noop",
              "Slice", "ShuffleChannel", "Reduction",  # ShuffleNetV2: split, shuffle, mean
              "Interp", "Permute"}  # U-Net's Resize, the detector's head transposes
# Layers with FP32 weights that ncnn has no int8 kernel for (ncnn2int8 leaves them too):
# their weights are copied as they are. U-Net's ConvTranspose.
KEPT_FP32 = {"Deconvolution", "DeconvolutionDepthWise"}


def _parse(param_path: str):
    lines = open(param_path).read().splitlines()
    layers = []
    for line in lines[2:]:
        parts = line.split()
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        bottoms = parts[4:4 + n_in]
        params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out:])
        layers.append((line, kind, name, bottoms, params))
    return lines[:2], layers


def _input_absmax(param_path: str, bottoms: set[str], calib: np.ndarray) -> dict[str, float]:
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.lightmode = False  # keep every blob, so each image is one forward pass
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                 "use_bf16_storage"):
        setattr(net.opt, flag, False)
    net.load_param(param_path)
    net.load_model(param_path[: -len(".param")] + ".bin")
    absmax = dict.fromkeys(bottoms, 0.0)
    for image in calib:
        extractor = net.create_extractor()
        extractor.input("in0", ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)))
        for blob in bottoms:
            status, mat = extractor.extract(blob)
            if status != 0:
                raise RuntimeError(f"ncnn could not compute blob {blob} ({status})")
            absmax[blob] = max(absmax[blob], float(np.abs(np.array(mat)).max()))
    return absmax


def _copy_weights(weights: bytes, offset: int, kind: str, params: dict, out: bytearray,
                  name: str) -> tuple[np.ndarray, int]:
    """Copy one layer's FP32 weights and bias from weights[offset:] to out; returns the
    weights and the offset of the next layer's."""
    (tag,) = struct.unpack_from("<I", weights, offset)
    if tag != 0:
        raise ValueError(f"layer {name}: weights are not plain fp32 (tag {tag:#x})")
    bias_key, size_key = ("1", "2") if kind == "InnerProduct" else ("5", "6")
    size, outputs = int(params[size_key]), int(params["0"])
    end = offset + 4 + 4 * size + (4 * outputs if int(params.get(bias_key, 0)) else 0)
    out += weights[offset:end]
    return np.frombuffer(weights, np.float32, size, offset + 4), end


def quantize(param_path: str, calib_path: str, out_param: str) -> None:
    header, layers = _parse(param_path)
    calib = np.load(calib_path)  # N x C x H x W, already normalized like the model's input
    bottoms = {layer[3][0] for layer in layers if layer[1] in QUANTIZED}
    absmax = _input_absmax(param_path, bottoms, calib)
    weights = open(param_path[: -len(".param")] + ".bin", "rb").read()
    offset, out_bin, out_lines = 0, bytearray(), list(header)
    for line, kind, name, bottoms_, params in layers:
        if kind in KEPT_FP32:
            offset = _copy_weights(weights, offset, kind, params, out_bin, name)[1]
            out_lines.append(line)
            continue
        if kind not in QUANTIZED:
            if kind not in WEIGHTLESS:
                raise ValueError(f"layer {name}: {kind} may carry weights; not handled")
            out_lines.append(line)
            continue
        if int(params.get("8", 0)) or int(params.get("19", 0)):  # already int8 / dynamic
            raise ValueError(f"layer {name}: already quantized or dynamic weights")
        w, offset = _copy_weights(weights, offset, kind, params, out_bin, name)
        outputs = int(params["0"])
        groups = int(params.get("7", 1)) if kind == "ConvolutionDepthWise" else outputs
        w_absmax = np.abs(w.reshape(groups, -1)).max(axis=1)
        w_scales = np.where(w_absmax > 0, 127.0 / np.maximum(w_absmax, 1e-30), 1.0)
        top = absmax[bottoms_[0]]
        out_bin += w_scales.astype("<f4").tobytes()
        out_bin += np.float32(127.0 / top if top > 0 else 1.0).astype("<f4").tobytes()
        out_lines.append(f"{line} 8={QUANTIZED[kind]}")
    if offset != len(weights):
        raise ValueError(f"{len(weights) - offset} bytes of weights left over")
    open(out_param, "w").write("\n".join(out_lines) + "\n")
    open(out_param[: -len(".param")] + ".bin", "wb").write(bytes(out_bin))


if __name__ == "__main__":
    quantize(*sys.argv[1:4])
