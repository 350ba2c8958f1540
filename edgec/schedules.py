"""Default CPU schedules for tasks the tuning logs do not cover.

Untuned TVM code is naive (one thread, no vectors: ~50x slower than ONNX Runtime), so every
function gets a rule-based schedule here. Packed convolutions get a register-blocked
micro-kernel: a row of `reg_n` output pixels times one or two SIMD registers of output
channels (see edgec.legalize.accumulator_lanes) stays in registers across the whole reduction,
the block lanes are vectorized and the rows unrolled, and the bias/activation epilogue runs
on the tile while it is still in registers.
Everything else is parallelized over its outer loops and vectorized on its innermost loop.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.base import ScheduleRule

_CONV_BLOCKS = (
    "conv2d_nchwc", "depthwise_conv2d_nchwc", "group_conv2d_nchwc", "conv2d_nchw_packed_out",
    "conv2d_nchwc_int8",
)
_MAX_ROW = 8  # output pixels per micro-kernel row: reg_n vector accumulators
_MAX_LANE_TILE = 64  # lanes of a reduction kept in registers side by side
# INT8 rows where the dot instruction's ISA has 32 vector registers: 14 pixels x 2 registers
# of accumulators. More pixels per weight load took INT8 ResNet-18 from 2.52 to 2.22 ms and
# MobileNetV2 from 1.49 to 1.21 (VNNI); FP32 gained nothing measurable from longer rows.
_MAX_INT8_ROW = 14
_DOTS_WITH_32_REGISTERS = ("vnni", "sdot")


def default_schedule():
    """A module pass that schedules every PrimFunc not yet marked as scheduled."""
    return dlight.ApplyDefaultSchedule(WinogradConv(), PackedConv(), ParallelVectorize())


def schedule_function(func: tirx.PrimFunc, target) -> s_tir.Schedule | None:
    """edgec's default schedule of one PrimFunc, as a traced Schedule (None: no rule fits)."""
    for rule in (WinogradConv(), PackedConv(), ParallelVectorize()):
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch
    return None


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _row_length(width: int, longest: int = _MAX_ROW) -> int:
    """The largest divisor of the output width that is at most `longest`."""
    return max(d for d in range(1, min(width, longest) + 1) if width % d == 0)


def _dot_kind(sch: s_tir.Schedule, conv) -> str:
    """The edgec.intrinsics kind an INT8 conv block was computed for."""
    return str(sch.get(conv).annotations.get("edgec_dot", "avx2"))


def _same_shape(a, b) -> bool:
    return [int(d) for d in a.shape] == [int(d) for d in b.shape]


def _root_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


class PackedConv(ScheduleRule):
    """Register-blocked schedule for edgec.kernels' NCHW{b}c convolutions and their epilogue."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        blocks = _root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        conv_names = [n for n in names if n in _CONV_BLOCKS]
        if len(conv_names) != 1:
            return None
        index = names.index(conv_names[0])
        try:
            self._schedule(sch, blocks, index)
        except Exception:  # an unexpected loop nest: let the generic rule handle it
            return None
        return sch

    def _schedule(self, sch: s_tir.Schedule, blocks: list, index: int) -> None:
        conv = blocks[index]
        epilogue = blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        depthwise = sch.get(conv).name_hint == "depthwise_conv2d_nchwc"
        for block in blocks[:index]:
            self._schedule_producer(sch, block, inline_padding=depthwise)
        loops = sch.get_loops(conv)
        batch, chunk, row, col, lane, *reduction = loops
        width = _extent(sch, col) or 1
        longest = _MAX_ROW
        if len(reduction) == 5 and _dot_kind(sch, conv) in _DOTS_WITH_32_REGISTERS:
            longest = _MAX_INT8_ROW
        col_outer, col_inner = sch.split(col, [None, _row_length(width, longest)])
        if len(reduction) == 5:  # int8: icc, kh, kw, ic4, ici
            self._schedule_int8(sch, conv, epilogue, (batch, chunk, row, col_outer, col_inner),
                                lane, reduction)
            return
        if len(reduction) == 4:  # dense: icc, icb, kh, kw; the lane reduction innermost
            icc, icb, kh, kw = reduction
            sch.reorder(col_outer, icc, kh, kw, icb, col_inner, lane)
        else:  # depthwise (kh, kw) or grouped (ic, kh, kw)
            sch.reorder(col_outer, *reduction, col_inner, lane)
        sch.parallel(sch.fuse(batch, chunk, row))
        if epilogue:
            sch.reverse_compute_at(epilogue[-1], col_outer)
            out_lane = sch.get_loops(epilogue[-1])[-1]
            sch.vectorize(out_lane)
        sch.unroll(col_inner)
        sch.vectorize(lane)
        # Zeroing the accumulators goes before the reduction, on the same register tile.
        init = sch.decompose_reduction(conv, sch.get_loops(conv)[2])
        sch.vectorize(sch.get_loops(init)[-1])

    @staticmethod
    def _schedule_int8(sch: s_tir.Schedule, conv, epilogue: list, outer: tuple, lane,
                       reduction: list) -> None:
        """The same register tile, lanes x 4 input channels per dot intrinsic (the kind the
        kernel recorded, for the block it was computed with)."""
        from edgec import intrinsics

        batch, chunk, row, col_outer, col_inner = outer
        icc, kh, kw, ic4, ici = reduction
        kind = _dot_kind(sch, conv)
        width = intrinsics.lanes(kind, _extent(sch, lane))
        lane_outer, lane_inner = sch.split(lane, [None, width])
        sch.reorder(col_outer, icc, kh, kw, ic4, col_inner, lane_outer, lane_inner, ici)
        sch.parallel(sch.fuse(batch, chunk, row))
        if epilogue:
            sch.reverse_compute_at(epilogue[-1], col_outer)
            sch.vectorize(sch.get_loops(epilogue[-1])[-1])
        init = sch.decompose_reduction(conv, icc)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(lane_inner, intrinsics.dot(kind, width))
        sch.unroll(col_inner)

    @staticmethod
    def _schedule_producer(sch: s_tir.Schedule, block, inline_padding: bool) -> None:
        """Weight packing, no-op padding and same-shape elementwise prologues (an INT8
        residual's rescale) are inlined; real padding is filled in parallel, except for
        depthwise convs: they are memory-bound, and a padded copy of their input
        (MobileNetV2's largest tensors) cost more than the conv itself (96 channels at
        112x112, stride 2: 0.100 ms with the copy, 0.036 ms reading through the border
        test). 8-bit data converted for float sums is converted once, in parallel."""
        stmt = sch.get(block)
        same_shape = stmt.reads and _same_shape(stmt.writes[0].source, stmt.reads[0].source)
        convert_once = stmt.name_hint == "data_as_float" and not inline_padding
        inline = stmt.name_hint.endswith("kernel_pack") or same_shape or inline_padding
        if inline and not convert_once:
            sch.compute_inline(block)
            return
        loops = sch.get_loops(block)
        sch.parallel(sch.fuse(*loops[:3]))  # rows too: a stem's data is one channel block
        sch.vectorize(loops[-1])


class WinogradConv(ScheduleRule):
    """edgec.winograd.conv2d_nchwc_winograd: each stage parallel, its tile in registers.

    Input and output transforms run per tile with their 6x6 (or 4x6) loops unrolled, so the
    coefficient selects fold and the channel lanes are vectors; padding is read through
    (not copied); the GEMM is PackedConv's micro-kernel with tiles as the pixel row.
    """

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        names = [sch.get(b).name_hint for b in _root_blocks(sch)]
        if "conv2d_nchwc_winograd" not in names:
            return None
        try:
            self._schedule(sch)
        except Exception:  # an unexpected loop nest: let the generic rule handle it
            return None
        return sch

    @staticmethod
    def _schedule(sch: s_tir.Schedule) -> None:
        from edgec.winograd import WINOGRAD_TILE

        block = sch.get_sblock
        sch.compute_inline(block("data_pad"))
        eps, nu, icc, tile, lane = sch.get_loops(block("winograd_input"))
        sch.reorder(icc, tile, eps, nu, lane)
        sch.parallel(sch.fuse(icc, tile))
        for loop in (eps, nu):
            sch.unroll(loop)
        sch.vectorize(lane)
        sch.compute_at(block("winograd_input_rows"), sch.get_loops(block("winograd_input"))[0])
        *_, eps, col, lane = sch.get_loops(block("winograd_input_rows"))
        sch.unroll(eps)
        sch.unroll(col)
        sch.vectorize(lane)

        gemm = block("conv2d_nchwc_winograd")
        eps, nu, chunk, tile, lane, icc, icb = sch.get_loops(gemm)
        tile_outer, tile_inner = sch.split(tile, [None, _row_length(_extent(sch, tile) or 1)])
        sch.reorder(eps, nu, chunk, tile_outer, icc, icb, tile_inner, lane)
        sch.parallel(sch.fuse(eps, nu, chunk, tile_outer))
        sch.unroll(tile_inner)
        sch.vectorize(lane)
        init = sch.decompose_reduction(gemm, icc)
        sch.vectorize(sch.get_loops(init)[-1])

        output = block("winograd_output")
        batch, chunk, row, col, lane = sch.get_loops(output)
        row_outer, row_inner = sch.split(row, [None, WINOGRAD_TILE])
        col_outer, col_inner = sch.split(col, [None, WINOGRAD_TILE])
        sch.reorder(batch, chunk, row_outer, col_outer, row_inner, col_inner, lane)
        sch.parallel(sch.fuse(batch, chunk, row_outer))
        sch.unroll(row_inner)
        sch.unroll(col_inner)
        sch.vectorize(lane)
        sch.compute_at(block("winograd_output_rows"), col_outer)
        *_, i, col, lane = sch.get_loops(block("winograd_output_rows"))
        sch.unroll(i)
        sch.unroll(col)
        sch.vectorize(lane)

        # The crop and the bias/activation epilogue: one elementwise pass.
        blocks = _root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        tail = blocks[names.index("winograd_output") + 1:]
        for later in tail[:-1]:
            sch.compute_inline(later)
        loops = sch.get_loops(tail[-1])
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])


class ParallelVectorize(ScheduleRule):
    """Fallback: inline elementwise chains, then per block parallel outer loops and vectorize
    the innermost spatial loop."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        blocks = _root_blocks(sch)
        for block in blocks[:-1]:
            try:
                sch.compute_inline(block)
            except Exception:  # not inlinable (reduction, several consumers): schedule it alone
                continue
        for block in _root_blocks(sch):
            self._schedule_block(sch, block)
        return sch

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, block) -> None:
        stmt = sch.get(block)
        kinds = [iv.iter_type for iv in stmt.iter_vars]
        loops = sch.get_loops(block)
        if len(loops) != len(kinds) or not loops:
            return
        spatial = 0
        while spatial < len(kinds) and kinds[spatial] == tirx.IterVar.DataPar:
            spatial += 1
        if spatial == 0:
            return
        if spatial < len(kinds) and _contiguous_lanes(stmt, spatial):
            _vectorize_across_reduction(sch, block, loops, spatial)
            return
        inner = _extent(sch, loops[-1])
        if spatial == len(kinds) and len(loops) > 1 and inner:  # purely spatial: rows
            if inner <= _MAX_LANE_TILE:
                sch.vectorize(loops[-1])
            else:
                # Long rows in vectors of 16 (a partial last one is fine): an INT8 model's
                # input quantize-and-pad ran scalar on 1-element parallel tasks, 0.48 ms
                # for ResNet-18's input instead of 0.04.
                _, lane = sch.split(loops[-1], [None, 16])
                sch.vectorize(lane)
            loops = loops[:-1]
            spatial -= 1
        if spatial:
            sch.parallel(sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0])


def _contiguous_lanes(stmt, spatial: int) -> bool:
    """True when the reduction's last spatial axis is the innermost index of every buffer
    that uses it (the weight of a batch-1 matmul, the channel lanes of a packed pool)."""
    from tvm.tirx.analysis import undefined_vars

    lane_var = stmt.iter_vars[spatial - 1].var
    uses = False
    for region in stmt.reads:
        indices = [r.min for r in region.region]
        if any(lane_var.same_as(v) for i in indices[:-1] for v in undefined_vars(i)):
            return False
        if indices and indices[-1].same_as(lane_var):
            uses = True
        elif indices and any(lane_var.same_as(v) for v in undefined_vars(indices[-1])):
            return False
    return uses


def _vectorize_across_reduction(sch: s_tir.Schedule, block, loops: list, spatial: int) -> None:
    """Reduce into a vector of lanes: the lane loop goes inside the reduction, so each step
    reads one contiguous vector instead of striding through the weight row by row."""
    extent = _extent(sch, loops[spatial - 1]) or 1
    lanes = max(d for d in (16, 8, 4, 2, 1) if extent % d == 0)
    if lanes == 1:
        return
    outer, lane = sch.split(loops[spatial - 1], [None, lanes])
    if extent <= _MAX_LANE_TILE and spatial > 1:
        # A packed tile (edgec.kernels.dense_packed): all its vectors accumulate side by
        # side, independent FMA chains on one contiguous stream.
        sch.reorder(*loops[:spatial - 1], *loops[spatial:], outer, lane)
        sch.parallel(sch.fuse(*loops[:spatial - 1]))
        sch.unroll(outer)
    else:
        sch.reorder(*loops[:spatial - 1], outer, *loops[spatial:], lane)
        sch.parallel(sch.fuse(*loops[:spatial - 1], outer))
    sch.vectorize(lane)  # before decompose_reduction: afterwards TVM refuses it
    init = sch.decompose_reduction(block, loops[spatial])
    sch.vectorize(sch.get_loops(init)[-1])
