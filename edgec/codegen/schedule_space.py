"""edgec's own search space: the variants of its micro-kernel schedules for one task.

MetaSchedule's generic space (multi-level tiling of any loop nest) rarely beat edgec's
default micro-kernels (README "Tuning"): most of its candidates break the register tile.
This space keeps the kernel's design and varies what the rules guess: pixels per register
tile, output-channel vectors per tile, the dense reduction order and the parallel order
(edgec.codegen.schedules.ConvKnobs), the row lengths of the Winograd GEMM and of plain
NCHW depthwise tiles, and the pixel vectors of flat-plane NCHW tiles. Each variant is a
traced Schedule, measured and recorded like any tuning record (edgec.tune.kernel_space);
the default schedule is always one of them.
"""

from __future__ import annotations

import itertools

from tvm import s_tir, tirx

from edgec.codegen.generic_schedule import root_blocks
from edgec.codegen.plain_schedules import PlainDepthwiseConv, PlaneConv
from edgec.codegen.schedules import ConvKnobs, PackedConv, schedule_rule
from edgec.codegen.winograd_schedule import WinogradConv

_ROWS = (2, 4, 6, 8)  # pixels per register tile, at most
_INT8_ROWS = (4, 6, 8, 10, 12, 14)  # INT8 on dot instructions with 32 vector registers
_WINOGRAD_ROWS = (2, 4, 6, 8, 12)
_PLAIN_DEPTHWISE_ROWS = (4, 8, 16, 32)
_PLANE_VECTORS = (1, 2, 3, 4, 6)  # pixel vectors of a flat-plane NCHW tile


def variants(func: tirx.PrimFunc, target) -> list[s_tir.Schedule]:
    """Distinct schedules of `func` in edgec's kernel space, nearest to the default first
    (the default itself first); [] for a task no edgec kernel rule covers."""
    rule = schedule_rule(func, target)
    if isinstance(rule, PackedConv):
        rules = [PackedConv(k) for k in _conv_knobs(func)]
    elif isinstance(rule, WinogradConv):
        rules = [WinogradConv(r, t) for t in (1, 2)
                 for r in sorted(_WINOGRAD_ROWS, key=lambda r: abs(r - 8))]
    elif isinstance(rule, PlaneConv):  # a count that does not divide the plane is skipped
        rules = [PlaneConv(v) for v in _PLANE_VECTORS]
    elif isinstance(rule, PlainDepthwiseConv):
        rules = [PlainDepthwiseConv(r) for r in sorted(_PLAIN_DEPTHWISE_ROWS,
                                                       key=lambda r: abs(r - 16))]
    else:
        return []
    found, traces = [], set()
    for candidate in [rule, *rules]:
        sch = candidate.apply(func, target, False)
        trace = str(sch.trace) if sch is not None else None
        if trace is None or trace in traces:
            continue  # a knob that changes nothing for this shape (e.g. a row past the width)
        traces.add(trace)
        found.append(sch)
    return found


def _conv_knobs(func: tirx.PrimFunc) -> list[ConvKnobs]:
    """Every knob combination, ordered by how many knobs differ from the default."""
    sch = s_tir.Schedule(func)
    int8 = "conv2d_nchwc_int8" in {sch.get(block).name_hint for block in root_blocks(sch)}
    rows = _INT8_ROWS if int8 else _ROWS
    combos = itertools.product(rows, (1, 2), (False, True), (None, True, False))
    # The INT8 path (dot intrinsics) takes only the row length.
    knobs = [ConvKnobs(r, t, o, p) for r, t, o, p in combos
             if not (int8 and (t > 1 or o or p is not None))]

    def distance(k: ConvKnobs) -> tuple:
        return (int(k.longest_row != rows[-1]) + int(k.channel_tiles != 1)
                + int(k.taps_outside_channels) + int(k.rows_first is not None),
                abs(k.longest_row - rows[-1]))

    return sorted(knobs, key=distance)
