"""Register tiles for rows that no good tile length divides.

PackedConv's float tile is a row of up to 8 output pixels x one vector of channels, the
largest divisor of the row's width up to 8. SqueezeNet's rows are 55, 27 and 13 pixels:
divisors 5, 3 and 1, so its 13x13 convs ran tiles of one accumulator, each FMA waiting on
the one before (the 512 -> 1000 classifier conv: 2.43 ms, half of the model, Zen 5).
Here the row gets tiles of a balanced length (13: 7 + 6, 27: 7 + 7 + 7 + 6, 55: 6 x 8 + 7),
the last one a loop partition of its own with the same register tile, and the epilogue
runs over the task's row after the conv, while it is in cache.
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from edgec.codegen.conv_epilogue import epilogue_over_the_row
from edgec.codegen.generic_schedule import elements, extent, row_length

# A divisor this far below the longest tile leaves the FMA units waiting (Zen 5 and
# Cortex-A76 alike need about 8 independent accumulators to keep two FMA pipes busy).
_GOOD_ENOUGH = 0.75


def balanced_length(sch: s_tir.Schedule, conv, col, longest: int) -> int | None:
    """The tile length for the row loop `col` of block `conv` when its best divisor up to
    `longest` is poor (a tail tile takes the rest); None when row_length's divisor is good
    enough, nothing is gained, or TVM cannot partition this loop."""
    width = extent(sch, col) or 1
    if width <= longest or row_length(width, longest) >= _GOOD_ENOUGH * longest:
        return None
    tiles = -(-width // longest)
    length = -(-width // tiles)
    if width % length == 0 and length <= row_length(width, longest):
        return None
    # Tried first on a deep copy of the module (nothing shared with the real schedule):
    # TVM 0.27's loop_partition gives some reads a region of another buffer's rank (a 1x1
    # conv of 6 channels into 8-lane tiles) and fails midway.
    trial = s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(sch.mod)))
    index = [sch.get(loop).same_as(sch.get(col)) for loop in sch.get_loops(conv)].index(True)
    try:
        loops = trial.get_loops(trial.get_sblock(sch.get(conv).name_hint))
        trial.loop_partition(loops[index], [width // length * length, None])
    except tvm.error.InternalError:
        return None
    return length


def schedule_row_parts(sch: s_tir.Schedule, conv, epilogue: list, task, col,
                       reduction_order: list[int], length: int) -> None:
    """PackedConv's register tile on a row partitioned into whole tiles of `length` and
    its tail. The conv's loops are (task, col, lane, *reduction): `task` the parallel loop
    over (batch, channel chunk, row); `reduction_order` the positions in `reduction` of the
    loops in the order the tile runs them (the tile's own loops go innermost)."""
    # The epilogue goes to the task loop before the partition: moved there after it, the
    # parts' results came out wrong (SqueezeNet against ONNX Runtime: cosine 0.53).
    epilogue_over_the_row(sch, elements(sch, conv), epilogue, task)
    name, variable = sch.get(conv).name_hint, sch.get(col).loop_var.name
    sch.loop_partition(col, [extent(sch, col) // length * length, None])
    for part in (0, 1):  # TVM names the parts after the block and the loop variable
        block = sch.get_sblock(f"{name}_{variable}{part}")
        col, lane, *reduction = sch.get_loops(block)  # below the partition's own blocks
        reduction = [reduction[i] for i in reduction_order]
        outer = []
        if extent(sch, col) > length:
            col_outer, col = sch.split(col, [None, length])
            outer = [col_outer]
        sch.reorder(*outer, *reduction, col, lane)
        sch.unroll(col)
        sch.vectorize(lane)
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])
