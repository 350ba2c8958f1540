"""Default schedules of the depthwise NCHW kernels, whose vectors run along output pixels
(the other plain kernels use PackedConv's tile): PlaneConv for edgec.codegen.nchw_planes'
flat planes, PlainDepthwiseConv for plain_kernels.depthwise_conv2d_nchw (dilations that
skip a stride phase, which the flat planes do not take)."""

from __future__ import annotations

import math

from tvm import s_tir, tirx

from edgec.codegen import nchw_planes, vector_rewrites
from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    extent,
    root_blocks,
    row_length,
    schedule_named,
)

_MAX_ROW = 16  # output pixels per vector tile: one AVX-512 register, four NEON ones


class PlainDepthwiseConv:
    """Parallel over (batch, channel, row); a row's pixels in vectors across the taps, the
    bias/activation epilogue on each vector tile while it is in registers."""

    def __init__(self, longest_row: int = _MAX_ROW):
        self.longest_row = longest_row  # pixels per vector tile (kernel search varies it)

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, "depthwise_conv2d_nchw", self._schedule)

    def _schedule(self, sch: s_tir.Schedule) -> None:
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        index = names.index("depthwise_conv2d_nchw")
        for block in blocks[:index]:  # padding (and casts): read through, no copy
            sch.compute_inline(block)
        conv, epilogue = sch.get_sblock("depthwise_conv2d_nchw"), blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        batch, channel, row, col, kh, kw = sch.get_loops(conv)
        col_outer, col_inner = sch.split(col, [None, row_length(extent(sch, col) or 1,
                                                                 self.longest_row)])
        sch.reorder(col_outer, kh, kw, col_inner)
        sch.parallel(sch.fuse(batch, channel, row))
        sch.vectorize(col_inner)
        if epilogue:
            sch.reverse_compute_at(epilogue[-1], col_outer)
            sch.vectorize(sch.get_loops(epilogue[-1])[-1])
        init = sch.decompose_reduction(conv, kh)
        sch.vectorize(sch.get_loops(init)[-1])


# Parallel tasks of a flat-plane conv, at most: each is a run of (channel, block) iterations
# on one thread, so their phase-row buffer is allocated once per run (TVM's StorageRewrite
# hoists it to the parallel loop's body) instead of once per channel from TVM's workspace
# pool, which had cost ~7000 pool calls per MobileNetV2 inference.
_MOST_TASKS = 64


def _grouped(sch: s_tir.Schedule, loop):
    """(parallel, serial): `loop` split into at most _MOST_TASKS parallel runs, equal ones
    where a divisor of its extent gives at least half as many (no guard), else runs of
    ceil(extent / _MOST_TASKS) tasks, the last one guarded (97 channels: 49 runs, not 1)."""
    total = extent(sch, loop) or 1
    runs = row_length(total, _MOST_TASKS)
    if runs >= min(total, _MOST_TASKS // 2):
        return sch.split(loop, [runs, total // runs])
    return sch.split(loop, [None, -(-total // _MOST_TASKS)])


_RUN_COPY_BYTES = 16 * 1024  # a run's phase planes copied at once stay in L1

_LONGEST_VECTOR_ROW = 64  # epilogue rows up to this many pixels are one vectorized loop


class PlaneConv:
    """Schedule of edgec.codegen.nchw_planes' flat-plane depthwise convs: parallel over
    (batch, channel, block of rows); each task copies its phase rows, accumulates
    `vectors` pixel vectors at a time across the taps, then crops and runs the
    bias/activation epilogue on the block while it is in cache."""

    def __init__(self, vectors: int | None = None):
        self.vectors = vectors  # pixel vectors per register tile (None: the kernel's)

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, "depthwise_conv2d_nchw_planes", self._schedule)

    def _schedule(self, sch: s_tir.Schedule) -> None:
        blocks = root_blocks(sch)
        names = [sch.get(b).name_hint for b in blocks]
        index = names.index("depthwise_conv2d_nchw_planes")
        conv, epilogue = blocks[index], blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        planes = None
        for block in blocks[:index]:
            if sch.get(block).name_hint == "phase_planes":
                planes = block
            else:  # casts
                sch.compute_inline(block)
        annotations = sch.get(conv).annotations
        lanes, vectors = int(annotations["edgec_lanes"]), int(annotations["edgec_vectors"])
        row_blocks = int(annotations["edgec_blocks"])
        batch, channel, pixel, *taps = sch.get_loops(conv)
        if int(annotations.get("edgec_aligned", 0)):
            # An aligned plane: a tile of rows by vectors, every tap unrolled so LLVM loads
            # an input row's vector once for all the tile's rows that tap it.
            pitch, tile_rows = (int(annotations[k]) for k in ("edgec_pitch", "edgec_tile_rows"))
            row_block, outer, row, column, vector, lane = sch.split(
                pixel, [row_blocks, None, tile_rows, pitch // (vectors * lanes), vectors,
                        lanes])
            kh, kw = taps
            first_tap = kw
            sch.reorder(outer, column, kw, vector, row, kh, lane)
            for loop in (kw, row, kh):  # the vectors too, below
                sch.unroll(loop)
        else:
            if self.vectors and ((extent(sch, pixel) or 0) // row_blocks) % (
                    self.vectors * lanes) == 0:
                vectors = self.vectors  # a searched tile that divides a block of the plane
            row_block, outer, vector, lane = sch.split(pixel,
                                                       [row_blocks, None, vectors, lanes])
            sch.reorder(outer, *taps, vector, lane)
            first_tap = taps[0]
        task = sch.fuse(batch, channel, row_block)
        out = [int(d) for d in annotations["edgec_out"]]
        if epilogue and not self._over_the_output(sch, epilogue[-1], out):
            # A reduction fused after the conv (a squeeze-excitation mean): a pass of its own.
            ParallelVectorize.schedule_block(sch, epilogue[-1])
        elif epilogue:
            # The crop (pixel y*pitch + x of the flat plane) and the bias/activation run in
            # the task that accumulated their block. reverse_compute_at cannot place them
            # (it finds no loop domain for a flat index), so their rows are split into the
            # same blocks and the two task loops merged.
            rows = int(annotations["edgec_block_rows"])
            masked = bool(int(annotations.get("edgec_masked", 0)))
            task = sch.merge(task, self._epilogue_tasks(sch, epilogue[-1], row_blocks, rows,
                                                        masked, lanes))
        group, task = _grouped(sch, task)
        sch.parallel(group)
        if planes is not None:  # the task's phase rows, copied where they are used
            sch.compute_at(planes, group if self._copy_per_run(sch, planes, row_blocks, task)
                           else task)
            self._schedule_planes(sch, planes)
        sch.unroll(vector)
        sch.vectorize(lane)
        init = sch.decompose_reduction(conv, first_tap)
        sch.vectorize(sch.get_loops(init)[-1])

    @staticmethod
    def _copy_per_run(sch: s_tir.Schedule, planes, row_blocks: int, task) -> bool:
        """Whether a run's phase planes are copied before any of them is used: small
        planes of one block each, whose copy would otherwise be read back at once by wide
        vector loads that span its narrow stores (store forwarding fails: 7x7 planes copied
        as 4+2+1-lane pieces and read as 16-lane vectors)."""
        buffer = sch.get(planes).writes[0].source
        plane = math.prod(int(d) for d in buffer.shape[2:]) * buffer.dtype.bits // 8
        return row_blocks == 1 and plane * (extent(sch, task) or 1) <= _RUN_COPY_BYTES

    @staticmethod
    def _schedule_planes(sch: s_tir.Schedule, planes) -> None:
        """The phase copy row by row, each row's inner columns (no border test) in
        vectors; a masked plane's copy, one contiguous run, in vectors of its storage rows."""
        annotations = sch.get(planes).annotations
        if int(annotations.get("edgec_masked", 0)):  # a contiguous run in storage rows
            *_, row, col = sch.get_loops(planes)
            first, end = (int(c) for c in annotations["edgec_inner_columns"])
            lengths = [n for n in (first, end - first) if n]
            # A short run (7x7) whose row loop is there (not where the whole run is one
            # storage row): the zeros before the input, the input, the zeros after, each
            # one vector loop, the input's with no clamp left (nchw_planes._input_run).
            # Longer runs (a plane 6 wide and 100 tall) keep one vector per storage row.
            short_run = (len(lengths) == 2 and sch.get(row).body.same_as(sch.get(col))
                         and extent(sch, col) == nchw_planes.MASKED_STORAGE_PITCH
                         and (extent(sch, row) or 0) * nchw_planes.MASKED_STORAGE_PITCH
                         <= 4 * _LONGEST_VECTOR_ROW)
            if short_run:
                for piece in sch.loop_partition(sch.fuse(row, col), [*lengths, None]):
                    sch.vectorize(piece)
            else:
                PlaneConv._vectorize_row(sch, col)
            return
        *_, phase, row, col = sch.get_loops(planes)
        pitch = int(annotations["edgec_pitch"])
        first, end = (int(c) for c in annotations["edgec_inner_columns"])
        parts = [n for n in (first, end - first) if n]
        # The lengths of the row's border and inner parts (None: the row is one part).
        lengths = None if end == pitch and len(parts) < 2 else (
            [*parts, None] if end < pitch else [*parts[:-1], None])
        phase_cols = int(annotations.get("edgec_phase_cols", 1))
        if phase_cols > 1:
            # Strided: the column phases innermost, unrolled, and the row left to LLVM's
            # vectorizer, which reads both phases as one interleaved group (contiguous loads
            # and shuffles). TVM's vectorized loop read each phase at stride 2 lane by lane
            # (83 vinsertps in MobileNetV2's 112 -> 56 depthwise conv). The row phases go
            # inside the rows, so input rows are read in order: phase by phase, the plane
            # was read in two passes over every other row (that conv 0.90x, MobileNetV2 NCHW
            # 1.35 -> 1.27x of packed; Zen 4, 2 threads, interleaved).
            phase_row, phase_col = sch.split(phase, [None, phase_cols])
            sch.reorder(row, phase_row, col, phase_col)
            sch.unroll(phase_col)
            inner = col
            if lengths:
                inner = sch.loop_partition(col, lengths)[1 if first else 0]
            if phase_cols == 2:  # whole vectors and two shuffles
                vector_rewrites.mark_deinterleave(sch, inner, int(annotations["edgec_lanes"]))
            return
        if lengths is None:
            PlaneConv._vectorize_row(sch, col)
            return
        pieces = sch.loop_partition(col, lengths)
        sch.vectorize(pieces[1 if first else 0])  # a partitioned loop cannot be split again

    @staticmethod
    def _over_the_output(sch: s_tir.Schedule, block, out: list[int]) -> bool:
        """Whether the epilogue's last block is elementwise over the conv's output."""
        stmt = sch.get(block)
        return (all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)
                and [extent(sch, loop) for loop in sch.get_loops(block)][2:] == out)

    @staticmethod
    def _epilogue_tasks(sch: s_tir.Schedule, block, blocks: int, rows: int, masked: bool,
                        lanes: int):
        """The epilogue's (batch, channel, block of rows) loop, its rows vectorized (a
        masked plane's whole block at once: its rows are contiguous in the accumulator
        too), rows of one vector loop as whole vectors overlapping the next row
        (vector_rewrites)."""
        batch, channel, row, col = sch.get_loops(block)
        row_block, row = sch.split(row, [blocks, rows])  # the last block may pass out_h
        if masked:
            pixels = sch.fuse(row, col)
            sch.vectorize(sch.split(pixels, [None, row_length(extent(sch, pixels) or 1,
                                                              _LONGEST_VECTOR_ROW)])[-1])
        else:
            if (extent(sch, col) or 1) <= _LONGEST_VECTOR_ROW:
                vector_rewrites.mark_overlapping_rows(sch, col, lanes, rows)
            PlaneConv._vectorize_row(sch, col)
        return sch.fuse(batch, channel, row_block)

    @staticmethod
    def _vectorize_row(sch: s_tir.Schedule, col) -> None:
        width = extent(sch, col) or 1
        if width <= _LONGEST_VECTOR_ROW:
            sch.vectorize(col)
        else:
            sch.vectorize(sch.split(col, [None, 16])[-1])
