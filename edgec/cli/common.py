"""What the edgec commands share: messages on stderr and parsing of repeated options."""

from __future__ import annotations

import click

from edgec.errors import EdgecError

DEFAULT_MODEL = "zoo:mobilenet_v2"
DEFAULT_TARGET = "x86_64"


LAYOUT_HELP = ("Data layout of the convs: default (the target's: NHWC for float models on "
               "the AVX-512 targets and for INT8 on x86, packed NCHWc elsewhere and for "
               "FP16; NHWC too for a float model whose channel counts the packed block does "
               "not fit, as ShuffleNetV2's), auto (build the packed and NHWC "
               "candidates, time them here or estimate them for the target's board, keep "
               "the fastest; the decision is "
               "stored beside your tuning logs), NCHWc (packed, block from the target's "
               "vector width), NHWC (at packed speed or faster for float models and INT8 on "
               "x86) or NCHW "
               "(up to 1.5x slower).")
INPUT_SHAPE_HELP = "Fix an input's shape, e.g. input:1,3,224,224 (repeatable)."


def say(message: str) -> None:
    click.echo(f"[edgec] {message}", err=True)


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from edgec.frontend import parse_input_shape

    return dict(parse_input_shape(v) for v in values)


def parse_input_files(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EdgecError(f'--input "{value}" is not NAME=file.npy')
        pairs[name] = path
    return pairs



_QUANTIZE_OPTIONS = (
    click.option("--quantize", type=click.Choice(["int8", "fp16", "auto"]),
                 help="INT8 (needs --calib) or FP16 weights and activations; auto compiles "
                      "FP32, FP16 and (with --calib) INT8, times them here or estimates "
                      "them for the target's board, and keeps the fastest that stays close "
                      "to FP32 (decision stored beside your tuning logs)."),
    click.option("--calib", metavar="PATH|samples|random",
                 help="Calibration data: a folder of images / .npy / .npz or one such file "
                      "(your own data: what a deployed model needs), 'samples' (12 stock "
                      "photos from scikit-image, to try INT8 offline) or 'random' (a smoke "
                      "test: accuracy then means nothing)."),
    click.option("--calib-method", default="minmax", show_default=True,
                 type=click.Choice(["minmax", "entropy", "percentile"]),
                 help="How ONNX Runtime's calibrator picks INT8 ranges."),
    click.option("--per-channel/--per-tensor", default=True, show_default=True,
                 help="INT8 weight scales per output channel or per tensor."),
    click.option("--calib-mean", default="0.485,0.456,0.406", show_default=True,
                 help="Per-channel mean of images scaled to [0, 1]."),
    click.option("--calib-std", default="0.229,0.224,0.225", show_default=True,
                 help="Per-channel standard deviation of images scaled to [0, 1]."),
    click.option("--calib-channels", default="RGB", show_default=True,
                 type=click.Choice(["RGB", "BGR"]), help="Channel order the model expects."),
    click.option("--calib-layout", default="auto", show_default=True,
                 type=click.Choice(["auto", "NCHW", "NHWC"]), help="How images fill the input."),
    click.option("--calib-limit", default=32, show_default=True, help="Use at most N samples."),
)


def quantize_options(command):
    """Add the --quantize and --calib* options that compile and tune share."""
    for option in reversed(_QUANTIZE_OPTIONS):
        command = option(command)
    return command


def quantization_from(kwargs: dict) -> object:
    """Pop the shared options from a command's kwargs into a validated QuantizeOptions."""
    from edgec.quant import CalibOptions, QuantizeOptions, parse_floats

    calib_options = CalibOptions(
        mean=parse_floats(kwargs.pop("calib_mean"), "--calib-mean"),
        std=parse_floats(kwargs.pop("calib_std"), "--calib-std"),
        channel_order=kwargs.pop("calib_channels"), layout=kwargs.pop("calib_layout"),
        limit=kwargs.pop("calib_limit"))
    return QuantizeOptions(kwargs.pop("quantize"), calib=kwargs.pop("calib"),
                           method=kwargs.pop("calib_method"),
                           per_channel=kwargs.pop("per_channel"), calib_options=calib_options)


class ProgressBar:
    """A live bar on stderr (stdout keeps only results): description, bar, the `counts`
    text, elapsed and remaining time, and a free `{task.fields[note]}` column.
    update(description, completed, total, note="") moves it."""

    def __init__(self, description: str, counts: str, note: bool = False):
        self._columns = (description, counts, note)

    def __enter__(self) -> ProgressBar:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        description, counts, note = self._columns
        columns = [TextColumn(description), BarColumn(), TextColumn(counts),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        if note:
            columns.append(TextColumn("{task.fields[note]}"))
        self._progress = Progress(*columns, console=Console(stderr=True))
        self._progress.__enter__()
        self._task = self._progress.add_task("", total=None, note="")
        return self

    def update(self, description: str, completed: int, total: int | None,
               note: str = "") -> None:
        self._progress.update(self._task, description=description, completed=completed,
                              total=total, note=note)

    def __exit__(self, *exc) -> bool | None:
        return self._progress.__exit__(*exc)
