"""Telling TVM's failures from edgec's bugs, and the line of a TVM error worth showing."""

from __future__ import annotations

import os
import re
import tempfile
import traceback
from pathlib import Path

_EDGEC = Path(__file__).resolve().parent.parent  # edgec/
_OWN = _EDGEC / "tvm_compat"


def is_tvm_error(err: BaseException) -> bool:
    """True for an error TVM raised (its C++ code, or its Python passes), False for a bug in
    edgec's own Python code: TVM's FFI turns C++ errors into Python built-ins (RuntimeError,
    ValueError, ...) tagged with `__tvm_ffi_error__`, and an error raised in edgec's code
    (a legalize callback, a schedule rule) keeps edgec's frame innermost."""
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        innermost = Path(frames[-1].filename).resolve()
        if _EDGEC in innermost.parents and _OWN not in innermost.parents:
            return False
    return hasattr(err, "__tvm_ffi_error__") or isinstance(err, (RuntimeError, ValueError))


def message_line(err: BaseException) -> str:
    """The line of a TVM error message that says what broke: the C++ check's text, not the
    last line of an IR dump ("# Metadata omitted ...") that TVM appends to some errors."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Check failed", "InternalError", "ValueError", "TypeError")) or (
                "cannot" in line.lower() and not line.startswith("#")):
            return line.split(". ")[0].rstrip(".")  # the first sentence says it
    text = [line for line in lines if not line.startswith(("#", "@", "R.", "T.", "def ", "}"))]
    return (text or lines or [type(err).__name__])[0]


_CALL = re.compile(r"R\.(?:nn\.)?(\w+)\((.*)")


def failing_op(err: BaseException) -> str | None:
    """"conv2d NCHW→NCHW8c 3x3 s2" for the Relax call a TVM error names (its "Offending
    call", or the first R.op(...) in the message); None when it names none."""
    lines = [line.strip() for line in str(err).splitlines()]
    after = next((lines[i:i + 2] for i, line in enumerate(lines) if "Offending call" in line), [])
    offending = [line for line in after + lines if _CALL.search(line)]
    if not offending:
        return None
    match = _CALL.search(offending[0])
    if match is None:
        return None
    op, rest = match.group(1), match.group(2)
    parts = [op]
    data = re.search(r'data_layout="(\w+)"', rest)
    out = re.search(r'out_layout="(\w+)"', rest)
    if data:
        parts.append(f"{data.group(1)}→{out.group(1)}" if out and out.group(1) != data.group(1)
                     else data.group(1))
    strides = re.search(r"strides=\[(\d+), (\d+)\]", rest)
    if strides:
        parts.append(f"s{strides.group(1)}" if strides.group(1) == strides.group(2)
                     else f"s{strides.group(1)}x{strides.group(2)}")
    groups = re.search(r"groups=(\d+)", rest)
    if groups and groups.group(1) != "1":
        parts.append(f"groups {groups.group(1)}")
    return " ".join(parts)


def debug_enabled() -> bool:
    """EDGEC_DEBUG=1 (or `edgec --debug`): keep tracebacks and save failing IR."""
    return os.environ.get("EDGEC_DEBUG", "") not in ("", "0")


def save_failing_ir(ir, name: str) -> Path:
    """Write a module's TVMScript where a person can read it; returns the path."""
    folder = Path(tempfile.mkdtemp(prefix="edgec-debug-"))
    path = folder / f"{name}.py"
    path.write_text(ir.script(show_meta=False) if hasattr(ir, "script") else str(ir))
    return path


_OP_DUMP = re.compile(r'In ir\.Op\(.*?name="([\w.]+)".*?support_level=\d+\),?\s*')


def without_op_dump(text: str) -> str:
    """TVM's type-inference errors start with the repr of the whole op ("In ir.Op(span=None,
    ty=..., name="relax.add", ...)"); keep its name only."""
    return _OP_DUMP.sub(lambda m: f"{m.group(1)}: ", text)
