"""Layout stage: convert conv layers to NCHW, NHWC or packed NCHW{b}c for a target."""

from __future__ import annotations

import re

from edgec.errors import ConfigError, did_you_mean
from edgec.model import Model
from edgec.targets import LAYOUTS, Target

CHOICES = ("auto", *LAYOUTS)


def resolve(layout: str, target: Target, ir=None) -> str:
    """The concrete layout for a --layout choice: "auto" takes the target's default and
    "NCHWc" gets its block from the target's vector width (NCHW8c on AVX2, NCHW4c on NEON),
    narrowed for `ir` (a Relax module) by `choose_block`.

    Raises:
        ConfigError: unknown layout name.
    """
    if layout not in CHOICES:
        raise ConfigError(
            f'unknown layout "{layout}"{did_you_mean(layout, CHOICES)}; '
            f'use one of {", ".join(CHOICES)}'
        )
    if layout == "auto":
        layout = target.default_layout
    if layout != "NCHWc":
        return layout
    block = target.nchwc_block if ir is None else choose_block(ir, target.nchwc_block)
    return f"NCHW{block}c"


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
    candidates = [b for b in (widest, widest // 2, widest // 4) if b >= 4] or [widest]
    convs = _convs(ir)

    def packed_macs(block: int) -> int:
        return sum(macs for macs, inputs, outputs, per_group in convs
                   if outputs % block == 0 and (inputs % block == 0 or inputs < block)
                   and (per_group % block == 0 or per_group == 1 or inputs < block))

    # Narrowing halves the vector width of every layer, so it must pay: a UNet's 4-class
    # output conv (under 1% of the MACs) is no reason to run the rest at half width.
    packed = {b: packed_macs(b) for b in candidates}
    return next(b for b in candidates if packed[b] >= 0.98 * max(packed.values()))


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


def _desired_layouts(layout: str) -> dict[str, list[str]]:
    # TOPI lowers transposed convs only in NCHW/IOHW, and left alone ConvertLayout crashes
    # trying to give them the 5-D packed layout of their producer.
    keep = {"relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
    if layout == "NHWC":
        return {"relax.nn.conv2d": ["NHWC", "OHWI"], **keep}
    block = layout[len("NCHW"):-1]
    # OIHW{b}o works for regular and depthwise convs alike (edgec.kernels lowers it).
    return {"relax.nn.conv2d": [layout, f"OIHW{block}o"], **keep}


def apply_layout(model: Model, layout: str, target: Target) -> Model:
    """Convert the model's convolutions to `layout` (a --layout choice) for `target`.

    Layout transforms are inserted only at the borders of converted regions and folded into
    the weights where they apply to constants.

    Returns:
        The model with `layout` set and "layout:<layout>" recorded.
    """
    from tvm import relax

    ir = relax.transform.DecomposeOpsForInference()(model.ir)
    concrete = resolve(layout, target, ir)
    if concrete != "NCHW":
        ir = relax.transform.ConvertLayout(_desired_layouts(concrete))(ir)
    ir = relax.transform.FoldConstant()(relax.transform.CanonicalizeBindings()(ir))
    if block_of(concrete):
        from edgec.stem_layout import pack_stem_outputs

        ir = pack_stem_outputs(ir, concrete)
    return model.evolve(f"layout:{concrete}", ir=ir, layout=concrete)


def count_layout_transforms(ir) -> int:
    """How many layout_transform / permute_dims calls on activations remain in main."""
    import tvm
    from tvm import relax

    count = 0

    def visit(expr) -> None:
        nonlocal count
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") in (
            "relax.layout_transform",
            "relax.permute_dims",
        ):
            if not isinstance(expr.args[0], tvm.ir.Constant):
                count += 1

    relax.analysis.post_order_visit(ir["main"], visit)
    return count
