"""One ARM peer runtime's inference on the emulated board: the script bench/arm_peers.py runs
under qemu-aarch64 (stdlib, numpy and the one peer only; nothing of edgec or the host).

    python3.11 arm_peer_guest.py PEER MODEL INPUT.npy --warmup W --inferences N [--out Y.npy]

PEER is ort (MODEL = .onnx), litert (MODEL = .tflite) or ncnn (MODEL = .ncnn.param beside
its .ncnn.bin). Everything runs on one thread: qemu 7.2's inline block counters are not
atomic, and the comparison is single-threaded by design. The N counted inferences sit between
two marker syscalls, lseek(-1, MARK, 0), that fail with EBADF here at no cost and that the
estimator's plugin watches; N=0 does all the set-up (load, warm-up) and no counted work.
"""

import argparse
import os

import numpy as np

MARK_START, MARK_STOP = 0x4544474543000001, 0x4544474543000002  # edgec's block counter


def _mark(value: int) -> None:
    try:
        os.lseek(-1, value, os.SEEK_SET)
    except OSError:
        pass  # EBADF, as intended


def _ort(model: str, x: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)[0]


def _litert(model: str, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model, num_threads=1)  # XNNPACK delegate by default
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # onnx2tf makes the input NHWC

    def run():
        interpreter.set_tensor(inp["index"], nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return run


def _ncnn(model: str, x: np.ndarray):
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 1
    # FP32 means FP32: ncnn would otherwise store activations in fp16 (bf16) wherever the CPU
    # has the instructions; an int8 model still runs its int8 layers (they dequantize to fp32).
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                 "use_bf16_storage"):
        setattr(net.opt, flag, False)
    if net.load_param(model) or net.load_model(model[: -len(".param")] + ".bin"):
        raise SystemExit(f"ncnn could not load {model} and its .bin")
    chw = np.ascontiguousarray(x[0])

    def run():
        extractor = net.create_extractor()  # one extractor per inference, as ncnn's benchmark
        extractor.input("in0", ncnn.Mat(chw))
        _, out = extractor.extract("out0")
        return np.array(out).reshape(1, -1)
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["ort", "litert", "ncnn"])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--inferences", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    x = np.load(args.input).astype(np.float32)
    run = {"ort": _ort, "litert": _litert, "ncnn": _ncnn}[args.peer](args.model, x)
    y = None
    for _ in range(args.warmup):  # first runs allocate, pack and page in: not steady state
        y = run()
    _mark(MARK_START)
    for _ in range(args.inferences):
        y = run()
    _mark(MARK_STOP)
    if args.out and y is not None:
        np.save(args.out, np.array(y, dtype=np.float32))


if __name__ == "__main__":
    main()
