"""Layout stage: convert conv layers to NCHW, NHWC or packed NCHW{b}c for a target."""

from __future__ import annotations

from edgec.errors import ConfigError, did_you_mean
from edgec.layout.blocks import block_of, choose_block, poorly_packed_block
from edgec.layout.nhwc_regions import keep_nhwc
from edgec.layout.stems import pack_stem_outputs
from edgec.layout.transposed_convs import as_pointwise_convs
from edgec.model import Model
from edgec.targets import LAYOUTS, Target

# "default": the target's default layout; "auto": chosen by measuring the candidates
# (edgec.layout.by_measurement, which the pipeline runs; here it stands for the default).
CHOICES = ("default", "auto", *LAYOUTS)


def resolve(layout: str, target: Target, ir=None, quantized: bool = False) -> str:
    """The concrete layout for a --layout choice (see resolve_why)."""
    return resolve_why(layout, target, ir, quantized)[0]


def resolve_why(layout: str, target: Target, ir=None,
                quantized: bool = False) -> tuple[str, str]:
    """The concrete layout for a --layout choice: "default" (and "auto", until measured)
    take the target's default and "NCHWc" gets its block from the target's vector width
    (NCHW8c on AVX2, NCHW4c on NEON), narrowed for `ir` (a Relax module) by
    `choose_block`. A concrete packed layout ("NCHW4c") is taken as it is. A float model
    whose channel counts the packed layout serves badly (`poorly_packed_block`) defaults to NHWC;
    a `quantized` one is packed whatever the target's default, as its 8-bit kernels are.

    Returns:
        (layout, why): why is what the compile report says of a default choice ("" for a
        layout asked for by name).

    Raises:
        ConfigError: unknown layout name.
    """
    if block_of(layout):
        return layout, ""
    if layout not in CHOICES:
        raise ConfigError(
            f'unknown layout "{layout}"{did_you_mean(layout, CHOICES)}; '
            f'use one of {", ".join(CHOICES)}'
        )
    widest = target.cpu.nchwc_block
    why = ""
    if layout in ("default", "auto"):
        layout = target.default_layout
        why = f"{target.name}'s default"
        if layout != "NCHWc" and not quantized:
            why += " for float models"
        if quantized:
            layout = "NCHWc"  # the 8-bit (and float16) kernels are packed-layout ones
            why = "INT8 and FP16 kernels are packed-layout ones"
        elif layout == "NCHWc" and ir is not None:
            poor = poorly_packed_block(ir, widest)
            if poor:
                return "NHWC", (f"not {target.name}'s packed default: the model's channel "
                                f"counts fit NCHW{poor}c badly")
    if layout != "NCHWc":
        return layout, why
    block = widest if ir is None else choose_block(ir, widest)
    return f"NCHW{block}c", why


def expected_cost_warning(layout: str, mode: str | None) -> str | None:
    """What a slow layout choice costs, measured (README "Layouts"), or None when the layout
    runs at the packed layout's speed. NHWC float convs do (0.48-1.03x of packed on the ten
    zoo models, x86, bench/layouts.py); NCHW ones are 1.2-1.8x slower on eight of them, and
    8-bit convs have dot-product (and float16) kernels only in the packed layout. `mode`:
    the quantization mode (int8, fp16) or None."""
    if mode and layout in ("NCHW", "NHWC"):
        return (f"{mode.upper()} convs in {layout} run on TVM's generic kernels, no faster "
                "than FP32; edgec's kernels for them need the packed layout (--layout NCHWc, "
                "or the default, which packs INT8 and FP16 builds)")
    if layout == "NCHW":
        return ("NCHW builds ran 1.2-1.8x slower than the packed layout on most zoo models "
                "(x86, bench/layouts.py); --layout NHWC or the default run at packed speed "
                "or faster")
    return None


def _desired_layouts(layout: str) -> dict[str, list[str]]:
    # TOPI lowers transposed convs only in NCHW/IOHW, and left alone ConvertLayout crashes
    # trying to give them the 5-D packed layout of their producer.
    keep = {"relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
    if layout == "NHWC":
        return {"relax.nn.conv2d": ["NHWC", "OHWI"], **keep}
    block = layout[len("NCHW"):-1]
    # OIHW{b}o works for regular and depthwise convs alike (edgec.codegen.kernels lowers it).
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
    ir = as_pointwise_convs(ir)  # before ConvertLayout, so the 1x1 convs get packed too
    concrete, why = resolve_why(layout, target, ir, model.quantization is not None)
    if concrete != "NCHW":
        ir = relax.transform.ConvertLayout(_desired_layouts(concrete))(ir)
    if concrete == "NHWC":
        ir = keep_nhwc(ir)
    ir = relax.transform.FoldConstant()(relax.transform.CanonicalizeBindings()(ir))
    if block_of(concrete):
        ir = pack_stem_outputs(ir, concrete)
    return model.evolve(f"layout:{concrete}", ir=ir, layout=concrete, layout_why=why)


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
