"""The runtimes bench/compare.py runs on models converted from its ONNX files: LiteRT with
XNNPACK on onnx2tf's .tflite and ncnn on pnnx's .param/.bin, both made by bench/arm_peers.py
(the converters live in its own venv). Same protocol as bench/runtimes.py's classes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from runtimes import LiteRT, Unavailable, median_ms  # bench/ is on sys.path as a script


def peer_model(peer: str, onnx_path: Path, precision: str, install: bool) -> tuple[Path, float]:
    """bench/arm_peers.py's conversion of onnx_path for `peer` ("litert" or "ncnn"), cached
    in ~/.cache/edgec/arm-peers: the model file and the seconds this call took (near 0 when
    cached). install=False: Unavailable, instead of installing the converters' venv.
    """
    import arm_peers

    try:
        arm_peers.input_size(onnx_path)
    except ValueError as err:
        raise Unavailable(str(err)) from None
    if not install and not arm_peers.tools_ready():
        raise Unavailable("its converters' venv (onnx2tf + TensorFlow, pnnx; ~2.7 GB) is not "
                          "installed, and --quick does not install it: run compare.py without "
                          "--quick, or bench/arm_peers.py, once")
    start = time.perf_counter()
    try:
        if peer == "ncnn":  # the FP32 model first: INT8 calibrates on it
            _check_ncnn(arm_peers.prepare_model(peer, onnx_path.stem, "fp32", onnx=onnx_path))
        path = arm_peers.prepare_model(peer, onnx_path.stem, precision, onnx=onnx_path)
    except (RuntimeError, ValueError) as err:  # arm_peers._run: "CMD failed (CODE):\nTAIL"
        first, *tail = str(err).splitlines()
        code = re.search(r" failed \((-?\d+)\):?$", first)
        words = first.split()  # the program, or the script a python runs
        what = Path(words[1] if words[1:] and words[1].endswith(".py") else words[0]).name
        lines = [line.strip() for line in tail if line.strip()][-2:]
        raise Unavailable(f"{peer} conversion failed: "
                          + (f"{what} exited with {code.group(1)}" if code else first[:100])
                          + (": " + " / ".join(lines) if lines else ", no output")[:300]
                          ) from err
    return path, time.perf_counter() - start


def _check_ncnn(param: Path) -> None:
    """Unavailable for what pnnx writes and ncnn crashes on (a dead child says nothing)."""
    for line in param.read_text().splitlines()[2:]:
        kind, name, *rest = line.split()
        if kind == "Slice" and not any(p.startswith(("0=", "-23300=")) for p in rest):
            raise Unavailable(f"pnnx wrote Slice layer {name} (ONNX Split) without its slice "
                              "sizes: ncnn crashes on it")


class ConvertedLiteRT(LiteRT):
    """LiteRT with XNNPACK on the .tflite files onnx2tf makes of the ONNX model (bench/
    arm_peers.py): fp32 = float32, int8 = integer_quant (int8 weights and activations, float
    input and output). onnx2tf makes the model NHWC: the NCHW photo is transposed once,
    before timing, and 4-D outputs back to NCHW for the comparison with ONNX Runtime.
    """

    def __init__(self, threads: int, precision: str, *, install: bool = True):
        super().__init__(threads)
        self.precision, self.install = precision, install

    def prepare(self, onnx_path: Path) -> None:
        import onnx

        self.path, seconds = peer_model("litert", onnx_path, self.precision, self.install)
        self.info = {"convert_seconds": seconds, "model_file": str(self.path)}
        first = onnx.load(str(onnx_path), load_external_data=False).graph.output[0]
        self.first_output = first.name, [d.dim_value for d in first.type.tensor_type.shape.dim]

    def _feed(self, inputs: dict) -> dict:
        details = self.interpreter.get_input_details()
        if len(details) != len(inputs):
            raise Unavailable(f"the .tflite takes {len(details)} inputs, the ONNX {len(inputs)}")
        return {detail["name"]: np.ascontiguousarray(x.transpose(0, 2, 3, 1) if x.ndim == 4
                                                     else x, dtype=detail["dtype"])
                for detail, x in zip(details, inputs.values(), strict=True)}

    def outputs(self, inputs: dict) -> np.ndarray:
        """The output that is the ONNX model's first: onnx2tf keeps the ONNX output names
        but not always their order (the detector's boxes and scores)."""
        self._set(self._feed(inputs))
        self.interpreter.invoke()
        name, shape = self.first_output
        found = []
        for detail in self.interpreter.get_output_details():
            out = self.interpreter.get_tensor(detail["index"])
            out = out.transpose(0, 3, 1, 2) if out.ndim == 4 else out
            if list(out.shape) == shape:
                found.append((name not in detail["name"], out))
        if not found:
            raise Unavailable(f"no output of the .tflite has the shape of ONNX output {name} "
                              f"{shape}")
        return min(found, key=lambda pair: pair[0])[1]  # the name's match first


class Ncnn:
    """ncnn (the x86 `ncnn` wheel) on the .ncnn.param/.bin pnnx makes of the ONNX model
    (bench/arm_peers.py); int8 = the same model with ncnn's int8 scales (bench/ncnn_int8.py),
    which ncnn quantizes its weights by at load time. fp16/bf16 storage and arithmetic are
    off, as on the ARM board: FP32 means FP32 (an INT8 model still runs its int8 layers).
    """

    def __init__(self, threads: int, precision: str, *, install: bool = True):
        self.threads, self.precision, self.install = threads, precision, install
        self.param: Path | None = None
        self.net, self.blobs = None, ("in0", "out0")
        self.info: dict = {}

    def prepare(self, onnx_path: Path) -> None:
        self.param, seconds = peer_model("ncnn", onnx_path, self.precision, self.install)
        self.info = {"convert_seconds": seconds, "model_file": str(self.param)}

    def load(self) -> None:
        import ncnn

        self.net = ncnn.Net()
        self.net.opt.num_threads = self.threads
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                     "use_bf16_storage"):
            setattr(self.net.opt, flag, False)
        if self.net.load_param(str(self.param)) or self.net.load_model(
                str(self.param.with_suffix(".bin"))):
            raise Unavailable(f"ncnn could not load {self.param.name} and its .bin")
        if len(self.net.input_names()) != 1:
            raise Unavailable(f"the ncnn model has inputs {self.net.input_names()}, not one")
        self.blobs = self.net.input_names()[0], self.net.output_names()[0]

    def _infer(self, chw: np.ndarray) -> np.ndarray:
        import ncnn

        extractor = self.net.create_extractor()  # one per inference, as ncnn's benchmark
        extractor.input(self.blobs[0], ncnn.Mat(chw))
        status, out = extractor.extract(self.blobs[1])
        if status:
            raise RuntimeError(f"ncnn extract failed ({status})")
        return np.array(out)

    @staticmethod
    def _chw(inputs: dict) -> np.ndarray:
        (x,) = inputs.values()  # batch 1: ncnn's blobs have no batch dimension
        return np.ascontiguousarray(x[0], dtype=np.float32)

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        chw = self._chw(inputs)
        return median_ms(lambda: self._infer(chw), runs, warmup)

    def outputs(self, inputs: dict) -> np.ndarray:
        out = self._infer(self._chw(inputs))
        return out.reshape(1, *out.shape)
