"""Layout stage: convert conv layers to NCHW, NHWC or packed NCHW{b}c for a target."""

from __future__ import annotations

from edgec.errors import ConfigError, did_you_mean
from edgec.layout.blocks import block_of, choose_block, largest_grouped_sum, poorly_packed_block
from edgec.layout.nhwc_regions import keep_nhwc
from edgec.layout.scalar_operands import scalarize_single_values
from edgec.layout.stems import pack_stem_outputs, read_nchw_images
from edgec.layout.transposed_convs import as_pointwise_convs
from edgec.model import Model
from edgec.targets import LAYOUTS, Target
from edgec.tvm_compat.constant_layouts import fold_constant_layouts

# "default": the target's default layout; "auto": chosen by measuring the candidates
# (edgec.layout.by_measurement, which the pipeline runs; here it stands for the default).
CHOICES = ("default", "auto", *LAYOUTS)


def resolve(layout: str, target: Target, ir=None, quantized: str | None = None) -> str:
    """The concrete layout for a --layout choice (see resolve_why)."""
    return resolve_why(layout, target, ir, quantized)[0]


def resolve_why(layout: str, target: Target, ir=None,
                quantized: str | None = None) -> tuple[str, str]:
    """The concrete layout for a --layout choice: "default" (and "auto", until measured)
    take the target's default and "NCHWc" gets its block from the target's vector width
    (NCHW8c on AVX2, NCHW4c on NEON), narrowed for `ir` (a Relax module) by
    `choose_block`. A concrete packed layout ("NCHW4c") is taken as it is. A float model
    whose channel counts the packed layout serves badly (`poorly_packed_block`) defaults to NHWC;
    a `quantized` one ("int8", "fp16") is packed whatever the target's default, as its
    float16 and NEON 8-bit kernels are, except INT8 on x86 (`_int8_in_nhwc`).

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
        if quantized == "int8" and _int8_in_nhwc(target, ir):
            return "NHWC", ("INT8 on x86: edgec's NHWC INT8 kernels ran at packed speed or "
                            "faster")
        if quantized:
            layout = "NCHWc"  # the float16 and NEON 8-bit kernels are packed-layout ones
            why = f"{quantized.upper()} kernels on {target.cpu.arch} are packed-layout ones"
        elif layout == "NCHWc" and ir is not None:
            poor = poorly_packed_block(ir, widest)
            if poor:
                return "NHWC", (f"not {target.name}'s packed default: the model's channel "
                                f"counts fit NCHW{poor}c badly")
    if layout != "NCHWc":
        return layout, why
    block = widest if ir is None else choose_block(ir, widest)
    return f"NCHW{block}c", why


def _int8_in_nhwc(target: Target, ir) -> bool:
    """Whether an INT8 model defaults to NHWC: on x86 (every x86 target has a dot product),
    where dense 8-bit convs run on it in NHWC and the others (depthwise, grouped) sum
    exactly in float, unless a grouped conv sums more terms than float holds exactly
    (`largest_grouped_sum`). NHWC INT8 against packed INT8, interleaved, this Xeon, 2 threads:
    ShuffleNetV2 0.41 (NCHW4c, the only block its 116 channels take, left its 58-channel
    stage unpacked and the rest on 4-lane vectors), MobileNetV2 0.76, MobileNetV3-Small
    0.85, ResNet-50 0.96, MobileNetV1 and ResNet-18 1.01 (x86_64-avx512-vnni); MobileNetV2
    0.84 and 0.92, ResNet-18 0.94 and 0.97 on x86_64-avx512 and x86_64 (AVX2 dots). NEON
    keeps the packed layout: nothing has measured NHWC INT8 there."""
    if target.cpu.arch != "x86_64" or target.cpu.int8_dot is None:
        return False
    from edgec.codegen.kernels import MAX_FLOAT_EXACT_TERMS  # imports TVM

    return ir is None or largest_grouped_sum(ir) <= MAX_FLOAT_EXACT_TERMS


def expected_cost_warning(layout: str, mode: str | None, target: Target) -> str | None:
    """What a slow layout choice costs, measured (README "Layouts"), or None when the layout
    runs at the packed layout's speed. NHWC float convs do (0.48-1.03x of packed on the ten
    zoo models, x86, bench/layouts.py); NCHW ones up to 1.5x slower (1.26-1.36x on a Zen 1
    with AVX2 on the depthwise models; on an Emerald Rapids Xeon, 2026-12-06, in one
    process: 0.66-1.24x with AVX-512, 0.79-1.50x with AVX2 code, SqueezeNet the 1.50, its
    pools scalar then; with AVX2 code on an Ice Lake Xeon, 2026-12-07, after NCHW Winograd
    from 32 channels and the packed copy of 256+ channel inputs: 0.78-1.37x, MobileNetV3-
    Small the 1.37, its depthwise convs).
    INT8 convs in NHWC run on the dot product (dense) and exact float sums (the others) on
    a CPU with one (0.41-1.01x of packed on six zoo models, x86_64-avx512-vnni); float16
    convs have kernels only in the packed layout. `mode`: the quantization mode (int8,
    fp16) or None."""
    fast_int8 = mode == "int8" and layout == "NHWC" and target.cpu.int8_dot is not None
    if mode and layout in ("NCHW", "NHWC") and not fast_int8:
        return (f"{mode.upper()} convs in {layout} run on TVM's generic kernels or in float, "
                "no faster than FP32; edgec's kernels for them need the packed layout "
                "(--layout NCHWc, or the default)")
    if layout == "NCHW":
        return ("NCHW builds ran up to 1.5x slower than the packed layout on the zoo models "
                "(up to 1.24x with AVX-512 on an Emerald Rapids Xeon; with AVX2 code 1.37x on "
                "an Ice Lake Xeon, 1.36x on a Zen 1; x86, bench/layouts.py); --layout NHWC "
                "or the default run at packed speed or faster")
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
    ir = scalarize_single_values(ir)  # before ConvertLayout, which cannot lay them out
    concrete, why = resolve_why(layout, target, ir, model.quantization)
    if concrete != "NCHW":
        ir = relax.transform.ConvertLayout(_desired_layouts(concrete))(ir)
    if concrete == "NHWC":
        ir = keep_nhwc(ir)
    ir = fold_constant_layouts(relax.transform.CanonicalizeBindings()(ir))
    ir = relax.transform.FoldConstant()(ir)
    if concrete == "NHWC":  # after the folds: the stems' weights are constants by then
        ir = read_nchw_images(ir)
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
