"""The generic default schedule, for functions no edgec kernel covers (pools, elementwise
chains, transforms, TVM's own legalizations): inline elementwise chains, parallelize the
outer loops, vectorize the innermost one. Compile reports which functions got it."""

from __future__ import annotations

import math

from tvm import s_tir, tirx

from edgec.tvm_compat.tir_exprs import linear_coefficient

_MAX_LANE_TILE = 64  # lanes of a reduction kept in registers side by side
_SHORT_ROW = 4  # innermost extents shorter than this are not worth a vector of their own
_LLVM_ROW = 8  # a pool's row no 4 divides, from this many columns, is LLVM's to vectorize


def extent(sch: s_tir.Schedule, loop) -> int | None:
    """A loop's constant extent, None when symbolic."""
    value = sch.get(loop).extent
    return int(value) if isinstance(value, tirx.IntImm) else None


def position(sch: s_tir.Schedule, loops: list, loop) -> int:
    """Where `loop` is among `loops` (loop handles compare by the loop they point to)."""
    return [sch.get(each).same_as(sch.get(loop)) for each in loops].index(True)


def elements(sch: s_tir.Schedule, block) -> int:
    """How many values a block writes (its output buffer's size)."""
    return math.prod(int(dim) for dim in sch.get(block).writes[0].source.shape)


def root_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def kernel_failed(kernel: str, err: Exception) -> RuntimeError:
    """A kernel edgec owns met a loop nest its schedule does not expect: a bug in edgec (a
    renamed or reshaped TE compute), never a reason to fall back to a 45x slower schedule.
    A bug keeps its traceback (it is no user error), so this is no EdgecError."""
    last = str(err).strip().splitlines()
    return RuntimeError(f"edgec's default schedule for its {kernel} kernel failed "
                      f"({type(err).__name__}: {last[-1] if last else err}); this is a bug "
                      "in edgec, please report it")


def row_length(width: int, longest: int = 8) -> int:
    """The largest divisor of the output width that is at most `longest`."""
    return max(d for d in range(1, min(width, longest) + 1) if width % d == 0)


def vectorize_in_whole_vectors(sch: s_tir.Schedule, loop, lanes: int) -> None:
    """A loop in vectors of `lanes`, then its tail (partitioned off) as one shorter vector;
    a loop shorter than `lanes` as one vector."""
    width = extent(sch, loop) or 1
    whole = width // lanes * lanes
    if not whole:
        sch.vectorize(loop)
        return
    main, tail = (sch.loop_partition(loop, [whole, None]) if whole != width
                  else (loop, None))
    sch.vectorize(sch.split(main, [None, lanes])[-1])
    if tail is not None:
        sch.vectorize(tail)


def schedule_named(func: tirx.PrimFunc, block: str, schedule) -> s_tir.Schedule | None:
    """`schedule(sch)` applied to a Schedule of `func` when one of its root blocks is named
    `block` (an edgec kernel's compute), None when none is. A failure is raised as
    kernel_failed: an edgec kernel its schedule does not fit is a bug, never a reason to
    fall back to a generic schedule."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func)
    if block not in [sch.get(b).name_hint for b in root_blocks(sch)]:
        return None
    try:
        schedule(sch)
    except Exception as err:  # a kernel of edgec's own: failing here is a bug
        raise kernel_failed(block, err) from err
    return sch


def inline_elementwise(sch: s_tir.Schedule) -> None:
    """Inline every root block but the last into its consumers where TVM can (elementwise
    chains, a concat into its reader); reductions, outputs and a pool's padded copy stay."""
    for block in root_blocks(sch)[:-1]:
        if _pads_a_window(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:  # not inlinable (reduction, output, several consumers)
            continue  # scheduled alone


class ParallelVectorize:
    """Fallback: inline elementwise chains, then per block parallel outer loops and vectorize
    the innermost spatial loop."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        inline_elementwise(sch)
        for block in root_blocks(sch):
            self.schedule_block(sch, block)
        return sch

    @staticmethod
    def schedule_block(sch: s_tir.Schedule, block) -> None:
        """Parallel outer spatial loops, the innermost one vectorized (or a reduction into
        a vector of lanes)."""
        stmt = sch.get(block)
        kinds = [iv.iter_type for iv in stmt.iter_vars]
        loops = sch.get_loops(block)
        if len(loops) != len(kinds) or not loops:
            return
        spatial = _leading_spatial(stmt)
        if spatial == 0:
            return
        if spatial < len(kinds) and _contiguous_lanes(stmt, spatial):
            _vectorize_across_reduction(sch, block, loops, spatial)
            return
        if spatial < len(kinds) and _reduces_windows(stmt, spatial):
            _vectorize_rows_across_window(sch, block, loops, spatial)
            return
        if spatial < len(kinds) and (lanes := _plane_lanes(stmt, spatial)):
            _vectorize_plane_reduction(sch, block, loops, spatial, lanes)
            return
        inner = extent(sch, loops[-1])
        if spatial == len(kinds) and len(loops) > 2 and inner and inner < _SHORT_ROW:
            # A few channels innermost (an image's 3, going NHWC): a 3-lane vector per
            # pixel, one parallel task each, took ShuffleNetV2's INT8 input quantize, pad
            # and transpose 0.065 ms. Parallel rows, the channels unrolled: LLVM vectorizes
            # along the row, interleaving the channels' streams.
            sch.parallel(sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0])
            sch.unroll(loops[-1])
            return
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


def _leading_spatial(stmt) -> int:
    """How many of a block's iteration axes, from the outermost, are spatial."""
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    return next((i for i, k in enumerate(kinds) if k != tirx.IterVar.DataPar), len(kinds))


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
    length = extent(sch, loops[spatial - 1]) or 1
    lanes = max(d for d in (16, 8, 4, 2, 1) if length % d == 0)
    if lanes == 1:
        return
    outer, lane = sch.split(loops[spatial - 1], [None, lanes])
    if length <= _MAX_LANE_TILE and spatial > 1:
        # A packed tile (edgec.codegen.kernels.dense_packed): all its vectors accumulate side by
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


def _reduces_windows(stmt, spatial: int) -> bool:
    """True for a pooling window over plain rows: a reduction whose last spatial axis (the
    output column) indexes the innermost dimension of its input as column * stride + tap,
    in a multiple of 4 columns (whole vectors) or at least _LLVM_ROW of them (a loop LLVM
    vectorizes, see _row_left_to_llvm). Its padding is then copied (_pads_a_window)."""
    from tvm.tirx.analysis import undefined_vars

    column = stmt.iter_vars[spatial - 1]
    taps = [iv.var for iv in stmt.iter_vars[spatial:]]
    extent_value = column.dom.extent
    if not isinstance(extent_value, tirx.IntImm) or (
            int(extent_value) % 4 and int(extent_value) < _LLVM_ROW):
        return False
    for region in stmt.reads:
        indices = [r.min for r in region.region]
        used = undefined_vars(indices[-1]) if indices else []
        if not any(column.var.same_as(v) for v in used):
            return False
        # ... with a tap: an NHWC pool's innermost index is the channel alone. Taken for a
        # row pool, its padding was copied (_pads_a_window): ResNet-18's 3x3/2 stem pool
        # over 64x112x112 took 0.064 ms instead of 0.027 reading the padding in place
        # (x86_64-avx512-vnni, Zen 5, 2 threads).
        if not any(tap.same_as(v) for tap in taps for v in used):
            return False
        if any(column.var.same_as(v) for i in indices[:-1] for v in undefined_vars(i)):
            return False
    return True


def _plane_lanes(stmt, spatial: int) -> int:
    """Lanes for a reduction over whole trailing dimensions of its one input (an NCHW
    mean or sum over H and W: a contiguous run per output), the largest divisor of its
    length from 4 to 16; 0 for any other reduction or a run under two vectors."""
    reduced = stmt.iter_vars[spatial:]
    if len(stmt.reads) != 1 or any(iv.iter_type != tirx.IterVar.CommReduce for iv in reduced):
        return 0
    region = stmt.reads[0]
    dims = region.source.shape[len(region.region) - len(reduced):]
    for iv, axis, dim in zip(reduced, region.region[-len(reduced):], dims, strict=True):
        size = iv.dom.extent
        if not (axis.min.same_as(iv.var) and isinstance(size, tirx.IntImm)
                and isinstance(dim, tirx.IntImm) and int(size) == int(dim)):
            return 0
    length = math.prod(int(iv.dom.extent) for iv in reduced)
    lanes = row_length(length, 16)
    return lanes if lanes >= 4 and length >= 2 * lanes else 0


def _vectorize_plane_reduction(sch: s_tir.Schedule, block, loops: list, spatial: int,
                               lanes: int) -> None:
    """Sum each output's run into `lanes` partial sums (one vector add per step, rfactor),
    then add the lanes: the scalar loop had taken MobileNetV3-Small NCHW's squeeze-
    excitation means 0.12 ms of its 1.2 (16 channels of 56x56: 0.023 ms; packed, whose
    channels are the lanes, 0.03 ms for all)."""
    outer, lane = sch.split(sch.fuse(*loops[spatial:]), [None, lanes])
    partial = sch.rfactor(lane, factor_axis=0)
    task = sch.fuse(*sch.get_loops(partial)[:spatial])
    sch.parallel(task)
    sch.vectorize(sch.get_loops(partial)[-1])  # before decompose_reduction, as above
    init = sch.decompose_reduction(partial, sch.get_loops(partial)[1])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.reverse_compute_at(block, task)


def _vectorize_rows_across_window(sch: s_tir.Schedule, block, loops: list, spatial: int) -> None:
    """A pool over plain rows (NCHW, NHWC's pools come packed): a vector of output columns
    accumulates over the window taps, each tap one (strided) load of the row. Scalar, with
    the window innermost, ShuffleNetV2's 3x3/2 stem pool over 24x112x112 took 10% of the
    model's estimated single-thread time on x86 (0.97 of 9.5 ms).

    Rows no 4 divides (SqueezeNet's ceil-mode pools to 55, 27 and 13 columns) and strided
    windows are left to LLVM (_row_left_to_llvm): ResNet's 3x3/2 stem pool over
    64x112x112 read each tap's vector lane by lane, 0.52 ms in ResNet-50 NCHW against
    packed's 0.19 on AVX2, 0.36 left to LLVM; alone 0.344 -> 0.200 ms (AVX2) and 0.355 ->
    0.214 (AVX-512). In ResNet-18 0.59 -> 0.45 and 0.56 -> 0.39 ms, ShuffleNetV2's stem
    pool 0.16 -> 0.11 and 0.19 -> 0.11, U-Net's 2x2 pools halved (Ice Lake Xeon, 2 threads,
    per-call minimums of 5 interleaved rounds). NEON by the rpi5 estimate 1.36 -> 1.31 ms.
    LLVM's loop ends in scalar iterations (a group with gaps must not read past the row)."""
    length = extent(sch, loops[spatial - 1]) or 1
    if length % 4 or _column_stride(sch.get(block), spatial) > 1:
        _row_left_to_llvm(sch, block, loops, spatial)
        return
    lanes = max(d for d in (16, 8, 4) if length % d == 0)
    outer, lane = sch.split(loops[spatial - 1], [None, lanes])
    sch.reorder(*loops[:spatial - 1], outer, *loops[spatial:], lane)
    if spatial > 1:
        sch.parallel(sch.fuse(*loops[:spatial - 1]))
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, loops[spatial])
    sch.vectorize(sch.get_loops(init)[-1])


def _column_stride(stmt, spatial: int) -> int:
    """The largest step of the input column between neighbouring output columns of a
    window reduction (_reduces_windows): 2 for a stride-2 pool."""
    column = stmt.iter_vars[spatial - 1].var
    steps = [linear_coefficient(region.region[-1].min, column) for region in stmt.reads]
    return max((step for step in steps if step is not None), default=1)


def _row_left_to_llvm(sch: s_tir.Schedule, block, loops: list, spatial: int) -> None:
    """A pool over rows no 4 divides: parallel over the rows, each row's column loop
    innermost with the window taps unrolled in it, and the loop left to LLVM's vectorizer,
    which reads the taps' stride-2 columns as one interleaved group (wide loads and
    shuffles; NEON's ld2). TVM's own vectorized loop, whole vectors and a tail, built each
    strided vector lane by lane, as in the depthwise phase copies of
    codegen.plain_schedules: SqueezeNet NCHW's three pools (55, 27, 13 columns) 1.06 ->
    0.75 ms on AVX2 and 0.45 -> 0.71 on AVX-512 in one run; left to LLVM, in another, 1.07
    -> 0.54 and 0.57 -> 0.40 (packed 0.18-0.23; per-call minimums of 6 interleaved rounds,
    Intel Xeon, Emerald Rapids, 2 threads). As one loop over every output they had been a
    parallel task per output value: scalar on AVX2, a gather per tap on AVX-512."""
    column, taps = loops[spatial - 1], loops[spatial:]
    if spatial > 1:
        sch.parallel(sch.fuse(*loops[:spatial - 1]))
    sch.reorder(column, *taps)
    for tap in taps:
        sch.unroll(tap)
    sch.decompose_reduction(block, taps[0])


def _pads_a_window(sch: s_tir.Schedule, block) -> bool:
    """A pool's padded copy of its input: kept as a copy, so that every window tap is one
    plain (strided) vector load; inlined, each lane's load carried its own bounds test and
    aarch64 ran the pool as scalar compares and selects."""
    if not sch.get(block).name_hint.startswith("pad_temp"):
        return False
    for consumer in sch.get_consumers(block):
        stmt = sch.get(consumer)
        spatial = _leading_spatial(stmt)
        if 0 < spatial < len(stmt.iter_vars) and _reduces_windows(stmt, spatial):
            return True
    return False
