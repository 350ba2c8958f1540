"""The runtimes bench/compare.py puts side by side, one small class each.

Every class takes the thread count (and for INT8 calibration images, or a precision for
the LiteRT and ncnn models that bench/arm_peers.py converts and calibrates) when built, then:
    prepare(onnx_path)        compile / quantize to files on disk; whatever is worth
                              reporting goes into `self.info` (compile seconds, checks)
    load()                    load what prepare wrote, ready to run
    median_ms(inputs, ...)    median latency of single inferences after warm-up
    outputs(inputs)           the first output, to compare with ONNX Runtime FP32
A runtime that cannot run here raises `Unavailable` from prepare, with the reason.

`measure` prepares each runtime in one child process and loads and times it in others
(`isolated`), in rounds that interleave the runtimes. In one shared process, the thread
pools, libraries and allocator state that earlier runtimes (or the compile step itself)
leave behind moved later timings by 10-70% on a 2-core VM, and the VM's own speed drifts
over minutes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgec import latency, pipeline, quant, runtime

ROUNDS = 5  # timing processes per runtime, interleaved with the other runtimes


def add_common_arguments(parser, runs: int) -> None:
    """--target, --models, --runs, --warmup and --json, as every bench script takes them."""
    from edgec import targets

    parser.add_argument("--target", default=targets.closest_to_host(),
                        help="edgec target (default: the widest shipped one this CPU runs)")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="timing processes per runtime, interleaved with the others")
    parser.add_argument("--json", type=Path)


def paired_ratio(numerator: dict, denominator: dict) -> float:
    """The median over rounds of numerator / denominator measured in the same round: the two
    ran seconds apart, so a VM-wide slowdown of that round divides out."""
    pairs = zip(numerator["info"]["ms_per_round"], denominator["info"]["ms_per_round"],
                strict=True)
    return statistics.median(a / b for a, b in pairs)


def parse_script_arguments(doc: str, models: tuple[str, ...], runs: int, extra=()):
    """The head every side-by-side script shares: its arguments (default models filled in;
    `extra`: (flag, argparse keywords) of its own) and the thread count all runtimes get.
    Returns (args, threads)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_common_arguments(parser, runs=runs)
    for flag, keywords in extra:
        parser.add_argument(flag, **keywords)
    args = parser.parse_args()
    args.models = args.models or list(models)
    return args, same_threads_for_all()


def same_threads_for_all() -> int:
    """TVM_NUM_THREADS, or all cores, set for TVM so every runtime gets the same count."""
    import os

    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    os.environ["TVM_NUM_THREADS"] = str(threads)
    return threads


class Unavailable(Exception):
    """This runtime has no such mode here; the message says why (printed as n/a)."""


def isolated(function: Callable, *args):
    """function(*args) in a fresh child process (spawned: no state of this one carried over).

    Raises:
        Unavailable: the child died (a crash in a runtime's native code).
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context,
                                                initializer=_die_with_parent) as pool:
        try:
            return pool.submit(function, *args).result()
        except concurrent.futures.process.BrokenProcessPool as err:
            raise Unavailable(f"its process died ({err})") from err


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the benchmark dies. Killed benchmarks had left
    their children running, one spinning a core for minutes under the next measurement."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def measure(contenders: dict, onnx_path: Path, inputs: dict, runs: int, warmup: int,
            rounds: int = ROUNDS) -> dict[str, dict]:
    """Prepare each runtime in a child process, then time them all in `rounds` rounds of
    fresh processes, one runtime after the other: {key: {"ms", "outputs", "info"}}, or
    {key: {"ms": None, "note": why}} for a runtime that cannot run or fails.

    `ms` is the median over the rounds of each process's median. This VM's speed drifts by
    up to ~1.5x over minutes, steady over seconds: interleaving the runtimes lets every one
    see the same drift, and info["ms_per_round"] shows how much there was.
    """
    prepared, results = {}, {}
    for key, done in prepare_each(contenders, onnx_path).items():
        if isinstance(done, dict):  # the note of a failure
            results[key] = done
        else:
            prepared[key] = done
    rounds_of: dict[str, list[dict]] = {key: [] for key in prepared}
    for _ in range(rounds):
        for key, contender in prepared.items():
            if key not in results:
                timed = _isolated_or_note(_time_here, contender, inputs, runs, warmup)
                if timed["ms"] is None:
                    results[key] = timed
                else:
                    rounds_of[key].append(timed)
    for key, timed in rounds_of.items():
        if key not in results:
            per_round = [t["ms"] for t in timed]
            results[key] = {**timed[0], "ms": statistics.median(per_round),
                            "info": {**timed[0]["info"], "ms_per_round": per_round},
                            "runtime": prepared[key]}  # for head_to_head
    return {key: results[key] for key in contenders}


def head_to_head(first, second, inputs: dict, runs: int, warmup: int,
                 rounds: int) -> dict:
    """Two prepared runtimes loaded in one child process, taking turns for `rounds` rounds
    (--runs inferences each, after `warmup`; the order reversed every other round, as
    bench/ab.py does): {"ratio": the median over rounds of first's median over second's,
    "rounds": the per-round ratios}, or {"ratio": None, "note": why} when the two cannot
    share a process. Seconds apart, both see the same VM speed: measure's rounds are
    processes a minute apart, and on a VM whose speed jumped ~2x between phases of a few
    minutes (and at times within seconds) their ratios moved by a third run to run."""
    done = _isolated_or_note(_head_to_head_here, first, second, inputs, runs, warmup, rounds)
    if done.get("ms", 0) is None:  # the child's note
        return {"ratio": None, "note": done["note"]}
    return done


# Seconds to wait before a runtime's turn in a shared process: after a batch of inferences
# TVM's worker thread spins (yielding) for ~60 ms before it sleeps, and a runtime timed at
# once ran beside it: LiteRT INT8 after edgec took 2x its time alone (SqueezeNet, this
# Xeon, 2 threads), ONNX Runtime's spinning threads slowed edgec after it in turn.
QUIET_SECONDS = 0.25


def quiet() -> None:
    """Let the last runtime's thread pool stop spinning before the next one is timed."""
    time.sleep(QUIET_SECONDS)


def _head_to_head_here(first, second, inputs: dict, runs: int, warmup: int,
                       rounds: int) -> dict:
    first.load()
    second.load()
    ratios = []
    for index in range(rounds):
        pair = (first, second) if index % 2 == 0 else (second, first)
        ms = []
        for contender in pair:
            quiet()
            ms.append(contender.median_ms(inputs, runs, warmup))
        ratios.append(ms[0] / ms[1] if index % 2 == 0 else ms[1] / ms[0])
    return {"ratio": statistics.median(ratios), "rounds": ratios}


def prepare_each(contenders: dict, onnx_path: Path) -> dict:
    """Each runtime prepared in a child process of its own: {key: the prepared runtime}, or
    {key: {"ms": None, "note": why}} for one that cannot run or fails."""
    return {key: _isolated_or_note(_prepare_here, contender, onnx_path)
            for key, contender in contenders.items()}


def _isolated_or_note(step: Callable, *args):
    try:
        return isolated(_guarded, step, *args)
    except Unavailable as err:
        return {"ms": None, "note": str(err)}


def _guarded(step: Callable, *args):
    try:
        return step(*args)
    except Unavailable as err:
        return {"ms": None, "note": str(err)}
    except Exception as err:  # a failing runtime must not end the suite: report it instead
        traceback.print_exc()
        return {"ms": None, "note": f"{type(err).__name__}: {str(err).strip()[:300]}"}


def _prepare_here(runtime, onnx_path: Path):
    runtime.prepare(onnx_path)
    return runtime  # pickled back: its settings, info and the paths of what it wrote


def _time_here(runtime, inputs: dict, runs: int, warmup: int) -> dict:
    runtime.load()
    ms = runtime.median_ms(inputs, runs, warmup)
    return {"ms": ms, "outputs": runtime.outputs(inputs), "info": runtime.info}


def median_ms(run: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall-clock milliseconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class Edgec:
    """edgec's compile_model with a given tuning database (None: no tuning logs at all,
    edgec's default schedules, as `edgec compile --untuned`).

    Latency comes from the VM's time_evaluator, as `edgec bench` measures it. Its threads
    are TVM_NUM_THREADS, set by the caller before TVM starts its thread pool.
    """

    def __init__(self, logs: Path | None, workdir: Path, *, target: str = "x86_64",
                 quantize: str | None = None, calibration: list[np.ndarray] | None = None,
                 input_shapes: dict | None = None, layout: str = "default"):
        self.logs, self.workdir, self.target, self.layout = logs, workdir, target, layout
        self.input_shapes = input_shapes or {}
        self.quantize, self.calibration = quantize, calibration
        self.model: runtime.CompiledModel | None = None
        self.library: Path | None = None
        self.info: dict = {}

    def _quantize_options(self, onnx_path: Path) -> dict:
        """CompileOptions fields for INT8: `quantization`, with `calib` (a .npy file, like
        `edgec compile --calib`) holding the calibration photos as one stack."""
        fields = {f.name for f in dataclasses.fields(pipeline.CompileOptions)}
        if "quantization" not in fields:
            raise Unavailable("edgec has no INT8 (CompileOptions has no `quantization`)")
        calib = None
        if self.calibration:
            photos = self.workdir / f"{onnx_path.stem}-calibration.npy"
            np.save(photos, np.stack(self.calibration))
            calib = str(photos)
        return {"quantization": quant.QuantizeOptions(self.quantize, calib=calib)}

    def prepare(self, onnx_path: Path) -> None:
        extra = self._quantize_options(onnx_path) if self.quantize else {}
        logs = self.logs.name if self.logs else "untuned"
        out = self.workdir / f"{onnx_path.stem}-{self.quantize or 'fp32'}-{logs}-{self.layout}.so"
        result = pipeline.compile_model(pipeline.CompileOptions(
            model=str(onnx_path), output=out, target=self.target, tuning_logs=self.logs,
            use_tuning_logs=self.logs is not None, layout=self.layout,
            input_shapes=self.input_shapes, check=True,
            time_fp32=False,  # the suite times every build itself, interleaved
            **extra))
        seconds = result.seconds
        self.info = {
            "compile_seconds": sum(v for k, v in seconds.items() if k != "check"),
            "check_seconds": seconds.get("check"),
            "sha256": result.info.sha256,  # equal for tuned and untuned: no record applied
            "tuned_functions": result.tuning.get("tuned", 0),
            "functions": result.tuning.get("functions", 0),
            "check": None if result.verify is None else {
                "ok": result.verify.ok,
                "max_abs_error": max(o.max_abs_error for o in result.verify.outputs),
                "min_cosine": min(o.cosine for o in result.verify.outputs),
                "note": result.verify.note,  # how a cross-compiled build was checked
            },
        }
        self.library = out

    def load(self) -> None:
        self.model = runtime.load(self.library)

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        report = latency.benchmark(self.model, inputs, runs=runs, warmup=warmup)
        return report.stats()["median"]

    def outputs(self, inputs: dict) -> np.ndarray:
        return next(iter(self.model.run(inputs).values()))



class LiteRT:
    """LiteRT (ai-edge-litert) with its default XNNPACK delegate, on a .tflite file."""

    def __init__(self, threads: int):
        self.threads = threads
        self.path: Path | None = None
        self.interpreter = None
        self.info: dict = {}

    def prepare(self, tflite_path: Path) -> None:
        self.path = tflite_path

    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        self.interpreter.allocate_tensors()

    def _feed(self, inputs: dict) -> dict:
        """{input tensor name: array}, as the model takes them."""
        return inputs

    def _set(self, feed: dict) -> None:
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], feed[detail["name"]])

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        feed = self._feed(inputs)

        def run():  # input copy included, as for the other runtimes
            self._set(feed)
            self.interpreter.invoke()
        return median_ms(run, runs, warmup)

    def outputs(self, inputs: dict) -> np.ndarray:
        self._set(self._feed(inputs))
        self.interpreter.invoke()
        first = self.interpreter.get_output_details()[0]["index"]
        return self.interpreter.get_tensor(first)


class OnnxRuntime:
    """ONNX Runtime's CPU provider, all graph optimizations; INT8 = static QDQ quantization."""

    def __init__(self, threads: int, calibration: list[np.ndarray] | None = None):
        self.threads, self.calibration = threads, calibration
        self.path: Path | None = None
        self.session = None
        self.info: dict = {}

    def _quantize(self, onnx_path: Path) -> Path:
        from onnxruntime import quantization as q

        pre = onnx_path.with_suffix(".pre.onnx")
        out = onnx_path.with_suffix(".ort-int8.onnx")
        # Fold BatchNorm into convs and infer shapes; the inputs are static, so ONNX's own
        # shape inference is enough (the symbolic one needs sympy).
        q.quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        reader = _Reader(self.session_input(onnx_path), self.calibration)
        q.quantize_static(str(pre), str(out), reader, quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8)
        return out

    @staticmethod
    def session_input(onnx_path: Path) -> str:
        import onnx

        return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name

    def prepare(self, onnx_path: Path) -> None:

        start = time.perf_counter()
        self.path = self._quantize(onnx_path) if self.calibration else onnx_path
        self.info = {"prepare_seconds": time.perf_counter() - start}

    def load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=["CPUExecutionProvider"])

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        return median_ms(lambda: self.session.run(None, inputs), runs, warmup)

    def outputs(self, inputs: dict) -> np.ndarray:
        return self.session.run(None, inputs)[0]



class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of input arrays."""

    def __init__(self, name: str, images: list[np.ndarray]):
        self._batches = iter([{name: image} for image in images])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


class OpenVino:
    """OpenVINO's CPU plugin, latency hint; INT8 = NNCF post-training quantization."""

    def __init__(self, threads: int, calibration: list[np.ndarray] | None = None):
        self.threads, self.calibration = threads, calibration
        self.path: Path | None = None
        self.request = None
        self.info: dict = {}

    def prepare(self, onnx_path: Path) -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise Unavailable("openvino is not installed (pip install -e .[bench])") from err
        start = time.perf_counter()
        self.path = onnx_path
        if self.calibration:
            self.path = onnx_path.with_suffix(".nncf-int8.xml")
            ov.save_model(self._quantize(ov.Core().read_model(str(onnx_path))), str(self.path))
        self.info = {"prepare_seconds": time.perf_counter() - start}

    def load(self) -> None:
        import openvino as ov

        core = ov.Core()
        # OpenVINO runs FP32 layers in bf16 on CPUs with AVX512_BF16 or AMX unless told
        # otherwise: without the hint the FP32 column would not be FP32.
        compiled = core.compile_model(core.read_model(str(self.path)), "CPU", {
            "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        self.info["precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.request = compiled.create_infer_request()

    def _quantize(self, model):
        try:
            import nncf
        except ImportError as err:
            raise Unavailable("nncf is not installed (pip install -e .[bench])") from err
        dataset = nncf.Dataset(self.calibration)
        return nncf.quantize(model, dataset, subset_size=len(self.calibration))

    def median_ms(self, inputs: dict, runs: int, warmup: int) -> float:
        return median_ms(lambda: self.request.infer(inputs), runs, warmup)

    def outputs(self, inputs: dict) -> np.ndarray:
        return np.asarray(self.request.infer(inputs)[0])

