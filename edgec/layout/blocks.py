"""Channel blocks of packed layouts: parse "NCHW{b}c" and choose the block for a model."""

from __future__ import annotations

import re


def block_of(layout: str) -> int | None:
    """The channel block of a packed layout ("NCHW16c" -> 16), None for unpacked ones."""
    match = re.fullmatch(r"NCHW(\d+)c", layout)
    return int(match.group(1)) if match else None


def choose_block(ir, widest: int) -> int:
    """The channel block for this model: the widest of widest, widest/2, ... 4 that packs
    (nearly) the most conv MACs.

    ConvertLayout leaves a conv whose channels the block does not divide in NCHW, with a
    slow generic schedule and layout transforms around it: MobileNetV2's 24-channel layers
    cost more in NCHW on AVX-512 (block 16) than the whole model takes in NCHW8c. Stems
    (fewer input channels than the block) have their own kernel and do not count.
    """
    return _choose(_convs(ir), widest)


def _choose(convs: list, widest: int) -> int:
    """choose_block on the (MACs, inputs, outputs, per group) of a model's convs."""
    candidates = [b for b in (widest, widest // 2, widest // 4) if b >= 4] or [widest]
    # Narrowing halves the vector width of every layer, so it must pay: a UNet's 4-class
    # output conv (under 1% of the MACs) is no reason to run the rest at half width.
    packed = {b: _packed_macs(convs, b) for b in candidates}
    return next(b for b in candidates if packed[b] >= 0.98 * max(packed.values()))


def poorly_packed_block(ir, widest: int) -> int | None:
    """The block the packed layout would take for this float model when it serves the model
    badly, so that NHWC (which takes any channel count) is the better default; None when
    it serves it well. Badly: its block narrows to a quarter of the
    vector or less, or it leaves more than 5% of the conv MACs unpacked (NCHW, with layout
    transforms around them). ShuffleNetV2's 58- and 116-channel branches do both on
    AVX-512 (NCHW4c, its 58-channel stage unpacked): packed took 3.80 ms there, NHWC 2.42
    (x86_64-avx512-vnni, this Xeon, side by side). MobileNetV2's NCHW8c on AVX-512 packs
    everything and stays: NHWC measured 1.03x of it."""
    convs = _convs(ir)
    total = sum(macs for macs, *_ in convs)
    if not total:
        return None
    block = _choose(convs, widest)
    poor = block * 4 <= widest or _packed_macs(convs, block) < 0.95 * total
    return block if poor else None


def largest_grouped_sum(ir) -> int:
    """Terms per output (input channels per group x kernel taps) of the model's largest
    grouped or depthwise NCHW conv: 8-bit ones of up to
    edgec.codegen.kernels.MAX_FLOAT_EXACT_TERMS sum exactly in float on the plain layouts'
    kernels (dense ones run on the dot product)."""
    from tvm import relax

    largest = 0

    def visit(expr) -> None:
        nonlocal largest
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            if (expr.attrs.data_layout == "NCHW" and expr.attrs.kernel_layout == "OIHW"
                    and int(expr.attrs.groups) > 1):
                _, per_group, height, width = (int(d) for d in expr.args[1].ty.shape)
                largest = max(largest, per_group * height * width)

    relax.analysis.post_order_visit(ir["main"], visit)
    return largest


def _packed_macs(convs: list, block: int) -> int:
    """MACs of the convs NCHW{block}c packs (stems, with fewer inputs than the block, too)."""
    return sum(macs for macs, inputs, outputs, per_group in convs
               if outputs % block == 0 and (inputs % block == 0 or inputs < block)
               and (per_group % block == 0 or per_group == 1 or inputs < block))


def _convs(ir) -> list[tuple[int, int, int, int]]:
    """(MACs, input channels, output channels, input channels per group) of each NCHW conv2d
    in main."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            if expr.attrs.data_layout != "NCHW":
                return
            out = [int(d) for d in expr.ty.shape]
            weight = [int(d) for d in expr.args[1].ty.shape]
            inputs = int(expr.args[0].ty.shape[1])
            macs = out[0] * out[1] * out[2] * out[3] * weight[1] * weight[2] * weight[3]
            found.append((macs, inputs, out[1], weight[1]))

    relax.analysis.post_order_visit(ir["main"], visit)
    return found
