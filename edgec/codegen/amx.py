"""Intel AMX tiles for 8-bit NHWC convs: the tensor intrinsic, its fit and the permission.

AMX (Sapphire Rapids and newer Xeons) multiplies whole tiles: one `tdpbusd` sums a 16 x 64
u8 tile times a 64 x 16 s8 tile (stored as 16 rows of 16 x 4 bytes, VNNI order) into a
16 x 16 int32 tile, 16384 multiply-accumulates. Measured here (this Xeon, one core, operands
in L1): 1.4-1.5 T multiply-accumulates per second against ~0.2 T for edgec's vpdpbusd
kernels, once a tile sums 256 or more terms (64 terms: 0.5 T, the tile loads and stores
dominate).

The intrinsic computes an output tile of `rows` output rows x `pixels` pixels x 32 output
channels of conv2d_nhwc_int8 over its whole reduction (channel chunks of 64, taps), its
accumulators in tile registers throughout: tmm0-3 the four 16-channel accumulators (two per
row), tmm4-5 one input tile per row, tmm6-7 the two weight tiles. The conv's init block is
tensorized too (zero_tile): it zeroes tmm0-3 in place, so the update never loads C.
Input pixels of a row sit `stride x channels` bytes apart, which is the tile load's row
stride, so strided and padded convs read the (padded) NHWC input directly, without an im2col copy.

Linux hands out AMX state only to a process that asked for it (arch_prctl
ARCH_REQ_XCOMP_PERM); every AMX kernel asks on entry (amx_schedule.with_tile_state), so a
library runs in any process that loads it (the check, a benchmark, an RPC server).
"""

from __future__ import annotations

import tvm
import tvm.script
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from edgec.codegen.plain_kernels import is_pointwise

CHANNELS_PER_STEP = 64  # input channels of one tile: 64 bytes per tile row
OUTPUT_CHANNELS = 32  # two 16-channel accumulator tiles per row
# Rows of a tile. Not 16: a thread holding a configuration of 16-row tiles may hold ONNX
# Runtime's (MLAS configures its AMX tiles, all 16 x 64 bytes, once per thread and expects to
# find them so); edgec's own configurations all have fewer rows, and only those does a task
# leave behind (amx_schedule.with_tile_state). 224 and 112 -> 14 instead of 16.
MAX_PIXELS = 15
MIN_PIXELS = 7  # below this the tile is mostly empty: the vpdpbusd kernel does better
_FLAT_GAIN = 0.8  # flat tiles where they take at most this share of the row tiles
_FLAT_MIN_CHUNKS = 8  # output-channel chunks (parallel tasks) of a flat conv, at least
_FLAT_MIN_WORK = 24_000_000  # multiply-adds of a flat conv, at least


def tile_pixels(out_width: int) -> int | None:
    """Output pixels per tile: the largest divisor of the row width up to MAX_PIXELS (56 -> 14,
    7 -> 7), or None below MIN_PIXELS."""
    pixels = max(p for p in range(1, MAX_PIXELS + 1) if out_width % p == 0)
    return pixels if pixels >= MIN_PIXELS else None


def flat_length(out_height: int, out_width: int, in_channels: int, out_channels: int,
                kernel: tuple[int, int], strides: tuple[int, int], padding,
                dilation: tuple[int, int]) -> int:
    """The pixels a 1x1 stride-1 conv computes as one flat row of tiles (its output plane
    read as one image row, padded to whole tiles of up to MAX_PIXELS), or 0 where row
    tiles do as well or the conv is too small to pay for the flat copy of its input and
    its epilogue's pass of its own. A 7x7 plane in rows is 7 tiles of 7 pixels, each
    tdpbusd filling 7 of 16 rows; flat it is 4 tiles of 13 (52 pixels, 3 of them padding):
    ResNet-50 INT8's 7x7 1x1 convs ran 0.82-0.89x per call. Flat, a task is a whole channel
    chunk: with few chunks the two threads got uneven shares, and with little work the
    extra passes cost more than the tiles saved (SSD-Lite's 20x20 and 10x10 convs of up to
    22 M multiply-adds ran 2x slower, 20 -> 50 us)."""
    if not is_pointwise(kernel, strides, padding, dilation):
        return 0
    work = out_height * out_width * in_channels * out_channels
    if out_channels < _FLAT_MIN_CHUNKS * OUTPUT_CHANNELS or work < _FLAT_MIN_WORK:
        return 0
    pixels = out_height * out_width
    tiles = -(-pixels // MAX_PIXELS)
    length = -(-pixels // tiles)
    row_pixels = tile_pixels(out_width)
    row_tiles = out_height * (out_width // row_pixels) if row_pixels else None
    if pixels < MIN_PIXELS:
        return 0  # a plane smaller than the smallest tile: the vpdpbusd kernel does better
    if row_tiles is not None and tiles > _FLAT_GAIN * row_tiles:
        return 0
    return tiles * length


def tile_rows(out_height: int) -> int:
    """Output rows per tile: two where they divide the height (each input tile then meets
    both weight tiles and each weight tile both input tiles), else one."""
    return 2 if out_height % 2 == 0 else 1


def fits(in_channels: int, out_width: int) -> bool:
    """Whether an 8-bit dense NHWC conv takes the AMX tile: its input channels fill 64-byte
    tile rows and its output rows fill at least MIN_PIXELS tile rows. Padding other channel
    counts with zeros (MobileNetV2's 96, 144 and 160, up to 1.5x the work) measured no gain:
    0.950 of the vpdpbusd build's time against 0.941 without (interleaved, this Xeon): the
    padded input copy costs what the tiles save on such small layers."""
    return in_channels % CHANNELS_PER_STEP == 0 and tile_pixels(out_width) is not None


_SIGNATURE = """
@T.prim_func(s_tir=True)
def {name}(a: T.handle, b: T.handle, c: T.handle) -> None:
{strides}    A = T.match_buffer(a, (1, {span_y}, {span_x}, {channels}), "uint8",
                       offset_factor=1{a_strides})
    B = T.match_buffer(b, (1, {chunks}, {kh}, {kw}, 16, 32, 4), "int8",
                       offset_factor=1{b_strides})
    C = T.match_buffer(c, (1, 1, {rows}, {pixels}, 32), "int32", offset_factor=1{c_strides})
    with T.sblock("root"):
        T.reads(C[0, 0, 0:{rows}, 0:{pixels}, 0:32], A[0, 0:{span_y}, 0:{span_x}, 0:{channels}],
                B[0, 0:{chunks}, 0:{kh}, 0:{kw}, 0:16, 0:32, 0:4])
        T.writes(C[0, 0, 0:{rows}, 0:{pixels}, 0:32])
"""

# What conv2d_nhwc_int8's block computes over one tile, with the same index expressions.
# Loops of one iteration (one channel chunk, a 1x1 kernel) bind no block variable, as in the
# block being tensorized; a one-row tile has no row loop.
_DESCRIPTION = """
        for {names} in T.grid({extents}):
            with T.sblock("update"):
                {bound} = T.axis.remap("{kinds}", [{remapped}])
                C[0, 0, {vy}, vx, vv] = C[0, 0, {vy}, vx, vv] + T.Cast("int32", A[
                    0, {vy} * {sh} + {vkh} * {dh}, vx * {sw} + {vkw} * {dw},
                    {vicc} * 64 + vic4 * 4 + vici]) * T.Cast(
                        "int32", B[0, {vicc}, {vkh}, {vkw}, vic4, vv, vici])
"""


def _description_loops(rows: int, pixels: int, chunks: int, kh: int, kw: int) -> dict:
    loops = [("y", rows, "S"), ("x", pixels, "S"), ("v", 32, "S"), ("icc", chunks, "R"),
             ("kh", kh, "R"), ("kw", kw, "R"), ("ic4", 16, "R"), ("ici", 4, "R")]
    looped = loops[1:] if rows == 1 else loops  # the schedule splits no row loop then
    bound = [loop for loop in loops if loop[1] > 1]  # blockize binds one-iteration loops to 0
    fields = {"names": ", ".join(name for name, _, _ in looped),
              "extents": ", ".join(str(size) for _, size, _ in looped),
              "kinds": "".join(kind for _, _, kind in bound),
              "bound": ", ".join("v" + name for name, _, _ in bound),
              "remapped": ", ".join(name for name, _, _ in bound)}
    fields.update({"v" + name: ("v" + name if size > 1 else "0") for name, size, _ in loops})
    return fields


# The update's tiles: accumulators (tmm0-3) already zeroed by the init intrinsic; input and
# weight tiles loaded per channel chunk and tap; the sums stored once.
_IMPLEMENTATION = """
        for icc, kh, kw in T.grid({chunks}, {kh}, {kw}):
            for i in T.unroll({rows}):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.int8(4 + i),
                    T.address_of(A[0, i * {sh} + kh * {dh}, kw * {dw}, icc * 64]),
                    T.int64(sa2 * {sw})))
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.int8(6 + j),
                    T.address_of(B[0, icc, kh, kw, 0, j * 16, 0]), T.int64(sb4)))
            for i in T.unroll({rows}):
                for j in T.unroll(2):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tdpbusd", T.int8(i * 2 + j),
                        T.int8(4 + i), T.int8(6 + j)))
        for i in T.unroll({rows}):
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.int8(i * 2 + j),
                    T.address_of(C[0, 0, i, 0, j * 16]), T.int64(sc3 * 4)))
"""

# The init: C = 0 for the tile, computed as tilezero on the accumulator tiles (what the
# update then sums into; C itself is written by the update's stores). The tiles'
# configuration is the task's business (amx_schedule.with_tile_state).
_INIT_SIGNATURE = """
@T.prim_func(s_tir=True)
def {name}(c: T.handle) -> None:
{strides}    C = T.match_buffer(c, (1, 1, {rows}, {pixels}, 32), "int32",
                       offset_factor=1{c_strides})
    with T.sblock("root"):
        T.reads()
        T.writes(C[0, 0, 0:{rows}, 0:{pixels}, 0:32])
"""

_INIT_DESCRIPTION = """
        for {names} in T.grid({extents}):
            with T.sblock("init"):
                {bound} = T.axis.remap("{kinds}", [{remapped}])
                C[0, 0, {vy}, vx, vv] = 0
"""

_INIT_IMPLEMENTATION = """
        for i in T.unroll({rows}):
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.int8(i * 2 + j)))
"""


def tile_config(pixels: int) -> list[int]:
    """The 64-byte tile configuration (palette 1) as eight little-endian int64 words: bytes
    16 + 2t hold tile t's bytes per row (64 for tiles 0-7), byte 48 + t its rows (`pixels`
    for the accumulator and input tiles 0-5, 16 for the weight tiles 6-7)."""
    config = bytearray(64)
    config[0] = 1
    for t in range(8):
        config[16 + 2 * t] = CHANNELS_PER_STEP
        config[48 + t] = 16 if t >= 6 else pixels
    return [int.from_bytes(config[i:i + 8], "little") for i in range(0, 64, 8)]


_STRIDE_VARS = "".join(f"    {v} = T.int32()\n" for v in (
    "sa0", "sa1", "sa2", "sb0", "sb1", "sb2", "sb3", "sb4", "sb5", "sc0", "sc1", "sc2", "sc3"))
_C_STRIDE_VARS = "".join(f"    {v} = T.int32()\n" for v in ("sc0", "sc1", "sc2", "sc3"))


def conv_tile(rows: int, pixels: int, chunks: int, kernel: tuple[int, int],
              strides: tuple[int, int], dilation: tuple[int, int]) -> str:
    """Register (once) and return the name of the AMX intrinsic for one conv geometry."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    fields = dict(rows=rows, pixels=pixels, chunks=chunks, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh,
                  dw=dw, channels=chunks * CHANNELS_PER_STEP,
                  span_y=(rows - 1) * sh + (kh - 1) * dh + 1,
                  span_x=(pixels - 1) * sw + (kw - 1) * dw + 1)
    fields.update(_description_loops(rows, pixels, chunks, kh, kw))
    name = "edgec_amx_{rows}x{pixels}x32_{chunks}c_{kh}x{kw}_s{sh}{sw}_d{dh}{dw}".format(**fields)
    if TensorIntrin.get(name, allow_missing=True) is None:
        plain = dict(strides="", a_strides="", b_strides="", c_strides="")
        strided = dict(strides=_STRIDE_VARS, a_strides=", strides=(sa0, sa1, sa2, 1)",
                       b_strides=", strides=(sb0, sb1, sb2, sb3, sb4, sb5, 1)",
                       c_strides=", strides=(sc0, sc1, sc2, sc3, 1)")
        TensorIntrin.register(
            name, _parse(_SIGNATURE + _DESCRIPTION, name="description", **fields, **plain),
            _parse(_SIGNATURE + _IMPLEMENTATION, name="implementation", **fields, **strided))
    return name


def zero_tile(rows: int, pixels: int) -> str:
    """Register (once) and return the name of the init intrinsic of conv_tile's tiles of
    `rows` x `pixels` (_INIT_IMPLEMENTATION)."""
    name = f"edgec_amx_zero_{rows}x{pixels}x32"
    if TensorIntrin.get(name, allow_missing=True) is None:
        loops = [("y", rows), ("x", pixels), ("v", 32)][(1 if rows == 1 else 0):]
        fields = dict(name=name, rows=rows, pixels=pixels,
                      names=", ".join(n for n, _ in loops),
                      extents=", ".join(str(e) for _, e in loops),
                      kinds="S" * len(loops), bound=", ".join("v" + n for n, _ in loops),
                      remapped=", ".join(n for n, _ in loops),
                      vy="vy" if rows > 1 else "0")
        TensorIntrin.register(
            name, _parse(_INIT_SIGNATURE + _INIT_DESCRIPTION, strides="", c_strides="",
                         **fields),
            _parse(_INIT_SIGNATURE + _INIT_IMPLEMENTATION, strides=_C_STRIDE_VARS,
                   c_strides=", strides=(sc0, sc1, sc2, sc3, 1)", **fields))
    return name


def _parse(template: str, **fields):
    return tvm.script.from_source(template.format(**fields), extra_vars={"T": T}, s_tir=True)
