"""The schedule of NHWC INT8 convs on AMX tiles (edgec.codegen.amx): the tile loops, the
tensorized tile, and the permission every AMX kernel asks Linux for on entry."""

from __future__ import annotations

from tvm import s_tir, tirx

from edgec.codegen import amx
from edgec.codegen.conv_epilogue import schedule_epilogue
from edgec.codegen.generic_schedule import extent, root_blocks
from edgec.codegen.schedules import parallel_tasks

_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def schedule_amx(sch: s_tir.Schedule, conv, epilogue: list, loops: list,
                 rows_first: bool | None) -> None:
    """An NHWC INT8 conv on AMX tiles (edgec.codegen.amx): each task's tiles of rows x
    pixels x 32 channels sum their whole reduction in tile registers; the epilogue
    requantizes each tile from the int32 values the intrinsic stored."""
    batch, chunk, row, col, lane, icc, kh, kw, ic4, ici = loops
    rows = amx.tile_rows(extent(sch, row))
    pixels = amx.tile_pixels(extent(sch, col))
    col_outer, col_inner = sch.split(col, [None, pixels])
    if rows > 1:
        row, row_inner = sch.split(row, [None, rows])
        tile = [row_inner, col_inner]
    else:  # no loop of one row: the intrinsic's description has none either
        tile = [col_inner]
    sch.reorder(row, col_outer, *tile, lane, icc, kh, kw, ic4, ici)
    parallel_tasks(sch, conv, batch, chunk, row, rows_first)
    schedule_epilogue(sch, conv, epilogue, col_outer, unroll_tile=False)
    annotations = sch.get(conv).annotations
    intrinsic = amx.conv_tile(rows, pixels, extent(sch, icc), (extent(sch, kh), extent(sch, kw)),
                              tuple(int(s) for s in annotations["edgec_strides"]),
                              tuple(int(d) for d in annotations["edgec_dilation"]))
    init = sch.decompose_reduction(conv, tile[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(tile[0], intrinsic)


def on_amx_tiles(func: tirx.PrimFunc) -> bool:
    """A conv computed for the AMX tile (unscheduled): its tile is fixed, nothing to tune
    (and a generic schedule of it would be far slower)."""
    sch = s_tir.Schedule(func)
    return any(str(sch.get(block).annotations.get("edgec_dot", "")) == "amx"
               for block in root_blocks(sch))


def uses_amx(sch: s_tir.Schedule) -> bool:
    """Whether `sch` tensorized a block with an AMX tile intrinsic (edgec.codegen.amx)."""
    return any(inst.kind.name == "Tensorize" and str(inst.attrs[0]).startswith("edgec_amx")
               for inst in sch.trace.insts)


def with_permission(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` asking Linux for the AMX tile state first (arch_prctl ARCH_REQ_XCOMP_PERM,
    XFEATURE_XTILEDATA; a no-op once granted, ~0.1 us): without it the first tile
    instruction kills the process with SIGILL."""
    args = [tirx.const(v, "int64")
            for v in (_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)]
    ask = tirx.Evaluate(tirx.call_extern("int64", "syscall", *args))
    realize = func.body
    root = realize.block
    body = tirx.SeqStmt([ask, root.body])
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                         root.init, root.alloc_buffers, root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))
