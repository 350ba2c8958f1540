"""Compute definitions for depthwise NCHW convs vectorized over output pixels.

In NCHW a pixel's channels are a plane apart, so a depthwise conv vectorizes over pixels of
one channel. Along output rows (plain_kernels.depthwise_conv2d_nchw) that gave strided loads
at stride 2 and scalar FMAs on rows no vector divides: MobileNetV2 in NCHW ran 2.2x behind
the packed layout, its stride-2 depthwise convs 0.51 ms of 5.8. Here each output plane is
computed flat, as a sequence of pixels, so every vector is a contiguous run of one plane:

- the input is padded and split into stride phases ("polyphase"): phase (ph, pw) holds the
  padded pixels (y*sh + ph, x*sw + pw), row after row at a pitch of about padded_w / sw.
  Tap (kh, kw) of output pixel q = y*pitch + x then reads phase ((kh*dh) % sh, (kw*dw) % sw)
  at q + ((kh*dh) // sh) * pitch + (kw*dw) // sw: for every stride, the taps of a run of
  output pixels are a run of input pixels (ncnn's NCHW kernels unroll each stride by hand;
  here stride 2 is stride 1 over four phases);
- outputs are accumulated over out_h rows at that pitch (the pitch - out_w extra columns
  per row are computed and cropped: 2 of 9 on a 7x7 map with a 3x3 kernel), in blocks of
  whole rows that are whole register tiles, so no tile needs a tail;
- each (channel, block) is one parallel task: it copies its phase rows, accumulates, crops
  and runs the bias/activation epilogue while all of it is in cache;
- where rows pad to two or more whole vectors at little cost (56 at a pitch of 64), the
  plane is aligned (nchw_plane_geometry): each phase row starts with the input's first
  column and its register tile spans several output rows, which load each input vector
  once between them.

Where the pixels go (pitch, phases, blocks, tile) is nchw_plane_geometry's.

Dense NCHW convs stay on the packed tile (legalize_plain says what this kernel did for them).
"""

from __future__ import annotations

from tvm import te, tirx

from edgec.codegen.nchw_plane_geometry import PlaneGeometry

# Stride-1 planes whose rows are at most half a vector run masked (PlaneGeometry.masked):
# padded to a pitch of 9, a 7x7 plane computed 63 pixels for 49 and its copy and crop moved
# rows of 7 as 4+2+1-lane pieces. 960 channels at 7x7, 3x3: 0.65x, 576 at 7x7, 5x5: 0.74x
# (AVX-512, 2 threads, interleaved). Rows of 14 lost (576 at 14x14, 3x3: 1.15x; 240 with
# 5x5: 1.16x): a mask multiply per masked tap outweighs the padding there.
MASKED_STORAGE_PITCH = 16


def phase_planes(data, geometry: PlaneGeometry):
    """(N, C, H, W) data as (N, C, phases, rows, pitch): padded, split into stride phases;
    zero past the padded input. The convs read it at a flat pixel index (planes_at): a
    plane's rows are one run of memory, and a depthwise conv's schedule can still copy
    whole rows of one channel just before using them."""
    n, channels, height, width = (int(d) for d in data.shape)
    g = geometry
    (sh, sw), (top, left, _, _) = g.strides, g.padding
    # A masked plane is one contiguous run of the input: stored in rows of 16 (any storage
    # pitch reads the same through planes_at), so its copy is whole vectors, not rows of 7.
    pitch = MASKED_STORAGE_PITCH if g.masked else g.pitch
    rows = -(-(g.rows * g.pitch) // pitch)
    # Input rows and columns before a phase plane's first: an aligned plane has a guard row
    # of zeros on top and no left padding.
    above, before = (top + sh, 0) if g.aligned else (top, left)

    def value(b, c, phase, row, col):
        if g.masked:  # pixel row * pitch + col - left of the input plane shifted by `top` rows
            flat = row * pitch + col - left - top * width
            safe = clamped(flat, height * width)
            return tirx.Select(_opaque_equal(safe, flat),
                               data[b, c, safe // width, safe % width], te.const(0, data.dtype))
        y = row * sh + phase // g.phase_cols - above
        x = col * sw + phase % g.phase_cols - before
        # A select of a load that is always in bounds (clamped), not if_then_else: TVM's
        # vectorizer scalarized the guarded load even where only the row's test was left
        # (2128 vmovss + 1596 vinsertps in MobileNetV2's first depthwise conv, 0.31 ms).
        # The test is "the clamp changed nothing", not 0 <= y < height: under that condition
        # TVM's simplifier dropped the clamps from the load, which then read the row above
        # the first channel's plane and below the last one's (a segfault where the tensor
        # touched an unmapped page). Where the columns are known inside, it still folds away.
        safe_y, safe_x = clamped(y, height), clamped(x, width)
        return tirx.Select(tirx.all(safe_y == y, safe_x == x), data[b, c, safe_y, safe_x],
                           te.const(0, data.dtype))

    inner = _input_run(g, height * width) if g.masked else interior_columns(g, width)
    return te.compute((n, channels, g.phases, rows, pitch), value, name="phase_planes",
                      attrs={**g.attrs, "edgec_inner_columns": inner,
                             "edgec_phase_cols": g.phase_cols})


def _input_run(g: PlaneGeometry, pixels: int) -> tuple[int, int]:
    """Where a masked plane's copy holds the input, [first, end) of its flat storage: the
    schedule copies that run apart from the zeros around it, as whole vector loads with no
    clamp or test left. With the clamps in every vector LLVM gathered each one lane by
    lane (16 scalar loads per vector: 576 channels at 7x7 spent ~120 of ~340 cycles a
    channel there)."""
    first = g.padding[1] + g.padding[0] * g.out_w  # left + top * width
    return first, first + pixels


def _opaque_equal(a, b):
    """a == b as a test TVM's simplifier cannot reason from. Where a partitioned loop's
    range bounds the index, it simplified the select's loaded value under its condition
    and dropped the clamp from the vector load, which then read past the tensor's ends
    (a masked copy's rows of 16 where the input starts or ends). It does not reason from
    a bitwise xor."""
    return tirx.bitwise_xor(a, b) == 0


def clamped(index, size: int):
    return te.max(te.min(index, size - 1), 0)


def planes_at(planes, b, c, phase, flat):
    """Pixel `flat` of a phase plane counted across its rows. Flattening the buffer merges
    (flat // pitch) * pitch + flat % pitch back into `flat`: the loads stay contiguous."""
    pitch = int(planes.shape[-1])
    return planes[b, c, phase, flat // pitch, flat % pitch]


def interior_columns(g: PlaneGeometry, width: int) -> tuple[int, int]:
    """The columns [first, end) of a phase row that hold input pixels in every column
    phase: the copy's schedule splits the row there, so this middle part is a run of
    contiguous loads with no border test (the tests kept the whole copy scalar). Unused for
    a masked plane, whose copy is one contiguous run."""
    sw, left = g.strides[1], g.padding[1]
    if g.aligned:
        return 0, min(-(-(width - pw) // sw) for pw in range(g.phase_cols))
    firsts = [max(0, -((pw - left) // sw)) for pw in range(g.phase_cols)]
    ends = [min(g.pitch, -(-(width + left - pw) // sw)) for pw in range(g.phase_cols)]
    first = max(firsts)
    return first, max(first, min(ends))


def depthwise_conv2d_nchw_planes(data, kernel, geometry: PlaneGeometry, out_dtype):
    """Depthwise NCHW conv, (C, 1, KH, KW) weights -> (N, C, OH, OW)."""
    n, channels = (int(d) for d in data.shape[:2])
    kh_size, kw_size = (int(d) for d in kernel.shape[2:])
    planes = phase_planes(data, geometry)
    kh = te.reduce_axis((0, kh_size), name="kh")
    kw = te.reduce_axis((0, kw_size), name="kw")
    phase, offset = geometry.tap(kh, kw)

    def product(b, c, q):
        value = planes_at(planes, b, c, phase, q + offset).astype(out_dtype)
        if geometry.masked:
            value = tirx.Select(_in_row(geometry, q, kw), value, te.const(0, out_dtype))
        return value * kernel[c, 0, kh, kw].astype(out_dtype)

    accumulated = te.compute(
        (n, channels, geometry.length),
        lambda b, c, q: te.sum(product(b, c, q), axis=[kh, kw]),
        name="depthwise_conv2d_nchw_planes", attrs=geometry.attrs,
    )
    return te.compute((n, channels, geometry.out_h, geometry.out_w),
                      lambda b, c, y, x: accumulated[b, c, y * geometry.pitch + x],
                      name="plane_crop")


def _in_row(g: PlaneGeometry, q, kw):
    """Whether tap column kw of a masked plane's output pixel q falls inside its row; where
    not, the pixel it reads is the neighbouring row's end or start. The tile's pixels are
    constants once unrolled, so LLVM folds the test into a constant lane mask (a vandps of
    the loaded taps with a constant, off the FMA ports). It was a multiply by a (kw, pixel)
    mask tensor: a multiply on the FMA ports per tap and vector, and 0 x an infinite
    neighbour is NaN, which a fused ReLU turned into 0 (a wrong output; the select gives
    the right one). Timed alone, one conv did not tell the two apart (576 channels at 7x7,
    5x5, one thread: 36.3 us with the multiply, 32.7-39.8 without in two interleaved runs;
    removing the copy's gathers took it from 58.5 to 36.3)."""
    column = q % g.pitch + kw * g.dilation[1] - g.padding[1]
    return tirx.all(column >= 0, column < g.out_w)
