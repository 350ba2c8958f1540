"""Weight packs emitted into a Relax graph: done at compile time when the weight is a
constant (every imported model's are), else as a TE function the graph runs.

Constant packs are evaluated in numpy (tvm_compat.te_gather): Relax's FoldConstant compiled
one LLVM function per pack shape instead, 13 s of an INT8 MobileNetV2 compile on a Zen 1.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, te

from edgec.tvm_compat import te_gather


def emit_weight_pack(bb: relax.BlockBuilder, pack: Callable, weight: relax.Expr, *args,
                     name: str) -> relax.Expr:
    """pack(weight, *args): a constant when `weight` is one (and the pack a gather, as all
    of edgec's are), else a call of the TE function `name`."""
    if isinstance(weight, tvm.ir.Constant):
        value = weight.value.numpy()
        placeholder = te.placeholder(value.shape, str(value.dtype), name="weight")
        packed = te_gather.evaluate(pack(placeholder, *args), {placeholder: value})
        if packed is not None:
            return relax.const(packed)
    return bb.emit_te(pack, weight, *args, primfunc_name_hint=name)
