"""Where a depthwise NCHW conv's flat planes put their pixels (edgec.codegen.nchw_planes
computes on them): the pitch of their rows, their stride phases, their blocks of rows, and
the register tile that accumulates them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx


@dataclass(frozen=True)
class PlaneGeometry:
    """Where the taps of a flat output plane read their phase planes.

    Attributes:
        out_h, out_w: the conv's output size.
        pitch: pixels per row of a phase plane and of the accumulated output plane.
        phase_rows, phase_cols: stride phases along each axis (1 where the stride is 1 or
            every tap falls on phase 0, as a 1x1 stride-2 conv's).
        rows: rows of each phase plane (enough for every tap of the last tile).
        length: accumulated pixels per output plane: whole blocks of rows at the pitch.
        lanes, vectors: a register tile's pixels, `vectors` SIMD registers of `lanes`.
        block_rows, blocks: the plane is accumulated and cropped in `blocks` blocks of
            `block_rows` whole rows (each a whole number of tiles), one parallel task each.
        masked: the pitch is the row itself (stride 1, one block): a tap's run of pixels
            wraps from one row's end to the next row's start, and _in_row zeroes the
            wrapped lanes; no padding columns to copy, compute and crop.
        aligned: the pitch is whole vectors and a phase row starts with the input's first
            column (its left padding is the zero columns ending the row before, a guard row
            of zeros above the first): every copied row, accumulated row and untapped
            column is a run of aligned vectors (see _aligned_geometry).
        tile_rows: output rows of an aligned plane's register tile (`vectors` vectors of
            each): the rows' taps read the same input rows, each loaded once.
    """

    out_h: int
    out_w: int
    pitch: int
    phase_rows: int
    phase_cols: int
    rows: int
    length: int
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]
    lanes: int
    vectors: int
    block_rows: int
    blocks: int
    masked: bool = False
    aligned: bool = False
    tile_rows: int = 1

    @property
    def attrs(self) -> dict:
        """The tile, pitch, blocks and output size, for the schedule
        (edgec.codegen.plain_schedules.PlaneConv)."""
        return {"edgec_lanes": self.lanes, "edgec_vectors": self.vectors,
                "edgec_pitch": self.pitch, "edgec_block_rows": self.block_rows,
                "edgec_blocks": self.blocks, "edgec_out": [self.out_h, self.out_w],
                "edgec_masked": int(self.masked), "edgec_aligned": int(self.aligned),
                "edgec_tile_rows": self.tile_rows}

    @property
    def phases(self) -> int:
        return self.phase_rows * self.phase_cols

    def tap(self, kh, kw):
        """(phase, offset) of tap (kh, kw): TE expressions of the reduction axes."""
        (sh, sw), (dh, dw) = self.strides, self.dilation
        if self.aligned:  # input column x * sw + kw * dw - left; a guard row on top
            column = kw * dw - self.padding[1]
            phase = ((kh * dh) % sh) * self.phase_cols + tirx.floormod(column, sw)
            return phase, ((kh * dh) // sh + 1) * self.pitch + tirx.floordiv(column, sw)
        phase = ((kh * dh) % sh) * self.phase_cols + (kw * dw) % sw
        return phase, ((kh * dh) // sh) * self.pitch + (kw * dw) // sw


def _axis_phases(size: int, stride: int, dilation: int) -> int | None:
    """Phases the taps of one axis fall on; None when they are not 0..n-1 (a dilation that
    skips a phase: the plain kernels take such a conv)."""
    used = {(k * dilation) % stride for k in range(size)}
    return len(used) if used == set(range(len(used))) else None


# A block of rows is what one task copies, accumulates and crops: at most this many pixels
# when a whole-tile block that small exists (one channel's 2048 pixels and their phase rows
# stay in L1).
_MOST_BLOCK_PIXELS = 2048
# A task's fixed cost, counted as pixels computed: many small blocks cost more than their
# pixels alone.
_TASK_COST_PIXELS = 32


def _blocking(out_h: int, pitch: int, tile: int) -> tuple[int, int, int]:
    """(block_rows, blocks, length) of an output plane at `pitch`: blocks of whole rows that
    are whole tiles (rows a multiple of tile / gcd(pitch, tile)), at most 2048 pixels where
    such exist, the fewest pixels accumulated (each block's task cost added); else one
    block of out_h rows, its last tile partly past the plane."""
    unit = tile // math.gcd(pitch, tile)
    choices = []
    for rows in range(unit, out_h, unit):
        blocks = -(-out_h // rows)
        length = blocks * rows * pitch
        if rows * pitch <= _MOST_BLOCK_PIXELS or rows == unit:
            choices.append((length + blocks * _TASK_COST_PIXELS, rows, blocks, length))
    whole = math.ceil(out_h * pitch / tile) * tile
    if not choices or whole <= _MOST_BLOCK_PIXELS:
        choices.append((whole + _TASK_COST_PIXELS, out_h, 1, whole))
    return min(choices)[1:]


def plane_geometry(data_shape, kernel_size, strides, padding, dilation, lanes: int,
                   vectors: int = 1, registers: int = 0) -> PlaneGeometry | None:
    """The flat-plane geometry of an NCHW conv whose register tile is `vectors` registers of
    `lanes` pixels, None when its taps skip a phase. The pitch is the narrowest that fits a
    padded row, or a little wider where its blocking computes fewer pixels. Given the
    target's vector `registers`, an aligned plane where its pitch is not much wider
    (_aligned_geometry; vectors then its own)."""
    height, width = (int(d) for d in data_shape[2:4])
    (kh_size, kw_size), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    top, left, bottom, right = padding
    padded_h, padded_w = height + top + bottom, width + left + right
    out_h = (padded_h - (kh_size - 1) * dh - 1) // sh + 1
    out_w = (padded_w - (kw_size - 1) * dw - 1) // sw + 1
    phase_rows, phase_cols = _axis_phases(kh_size, sh, dh), _axis_phases(kw_size, sw, dw)
    if phase_rows is None or phase_cols is None or out_h <= 0 or out_w <= 0:
        return None
    narrowest = max(-(-padded_w // sw), out_w + (kw_size - 1) * dw // sw)
    if (sh, sw) == (1, 1) and out_w == width:
        # A row's zero columns serve both sides: a tap past the row's end lands in the next
        # row's left padding, one before its start in the row above's right padding, so
        # the rows need only max(left, right) zeros between them, not left + right (rows of
        # 14 with a 5x5 kernel at a pitch of 16, one vector, instead of 18).
        narrowest = width + max(left, right)
    masked = ((sh, sw) == (1, 1) and out_w == width and 2 * out_w <= lanes
              and out_h * out_w <= _MOST_BLOCK_PIXELS)
    if registers and not masked:
        aligned = _aligned_geometry(data_shape, kernel_size, strides, padding, dilation,
                                    lanes, registers, out_h, out_w, phase_rows, narrowest)
        if aligned is not None:
            return aligned
    tile = lanes * vectors
    pitch = min(range(narrowest, narrowest + lanes),
                key=lambda p: (_blocking(out_h, p, tile)[2], p))
    block_rows, blocks, length = _blocking(out_h, pitch, tile)
    if masked:  # the rows' own pitch: one block of whole tiles
        pitch, block_rows, blocks = width, out_h, 1
        length = -(-(out_h * out_w) // tile) * tile
    reach = ((kh_size - 1) * dh // sh) * pitch + (kw_size - 1) * dw // sw  # farthest tap
    rows = -(-(length + reach) // pitch)
    return PlaneGeometry(out_h, out_w, pitch, phase_rows, phase_cols, rows, length,
                         (sh, sw), (dh, dw), (top, left, bottom, right), lanes, vectors,
                         block_rows, blocks, masked)


# An aligned plane's pitch, at most this much wider than the narrowest: 14-pixel rows at a
# pitch of 16 (from 15), 56 at 64 (from 57), 7 at 8 on AVX2; not 7 at 16 on AVX-512.
_ALIGNED_MOST_WIDER = 1.25
# Rows of one vector that aligning widens stay flat under a 3x3 kernel: MobileNetV2's
# 14x14 convs (a pitch of 16 for 15 on AVX-512) ran 0.92-0.97x as fast aligned (fastest
# calls of 6 interleaved rounds). A 5x5 kernel's five input rows per output row gain:
# MobileNetV3-Small's 5x5 convs at 14x14 1.06-1.15x, 256 channels alone 0.037 -> 0.030
# ms; and rows the alignment does not widen (7 at a pitch of 8 on AVX2) 1.14-1.21x.
_ALIGNED_LEAST_VECTORS = 2
_ONE_VECTOR_ROWS_LEAST_KERNEL = 5
# Accumulators of a tile whose weights stay in registers, at least (two FMA units of 4
# cycles' latency keep 8 chains busy); where fewer are left (AVX2's 3x3, any 5x5), half
# the registers accumulate and the FMAs read the weights from memory.
_ALIGNED_LEAST_ACCUMULATORS = 8


def _aligned_geometry(data_shape, kernel_size, strides, padding, dilation, lanes: int,
                      registers: int, out_h: int, out_w: int, phase_rows: int,
                      narrowest: int) -> PlaneGeometry | None:
    """An aligned plane (PlaneGeometry.aligned), None where its pitch is much wider than
    the narrowest or its column taps skip a phase. Unaligned, every tap of every vector
    was a load split across two cache lines (a pitch of 57 floats) and each of 9 taps
    loaded its own copy of an input row: 144 channels at 56x56 spent 41% of their time
    accumulating, 27% copying rows of 56 to rows of 57 and 31% loading the accumulator
    for the epilogue (perf, one thread, AVX-512). Aligned, a register tile of `tile_rows`
    rows by `vectors` vectors loads each input row once for the kernel's rows that
    tap it, its middle column's taps aligned."""
    width = int(data_shape[3])
    (kh_size, kw_size), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    columns = [kw * dw - padding[1] for kw in range(kw_size)]  # input column of x = 0
    column_phases = {c % sw for c in columns}
    if column_phases != set(range(len(column_phases))):
        return None
    offsets = [c // sw for c in columns]
    stored = max(-(-(width - pw) // sw) for pw in column_phases)  # columns holding input
    # A row reads up to max(offsets) past its last output column in its own zero
    # columns, and -min(offsets) before its first one in the row above's.
    least = max(out_w + max(offsets), stored - min(offsets), stored)
    pitch = -(-least // lanes) * lanes
    one_vector_rows = pitch < _ALIGNED_LEAST_VECTORS * lanes
    if pitch > _ALIGNED_MOST_WIDER * narrowest or (
            one_vector_rows and pitch > narrowest
            and kh_size < _ONE_VECTOR_ROWS_LEAST_KERNEL):
        return None
    # Accumulators: the registers the weights and three loaded input vectors leave. Each
    # output vector takes kh * kw FMAs and loads (tile_rows + kh - 1) * kw / tile_rows
    # input vectors, whatever its vectors: the rows (up to 8) that cost the least over the
    # rows they compute (29 output rows: 6 of 30 computed, not 1 of 29 with no sharing).
    # Where fewer than 8 are left, the weights are read from memory and half the registers
    # accumulate: each accumulator is a chain of kh * kw dependent FMAs (4 cycles each), so
    # few of them leave the FMA units idle. AVX2's 5x5 convs with 2 accumulators had lost
    # to the flat tile (MobileNetV3-Small's 240 channels at 14x14 0.030 -> 0.036 ms); with
    # 8, 256 channels at 14x14 0.041 -> 0.035 ms, and AVX-512's with 16 (not 4) 0.037 ->
    # 0.030 (one conv, 5 interleaved rounds); AVX2's 3x3 with 8 (not 4): MobileNetV2's
    # 96 channels 112 -> 56 0.224 -> 0.175 ms.
    accumulators = min(16, registers - kh_size * kw_size - 3)
    if accumulators < _ALIGNED_LEAST_ACCUMULATORS:
        accumulators = registers // 2

    def cost(rows: int) -> float:  # at stride 2 rows share fewer loads than this counts
        return -(-out_h // rows) * rows * (kh_size * kw_size
                                           + (rows + kh_size - 1) * kw_size / rows)

    tile_rows = min(range(1, min(8, accumulators) + 1), key=lambda r: (cost(r), -r))
    row_vectors = pitch // lanes
    vectors = max(v for v in range(1, min(4, accumulators // tile_rows) + 1)
                  if row_vectors % v == 0)
    block_rows, blocks, length = _blocking(out_h, pitch, tile_rows * pitch)
    reach = ((kh_size - 1) * dh // sh + 1) * pitch + max(offsets)  # farthest tap
    rows = -(-(length + reach) // pitch)
    return PlaneGeometry(out_h, out_w, pitch, phase_rows, len(column_phases), rows, length,
                         (sh, sw), (dh, dw), tuple(padding), lanes, vectors, block_rows,
                         blocks, aligned=True, tile_rows=tile_rows)
