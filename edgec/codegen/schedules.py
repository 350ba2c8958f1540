"""Default CPU schedules for tasks the tuning logs do not cover.

Untuned TVM code is naive (one thread, no vectors: ~50x slower than ONNX Runtime), so every
function gets a rule-based schedule here. Packed convolutions get a register-blocked
micro-kernel: a row of `reg_n` output pixels times one or two SIMD registers of output
channels (see edgec.cpu.CpuCaps.accumulator_lanes) stays in registers across the whole reduction,
the block lanes are vectorized and the rows unrolled, and the bias/activation epilogue runs
on the tile while it is still in registers.
Everything else is parallelized over its outer loops and vectorized on its innermost loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

from edgec.codegen import reduction_blocks
from edgec.codegen.conv_epilogue import schedule_epilogue
from edgec.codegen.conv_prologue import schedule_producer
from edgec.codegen.conv_tasks import parallel_tasks, rows_first_knob, weight_bytes
from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    extent,
    kernel_failed,
    root_blocks,
    row_length,
)
from edgec.codegen.row_tails import (
    MAX_ROW,
    WIDE_PANEL_BYTES,
    balanced_length,
    int8_longest_row,
    nchw_longest_row,
    paired_tile,
    schedule_row_parts,
    wide_tile,
)
from edgec.tvm_compat.llvm_target import is_aarch64, vector_bytes, vector_registers

_CONV_BLOCKS = (
    "conv2d_nchwc", "depthwise_conv2d_nchwc", "group_conv2d_nchwc", "conv2d_nchw_packed_out",
    "conv2d_nchwc_int8", "conv2d_nhwc_packed", "depthwise_conv2d_nhwc_packed",
)
# Depthwise convs read their input through the border test instead of a padded copy.
_DEPTHWISE_BLOCKS = ("depthwise_conv2d_nchwc", "depthwise_conv2d_nhwc_packed")


def default_schedule(generic: list[str] | None = None):
    """A module pass that schedules every PrimFunc not yet marked as scheduled.

    Args:
        generic: if given, the names of functions that no edgec kernel rule covered (they get
            the generic parallel/vectorize schedule) are appended to it, for the report.
    """

    @tvm.transform.module_pass(opt_level=0, name="EdgecDefaultSchedule")
    def apply(mod, _ctx):
        from edgec.codegen import amx_schedule

        target = tvm.target.Target.current(allow_none=False)
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            rule, sch = _first_rule(func, target)
            if sch is None:
                continue
            if generic is not None and isinstance(rule, ParallelVectorize) and not (
                    _block_names(func) & _KERNELS_ON_THE_GENERIC_RULE):
                generic.append(gvar.name_hint)
            scheduled = sch.mod["main"]
            if amx_schedule.uses_amx(sch):
                scheduled = amx_schedule.with_tile_state(sch)
            updated[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return apply


# edgec kernels whose layout the generic rule's contiguous-lanes path schedules as designed
# (edgec.codegen.kernels.dense_packed: a classifier head reading a packed weight).
_KERNELS_ON_THE_GENERIC_RULE = {"dense_packed"}


def _block_names(func: tirx.PrimFunc) -> set[str]:
    sch = s_tir.Schedule(func)
    return {sch.get(block).name_hint for block in root_blocks(sch)}


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(
        func.attrs["tirx.is_scheduled"])


def _first_rule(func: tirx.PrimFunc, target) -> tuple[object, object]:
    from edgec.codegen.channel_shuffle import ChannelShuffle
    from edgec.codegen.concat import Concatenate
    from edgec.codegen.im2col import Im2col
    from edgec.codegen.nchw_pixels import PixelConv
    from edgec.codegen.plain_schedules import PlainDepthwiseConv, PlaneConv
    from edgec.codegen.row_pools import RowPool
    from edgec.codegen.softmax import Softmax
    from edgec.codegen.winograd_schedule import WinogradConv

    for rule in (WinogradConv(), PackedConv(), PixelConv(), PlaneConv(), PlainDepthwiseConv(),
                 ChannelShuffle(), Concatenate(), Im2col(), Softmax(), RowPool(),
                 ParallelVectorize()):
        sch = rule.apply(func, target, False)
        if sch is not None:
            return rule, sch
    return None, None


def schedule_rule(func: tirx.PrimFunc, target) -> object | None:
    """The rule whose schedule schedule_function gives (None: no rule fits)."""
    return _first_rule(func, target)[0]


def schedule_function(func: tirx.PrimFunc, target) -> s_tir.Schedule | None:
    """edgec's default schedule of one PrimFunc, as a traced Schedule (None: no rule fits)."""
    return _first_rule(func, target)[1]


def _dot_kind(sch: s_tir.Schedule, conv) -> str:
    """The edgec.codegen.intrinsics kind an INT8 conv block was computed for."""
    return str(sch.get(conv).annotations.get("edgec_dot", "avx2"))


@dataclass(frozen=True)
class ConvKnobs:
    """What edgec's kernel search (edgec.codegen.schedule_space) varies in PackedConv's
    micro-kernel; the defaults are the rule-based schedule.

    Attributes:
        longest_row: output pixels per register tile, at most (None: 8, INT8 dots with 32
            registers 14); the tile takes the largest divisor of the width up to it, or
            (float) tiles of a balanced length and a tail where that divisor is poor
            (edgec.codegen.row_tails).
        channel_tiles: output-channel vectors per register tile (1 or 2): each input value
            loaded feeds that many FMAs; ignored where it does not divide the chunks. None:
            the default rule, 1 except dense float convs (packed or NHWC) with 16
            registers (2 vectors over row_tails.paired_tile's tiles) and, with AVX-512,
            two 2-register blocks over row_tails.wide_tile's (_two_block_tile).
        taps_outside_channels: dense FP32 reduction order (kh, kw, icc, icb) instead of
            (icc, kh, kw, icb).
        rows_first: parallel tasks ordered (row, chunk) instead of (chunk, row); None: the
            default rule (row-major for NHWC tiles with weights that fit in 512 KB).
    """

    longest_row: int | None = None
    channel_tiles: int | None = None
    taps_outside_channels: bool = False
    rows_first: bool | None = None


class PackedConv:
    """Register-blocked schedule for edgec.codegen.kernels' NCHW{b}c convolutions and their
    epilogue."""

    def __init__(self, knobs: ConvKnobs | None = None):
        self.knobs = knobs or ConvKnobs()

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        conv_names = [n for n in names if n in _CONV_BLOCKS]
        if len(conv_names) != 1:
            return None
        index = names.index(conv_names[0])
        try:
            self._schedule(sch, blocks, index, target)
        except Exception as err:  # a kernel of edgec's own: failing here is a bug
            raise kernel_failed(conv_names[0], err) from err
        return sch

    def _schedule(self, sch: s_tir.Schedule, blocks: list, index: int, target) -> None:
        conv = blocks[index]
        epilogue = blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        depthwise = sch.get(conv).name_hint in _DEPTHWISE_BLOCKS
        for block in blocks[:index]:
            schedule_producer(sch, block, inline_padding=depthwise)
        knobs = self.knobs
        loops = sch.get_loops(conv)
        kind = _dot_kind(sch, conv)
        if kind == "amx":
            from edgec.codegen.amx_schedule import schedule_amx

            schedule_amx(sch, conv, epilogue, loops, knobs.rows_first)
            return
        if knobs == ConvKnobs() and reduction_blocks.applies(sch, conv, loops, target):
            reduction_blocks.schedule(sch, conv, epilogue, loops)  # AVX2's deep 1x1 convs
            return
        batch, chunk, row, col, lane, *reduction = loops
        rows_first = rows_first_knob(sch, conv, row, target, knobs.rows_first)
        width = extent(sch, col) or 1
        longest = MAX_ROW
        if len(reduction) == 5:
            longest = int8_longest_row(kind, extent(sch, lane) or 1)
        if sch.get(conv).name_hint == "conv2d_nchw_packed_out" and len(reduction) == 3:
            # float (ic, kh, kw), NCHW input: the plain layout's tile, and the packed
            # layout's stems
            vectors = -(-(extent(sch, lane) or 1) * 4 // vector_bytes(target))
            channels, _, kernel_width = (extent(sch, loop) or 1 for loop in reduction)
            longest = nchw_longest_row(vectors, vector_registers(target), channels,
                                       kernel_width, is_aarch64(target))
        longest = knobs.longest_row or longest
        channel_tiles = knobs.channel_tiles or 1
        dense_order = [2, 3, 0, 1] if knobs.taps_outside_channels else [0, 2, 3, 1]
        order = dense_order if len(reduction) == 4 else list(range(len(reduction)))
        overlapping = "edgec_overlapping_tiles" in sch.get(conv).annotations
        dense = len(reduction) == 4 or sch.get(conv).name_hint == "conv2d_nhwc_packed"
        if knobs == ConvKnobs() and dense and not overlapping and (
                extent(sch, chunk) or 1) % 2 == 0:
            paired = _two_block_tile(sch, conv, chunk, col, lane, width, target)
            if paired and paired[1]:  # rows of 14, 7, 13: parts of `length` and a tail
                chunk, tile = sch.split(chunk, [None, 2])
                sch.reorder(row, col, tile)
                task = parallel_tasks(sch, conv, batch, chunk, row, rows_first)
                schedule_row_parts(sch, conv, epilogue, task, col, order, paired[1],
                                   channel_tiles=True)
                return
            if paired:
                longest, channel_tiles = paired[0], 2
        if len(reduction) < 5 and channel_tiles == 1 and not overlapping and (
                length := balanced_length(sch, conv, col, longest)):  # SqueezeNet's 13-pixel rows
            task = parallel_tasks(sch, conv, batch, chunk, row, rows_first)
            schedule_row_parts(sch, conv, epilogue, task, col, order, length)
            return
        col_outer, col_inner = sch.split(col, [None, row_length(width, longest)])
        if len(reduction) == 5:  # int8: icc, kh, kw, ic4, ici
            self._schedule_int8(sch, conv, epilogue, (batch, chunk, row, col_outer, col_inner),
                                lane, reduction, knobs.rows_first)
            return
        tiles = []  # the output-channel vectors of one register tile, beside its pixels
        if channel_tiles > 1 and (extent(sch, chunk) or 1) % channel_tiles == 0:
            chunk, tile = sch.split(chunk, [None, channel_tiles])
            sch.reorder(chunk, row, col_outer, tile)
            tiles = [tile]
        if len(reduction) == 4:  # dense: icc, icb, kh, kw; the lane reduction innermost
            sch.reorder(col_outer, *(reduction[i] for i in dense_order), *tiles, col_inner, lane)
        else:  # depthwise (kh, kw), grouped (ic, kh, kw) or NHWC (kh, kw, ic)
            sch.reorder(col_outer, *reduction, *tiles, col_inner, lane)
        parallel_tasks(sch, conv, batch, chunk, row, rows_first)
        schedule_epilogue(sch, conv, epilogue, col_outer)
        for tile in tiles:
            sch.unroll(tile)
        sch.unroll(col_inner)
        sch.vectorize(lane)
        # Zeroing the accumulators goes before the reduction, on the same register tile.
        init = sch.decompose_reduction(conv, sch.get_loops(conv)[2])
        sch.vectorize(sch.get_loops(init)[-1])

    @staticmethod
    def _schedule_int8(sch: s_tir.Schedule, conv, epilogue: list, outer: tuple, lane,
                       reduction: list, rows_first: bool | None) -> None:
        """The same register tile, lanes x 4 input channels per dot intrinsic (the kind the
        kernel recorded, for the block it was computed with); NHWC tiles row-major as the
        float ones (ConvKnobs.rows_first)."""
        from edgec.codegen import intrinsics

        batch, chunk, row, col_outer, col_inner = outer
        icc, kh, kw, ic4, ici = reduction
        kind = _dot_kind(sch, conv)
        width = intrinsics.lanes(kind, extent(sch, lane))
        lane_outer, lane_inner = sch.split(lane, [None, width])
        # VNNI: the kernel's taps outside its channel blocks. Inside them, LLVM unrolled a
        # block's taps and 4-channel steps together and kept each input pixel's broadcast
        # live for every tap that reads it (9 pixels x 4 steps for a 7-pixel row under a
        # 3x3 kernel), spilling 48 of them per 168 dots. ResNet-50's 256 -> 256 3x3 conv at
        # 14x14 0.317 -> 0.218 ms (ONNX Runtime's 0.226), 64 at 56x56 0.235 -> 0.211, 512 at
        # 7x7 0.339 -> 0.286 (Ice Lake Xeon, 2 threads). sdot keeps the taps inside: the
        # rpi5 estimate of ResNet-18 INT8 went 53.2 -> 57.2 ms with them outside (its
        # 64-channel 56x56 convs 2.9 -> 4.1 ms), one 256-channel conv alone 3.07 -> 2.45.
        taps_outside_channels = kind == "vnni" and (extent(sch, kh) or 1) * (
            extent(sch, kw) or 1) > 1
        reduced = (kh, kw, icc, ic4) if taps_outside_channels else (icc, kh, kw, ic4)
        sch.reorder(col_outer, *reduced, col_inner, lane_outer, lane_inner, ici)
        parallel_tasks(sch, conv, batch, chunk, row, rows_first)
        schedule_epilogue(sch, conv, epilogue, col_outer, unroll_tile=False)
        init = sch.decompose_reduction(conv, reduced[0])
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(lane_inner, intrinsics.dot(kind, width))
        sch.unroll(col_inner)


def _two_block_tile(sch: s_tir.Schedule, conv, chunk, col, lane, width: int,
                    target) -> tuple[int, int | None] | None:
    """(longest, balanced length or None) of a dense float tile of two channel blocks:
    AVX2's paired tile (row_tails.paired_tile), or with AVX-512's 32 registers and blocks
    two registers wide, row_tails.wide_tile where the two blocks' weights fit
    WIDE_PANEL_BYTES; None: one block."""
    if vector_registers(target) < 32:
        return paired_tile(sch, conv, col, width)
    if is_aarch64(target) or (extent(sch, lane) or 1) * 4 < 2 * vector_bytes(target):
        return None  # NEON: MobileNetV1 by the rpi5 estimate 39.10 -> 40.42 ms
    panel = 2 * weight_bytes(sch, conv) // (extent(sch, chunk) or 1)
    return wide_tile(sch, conv, col, width) if panel <= WIDE_PANEL_BYTES else None
