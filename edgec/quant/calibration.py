"""Calibration data for quantization: image folders and .npy/.npz tensors made into inputs.

Each reader returns a list of samples ({input name: array with the input's exact shape}) and
raises a one-line QuantizeError that names the offending file and says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgec.errors import MissingDependencyError, QuantizeError
from edgec.model import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TENSOR_SUFFIXES = (".npy", ".npz")


# --calib samples: scikit-image's bundled photos (colour first, then grey), no download.
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                 "hubble_deep_field.jpg", "ihc.png", "color.png", "motorcycle_left.png",
                 "retina.jpg", "camera.png", "coins.png", "moon.png")


def sample_photos() -> list[Path]:
    """The stock photos of --calib samples, from the installed scikit-image.

    Raises:
        MissingDependencyError: scikit-image is not installed, or ships other files.
    """
    try:
        import skimage.data
    except ImportError as err:
        raise MissingDependencyError("--calib samples needs scikit-image: "
                                     "pip install scikit-image") from err
    folder = Path(skimage.data.__file__).parent
    photos = [folder / name for name in SAMPLE_PHOTOS]
    missing = [p.name for p in photos if not p.is_file()]
    if missing:
        raise MissingDependencyError(f"--calib samples: scikit-image in {folder} lacks "
                                     f"{', '.join(missing)}; give a folder of your own images")
    return photos


def list_files(source: Path) -> list[Path]:
    """The image and tensor files of a folder (sorted), or the file itself.

    Raises:
        QuantizeError: missing path, or a folder with no usable file.
    """
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise QuantizeError(f"calibration data {source} does not exist; give a folder of "
                            "images, a .npy/.npz file, or --calib random")
    files = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + TENSOR_SUFFIXES)
    if not files:
        raise QuantizeError(
            f"calibration folder {source} has no images ({', '.join(IMAGE_SUFFIXES)}) or "
            ".npy/.npz files; put a few dozen representative inputs there")
    return files


def image_layout(spec: TensorSpec, layout: str) -> str:
    """NCHW or NHWC for an image input: as given, or guessed from where the 1/3 channels are.

    Raises:
        QuantizeError: the input is not a 4-D image tensor with 1 or 3 channels.
    """
    shape = spec.shape
    if len(shape) == 4 and layout == "auto":
        layout = "NCHW" if shape[1] in (1, 3) else "NHWC" if shape[3] in (1, 3) else layout
    channels = {"NCHW": 1, "NHWC": 3}.get(layout)
    if len(shape) != 4 or channels is None or shape[channels] not in (1, 3):
        raise QuantizeError(
            f"input {spec.name} has shape {list(shape)}, not an image batch with 1 or 3 "
            "channels; calibrate with .npy/.npz tensors of that shape instead of images")
    return layout


def _open_image(path: Path, gray: bool) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise MissingDependencyError(
            "reading calibration images needs Pillow; install it with: pip install pillow"
        ) from err
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise QuantizeError(
            f"calibration image {path} cannot be read ({type(err).__name__}); "
            "remove it or replace it with a valid PNG/JPEG") from err


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def image_sample(path: Path, spec: TensorSpec, layout: str, mean: Sequence[float],
                 std: Sequence[float], bgr: bool) -> np.ndarray:
    """One image as the model sees it: resized to the input H x W, scaled to [0, 1],
    normalized by mean/std per channel, in RGB or BGR order, laid out as NCHW or NHWC."""
    layout = image_layout(spec, layout)
    batch, height, width, channels = (spec.shape[i] for i in (
        (0, 2, 3, 1) if layout == "NCHW" else (0, 1, 2, 3)))
    pixels = _open_image(path, gray=channels == 1)
    pixels = _resize(pixels, height, width).astype(np.float32) / 255.0
    pixels = pixels.reshape(height, width, channels)
    if bgr and channels == 3:
        pixels = pixels[..., ::-1]
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.broadcast_to(pixels, (batch, *pixels.shape)).astype(spec.dtype)


def _split(array: np.ndarray, spec: TensorSpec, path: Path) -> list[np.ndarray]:
    """An array of the input's shape, of its shape less the batch, or a stack of either."""
    shape = tuple(spec.shape)
    if array.shape == shape:
        return [array]
    if array.shape == shape[1:] and shape[0] == 1:
        return [array[None]]
    if array.ndim == len(shape) and array.shape[1:] == shape[1:] and shape[0] == 1:
        return [row[None] for row in array]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return list(array)
    raise QuantizeError(
        f"{path}: array of shape {list(array.shape)} does not fit input {spec.name} of shape "
        f"{list(shape)}; save arrays of that shape (or a stack of them along a new first axis)")


def tensor_samples(path: Path, specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Samples from a .npy (single-input models) or .npz (arrays named after the inputs).

    Raises:
        QuantizeError: unreadable file, missing input name or wrong shape.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = ({k: loaded[k] for k in loaded.files} if isinstance(loaded, np.lib.npyio.NpzFile)
                  else {"": loaded})
    except (OSError, ValueError, EOFError) as err:
        raise QuantizeError(f"{path} cannot be read as {path.suffix}: {err}; "
                            "save it with numpy.save / numpy.savez") from err
    if "" in arrays or (len(arrays) == 1 and len(specs) == 1):
        if len(specs) != 1:
            raise QuantizeError(f"{path} holds one array but the model has inputs "
                                f"{', '.join(s.name for s in specs)}; use an .npz with those names")
        arrays = {specs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise QuantizeError(f"{path} has no array named {', '.join(missing)} "
                            f"(it has {', '.join(arrays)})")
    columns = {s.name: _split(np.asarray(arrays[s.name]), s, path) for s in specs}
    counts = {len(c) for c in columns.values()}
    if len(counts) != 1:
        raise QuantizeError(f"{path}: the inputs have different numbers of samples")
    return [{s.name: columns[s.name][i].astype(s.dtype) for s in specs}
            for i in range(counts.pop())]


def random_samples(specs: Sequence[TensorSpec], count: int, seed: int = 0
                   ) -> list[dict[str, np.ndarray]]:
    """Seeded uniform(-1, 1) inputs: only for trying the flow, never for real accuracy."""
    rng = np.random.default_rng(seed)
    return [{s.name: rng.uniform(-1.0, 1.0, s.shape).astype(s.dtype) for s in specs}
            for _ in range(count)]
