"""The ARM peers of bench/arm.py (ONNX Runtime, LiteRT/XNNPACK, ncnn) on the emulated board:
their aarch64 root, their model files, and the qemu-aarch64 command for one inference.

    root = prepare_root()                     # ~/.cache/edgec/peers-aarch64, once
    model = prepare_model("ncnn", "resnet18", "int8")   # ~/.cache/edgec/arm-peers, once
    argv, env = command("ncnn", "resnet18", "int8", inferences=1)
    argv = with_plugin(argv, ["-plugin", "counter.so,out=...", "-d", "plugin"])

`python bench/arm_peers.py` prepares everything and checks every emulated output against
x86 (the same model file in the same runtime, and ONNX Runtime FP32 on the zoo ONNX).

Why a fake CPU identity: under qemu-user the guest reads the *host's* /proc/cpuinfo (x86:
no "CPU architecture"/"CPU part" lines) but the host's real /sys cache files (an L2 that is
per-core). pytorch/cpuinfo's ARM Linux init (inside ONNX Runtime's wheel) then counts zero
L2 caches in its first pass (the L2 size it decodes for an unknown uarch of architecture 0
is 0, so it never looks at sysfs) but in its second pass trusts sysfs's per-core L2 and
writes l2[0] through the NULL it got for a zero count: SIGSEGV at address 0 while the
extension loads. qemu looks up every absolute path under its -L prefix first, so a prefix
holding proc/cpuinfo and sys/devices/system/cpu/cpuN/... of a real board fixes that, and
makes all three libraries see that board (ncnn tiles by its cache sizes, XNNPACK picks
kernels by uarch); `-cpu` makes qemu's HWCAPs (NEON, dotprod, fp16...) match it too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("EDGEC_CACHE", "~/.cache/edgec")).expanduser()
PEERS_ROOT = CACHE / "peers-aarch64"  # site-packages/ and root-<cpu>/ (see _board_identity)
WORK = CACHE / "arm-peers"  # tools-venv/ and the converted models
QEMU = "qemu-aarch64"  # Debian's dynamic build: the static one refuses -plugin
PLUGIN = "<plugin>"  # argv placeholder: with_plugin() puts the estimator's options there
GUEST = Path(__file__).with_name("arm_peer_guest.py")
PEERS, PRECISIONS = ("ort", "litert", "ncnn"), ("fp32", "int8")
MODELS = ("mobilenet_v2", "resnet18", "mobilenet_v3_small")
# Pinned so that counts stay comparable over time; onnxruntime follows the host's, so the
# x86 and aarch64 ORT are one release. ai-edge-litert 2.3.0 is the last with cp311 aarch64.
WHEELS = {"ai-edge-litert": "2.3.0", "ncnn": "1.0.20261020", "numpy": "2.4.6",
          "ml_dtypes": "0.7.0", "flatbuffers": "25.12.19", "packaging": "26.4",
          "typing_extensions": "4.16.0"}
_PLATFORMS = [f"--platform=manylinux_{v}_aarch64" for v in ("2_28", "2_27", "2_24", "2_17")]
# x86 converters, kept out of the project's venv: onnx2tf 1.29.24 is the last release for
# Python 3.11 and pins tensorflow 2.19.0, onnx 1.19.1, onnxruntime 1.23.0 (~2.6 GB). pnnx
# (ONNX -> ncnn) is one static binary, and the x86 ncnn wheel calibrates INT8 and checks.
TOOLS, TOOLS_NO_DEPS = ["onnx2tf==1.29.24"], ["pnnx==20261020", "ncnn==1.0.20261020"]
# qemu 7.2's CPU models with the /proc/cpuinfo and sysfs cache of a board that has them:
# (MIDR variant, part, revision, L1d KB, L1i KB, L2 KB, L2 shared by all cores, L3 KB).
CPUS = {"cortex-a53": (0x0, 0xd03, 4, 32, 32, 512, True, 0),  # Raspberry Pi 3
        "cortex-a72": (0x0, 0xd08, 3, 32, 48, 1024, True, 0),  # Raspberry Pi 4
        "cortex-a76": (0x4, 0xd0b, 1, 64, 64, 512, False, 2048),  # Raspberry Pi 5
        "neoverse-n1": (0x3, 0xd0c, 1, 64, 64, 1024, False, 0)}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _run(cmd: list, **kwargs) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} failed ({done.returncode}):\n{tail}")
    return done.stdout


def _board_root() -> Path:
    """edgec's emulated board root (Debian arm64 python3.11): the peers reuse it, unchanged."""
    try:
        from edgec.boards import emulator_root
    except ImportError:  # before the boards/ package existed
        from edgec import emulator_root
    return emulator_root.prepare() / "root"


def _board_identity(root: Path, cpu: str, board: Path) -> None:
    """root/: links to the board's lib, usr, etc plus /proc/cpuinfo and /sys files of `cpu`
    for as many cores as the host has (qemu shows the guest the host's core count)."""
    variant, part, revision, l1d, l1i, l2, l2_shared, l3 = CPUS[cpu]
    cores = os.cpu_count() or 1
    for entry in board.iterdir():
        (root / entry.name).symlink_to(entry)
    cpuinfo = "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant:#x}\n"
        f"CPU part\t: {part:#x}\nCPU revision\t: {revision}\n\n" for i in range(cores))
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    everyone = (1 << cores) - 1
    for i in range(cores):
        cpu_dir = root / "sys" / "devices" / "system" / "cpu" / f"cpu{i}"
        midr = 0x41 << 24 | variant << 20 | 0xF << 16 | part << 4 | revision
        (cpu_dir / "regs" / "identification").mkdir(parents=True)
        (cpu_dir / "regs" / "identification" / "midr_el1").write_text(f"{midr:#018x}\n")
        # index3 always exists here: level 0 hides the host's L3 when the board has none.
        caches = [(1, "Data", l1d, 1 << i), (1, "Instruction", l1i, 1 << i),
                  (2, "Unified", l2, everyone if l2_shared else 1 << i),
                  (3 if l3 else 0, "Unified", l3, everyone)]
        for index, (level, kind, size, shared) in enumerate(caches):
            folder = cpu_dir / "cache" / f"index{index}"
            folder.mkdir(parents=True)
            members = [str(c) for c in range(cores) if shared >> c & 1]
            for name, value in (("level", level), ("type", kind), ("size", f"{size}K"),
                                ("shared_cpu_map", f"{shared:x}"),
                                ("shared_cpu_list", ",".join(members))):
                (folder / name).write_text(f"{value}\n")


def prepare_root(cpu: str = "cortex-a72") -> Path:
    """Unpack the peers' aarch64 wheels and `cpu`'s identity once; returns PEERS_ROOT."""
    board = _board_root()
    wheels = {"onnxruntime": importlib.metadata.version("onnxruntime"), **WHEELS}
    marker, wanted = PEERS_ROOT / "prepared.json", {"wheels": wheels, "board": str(board)}
    if not marker.exists() or json.loads(marker.read_text()) != wanted:
        shutil.rmtree(PEERS_ROOT, ignore_errors=True)
        downloads = PEERS_ROOT / "downloads"
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              *_PLATFORMS, "--python-version=3.11", "--implementation=cp", "-d", downloads,
              *(f"{name}=={version}" for name, version in wheels.items())])
        for wheel in sorted(downloads.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:  # none has a .data folder to move
                archive.extractall(PEERS_ROOT / "site-packages")
        shutil.rmtree(downloads)
        marker.write_text(json.dumps(wanted))
    root = PEERS_ROOT / f"root-{cpu}"
    if not (root / "proc" / "cpuinfo").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        _board_identity(root, cpu, board)
    return PEERS_ROOT


def tools_ready() -> bool:
    """Whether tools_python() is made already (else calling it installs ~2.7 GB)."""
    return (WORK / "tools-venv" / "ready").exists()


def tools_python() -> Path:
    """The x86 converters' venv (made once): onnx2tf + TensorFlow, pnnx, x86 ncnn."""
    venv = WORK / "tools-venv"
    python = venv / "bin" / "python"
    if not tools_ready():
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", venv])
        _run([python, "-m", "pip", "install", "-q", *TOOLS])
        _run([python, "-m", "pip", "install", "-q", "--no-deps", *TOOLS_NO_DEPS])
        (venv / "ready").write_text("")
    return python


def _photos(size: int) -> np.ndarray:
    """scikit-image's bundled photos, size x size, ImageNet-normalized, NHWC float32."""
    from skimage import data, transform

    out = []
    for name in ("coffee", "astronaut", "chelsea", "rocket", "cat", "hubble_deep_field",
                 "immunohistochemistry", "retina", "colorwheel", "logo", "camera", "coins"):
        image = getattr(data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        image = transform.resize(image, (size, size), anti_aliasing=True)
        out.append(((image - MEAN) / STD).astype(np.float32))
    return np.stack(out)


def prepare_inputs(size: int = 224) -> tuple[Path, Path]:
    """input.npy (one photo, NCHW, the input every run uses) and calib.npy (the 11 other
    photos and their mirror images: the INT8 calibration set of all three peers), at
    size x size (inputs/ for 224, inputs-SIZE/ for the zoo's other sizes: U-Net, SSD)."""
    folder = WORK / ("inputs" if size == 224 else f"inputs-{size}")
    if not (folder / "calib.npy").exists():
        folder.mkdir(parents=True, exist_ok=True)
        photos = _photos(size).transpose(0, 3, 1, 2)
        np.save(folder / "input.npy", photos[:1])
        np.save(folder / "calib.npy", np.concatenate([photos[1:], photos[1:, :, :, ::-1]]))
        # onnx2tf downloads this file (its validation images) unless the cwd has it
        np.save(folder / "calibration_image_sample_data_20x128x128x3_float32.npy",
                np.concatenate([_photos(128)] * 2)[:20])
    return folder / "input.npy", folder / "calib.npy"


def input_size(onnx_path: Path) -> int:
    """H (= W) of the model's 1x3xHxW input: the size its photos are made at."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type
    shape = tuple(d.dim_value for d in dims.tensor_type.shape.dim)
    if len(shape) != 4 or shape[:2] != (1, 3) or shape[2] != shape[3] or not shape[2]:
        raise ValueError(f"{onnx_path.name} takes {'x'.join(map(str, shape))}: the peers "
                         "are converted for square 1x3xHxW images only")
    return shape[2]


def prepare_model(peer: str, model: str, precision: str, onnx: Path | None = None) -> Path:
    """The model file the guest loads for (peer, model, precision), converted once.

    onnx: the ONNX file to convert instead of zoo model `model` as zoo.save writes it
    (bench/compare.py passes its own, so that all its runtimes run the same weights); the
    files converted from an earlier, different `model`.onnx are removed and made anew.
    """
    onnx_path = WORK / "onnx" / f"{model}.onnx"
    if onnx is not None and (not onnx_path.exists()
                             or onnx_path.read_bytes() != Path(onnx).read_bytes()):
        _forget(model)
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx, onnx_path)
    if not onnx_path.exists():
        from edgec import zoo

        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        zoo.save(model, onnx_path)
    size = input_size(onnx_path)
    _, calib = prepare_inputs(size)
    if peer == "ort":
        out = onnx_path if precision == "fp32" else WORK / "ort" / f"{model}.int8.onnx"
        if not out.exists():
            _ort_int8(onnx_path, calib, out)
        return out
    if peer == "litert":
        folder = WORK / "litert" / model
        suffix = "float32" if precision == "fp32" else "integer_quant"  # float I/O, int8 inside
        out = folder / f"{model}_{suffix}.tflite"
        if not out.exists():  # one onnx2tf run writes both (2-3 minutes a model)
            folder.mkdir(parents=True, exist_ok=True)
            nhwc = folder / "calib_nhwc.npy"
            np.save(nhwc, np.load(calib).transpose(0, 2, 3, 1))
            shutil.copy(calib.with_name("calibration_image_sample_data_20x128x128x3_float32"
                                        ".npy"), folder)
            env = {**os.environ, "PATH": f"{tools_python().parent}:{os.environ['PATH']}"}
            # onnx2tf overwrites its input with the onnxsim'd model: give it a copy, so that
            # onnx_path stays the file the other peers convert and prepare_model compares.
            copy = shutil.copyfile(onnx_path, folder / onnx_path.name)
            _run([tools_python().parent / "onnx2tf", "-i", copy, "-o", folder, "-oiqt",
                  "-cind", "input", nhwc, "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"],
                 cwd=folder, env=env)
            copy.unlink()
        return out
    folder = WORK / "ncnn"
    fp32 = folder / f"{model}.ncnn.param"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pnnx = next(tools_python().parent.parent.glob("lib/python*/site-packages/pnnx/pnnx"))
        shutil.copy(onnx_path, folder)  # pnnx writes its side files beside its input
        # fp16=0: keep the weights FP32 in the .bin; ncnn's FP32 runs read them as they are.
        _run([pnnx, f"{model}.onnx", f"inputshape=[1,3,{size},{size}]", "fp16=0"], cwd=folder)
        (folder / f"{model}.onnx").unlink()
    _complete_slices(fp32)
    if precision == "fp32":
        return fp32
    out = folder / f"{model}_int8.ncnn.param"
    if not out.exists():
        _run([tools_python(), Path(__file__).with_name("ncnn_int8.py"), fp32, calib, out])
    return out


def _complete_slices(param: Path) -> None:
    """Give the Slice layers pnnx writes for an ONNX Split into equal parts without sizes
    (ShuffleNetV2's channel split) ncnn's "equal parts" sizes, -23300=N,-233,...: without
    them ncnn crashes in the layer. Idempotent; the outputs are checked against ONNX
    Runtime wherever the model runs."""
    lines = param.read_text().splitlines()
    changed = False
    for i, line in enumerate(lines[2:], start=2):
        kind, name, _inputs, outputs, *rest = line.split()
        if kind == "Slice" and not any(p.startswith(("0=", "-23300=")) for p in rest):
            lines[i] = line + " -23300=" + ",".join([outputs] + ["-233"] * int(outputs))
            changed = True
    if changed:
        param.write_text("\n".join(lines) + "\n")


def _forget(model: str) -> None:
    """Remove everything converted from `model`.onnx (its copy too)."""
    shutil.rmtree(WORK / "litert" / model, ignore_errors=True)
    for pattern in (f"onnx/{model}.onnx", f"ort/{model}.int8.onnx", f"ncnn/{model}.*",
                    f"ncnn/{model}_int8.*", f"ncnn/{model}_pnnx.py", f"ncnn/{model}_ncnn.py"):
        for path in WORK.glob(pattern):
            path.unlink()


def _ort_int8(onnx_path: Path, calib: Path, out: Path) -> None:
    """Static QDQ quantization, the settings of bench/runtimes.py's OnnxRuntime INT8."""
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.samples = iter({"input": x[None]} for x in np.load(calib))

        def get_next(self):
            return next(self.samples, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    pre = out.with_suffix(".pre.onnx")
    q.quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
    q.quantize_static(str(pre), str(out), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8)
    pre.unlink()


def command(peer: str, model: str, precision: str, *, inferences: int = 1, warmup: int = 1,
            cpu: str = "cortex-a72", out: Path | None = None) -> tuple[list[str], dict]:
    """argv and env that run `warmup` + `inferences` inferences on the emulated `cpu`, the
    counted ones between the plugin's markers (inferences=0: the same minus the work).
    argv holds PLUGIN where qemu options go: pass it through with_plugin()."""
    prepare_root(cpu)
    model_file = prepare_model(peer, model, precision)
    root = PEERS_ROOT / f"root-{cpu}"
    argv = [QEMU, "-cpu", cpu, PLUGIN, str(root / "usr" / "bin" / "python3.11"), str(GUEST),
            peer, str(model_file), str(prepare_inputs()[0]), "--warmup", str(warmup),
            "--inferences", str(inferences), *(["--out", str(out)] if out else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "QEMU_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(QEMU_LD_PREFIX=str(root), PYTHONPATH=str(PEERS_ROOT / "site-packages"),
               PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    return argv, env


def with_plugin(argv: list[str], options: list[str]) -> list[str]:
    """argv with PLUGIN replaced by qemu options (e.g. -plugin x.so,out=f -d plugin)."""
    i = argv.index(PLUGIN)
    return argv[:i] + list(options) + argv[i + 1:]


def _x86_output(peer: str, model_file: Path, out: Path) -> np.ndarray:
    """The same model file in the same runtime on x86 (ORT: this venv; others: tools venv)."""
    python = sys.executable if peer == "ort" else tools_python()
    _run([python, GUEST, peer, model_file, prepare_inputs()[0], "--out", out])
    return np.load(out).ravel()


def verify(peers=PEERS, models=MODELS, precisions=PRECISIONS, cpu="cortex-a72") -> list[dict]:
    """Run each peer once on the emulated board and compare its output with x86."""
    import onnxruntime as ort

    rows, folder = [], WORK / "check"
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        session = ort.InferenceSession(str(prepare_model("ort", model, "fp32")),
                                       providers=["CPUExecutionProvider"])
        reference = session.run(None, {"input": np.load(prepare_inputs()[0])})[0].ravel()
        for peer in peers:
            for precision in precisions:
                tag = f"{peer}-{model}-{precision}"
                argv, env = command(peer, model, precision, cpu=cpu, out=folder / f"{tag}.npy")
                _run(with_plugin(argv, []), env=env, timeout=1800)
                arm = np.load(folder / f"{tag}.npy").ravel()
                x86 = _x86_output(peer, prepare_model(peer, model, precision),
                                  folder / f"{tag}-x86.npy")
                cosine = float(arm @ reference / np.linalg.norm(arm) / np.linalg.norm(reference))
                rows.append({"peer": peer, "model": model, "precision": precision,
                             "max_abs_vs_same_on_x86": float(np.abs(arm - x86).max()),
                             "cosine_vs_ort_fp32": cosine,
                             "top1_as_ort_fp32": bool(arm.argmax() == reference.argmax())})
                print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS)
    parser.add_argument("--cpu", default="cortex-a72", choices=sorted(CPUS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = verify(args.peers, args.models, args.precisions, args.cpu)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
