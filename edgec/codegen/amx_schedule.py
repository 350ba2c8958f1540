"""The schedule of NHWC INT8 convs on AMX tiles (edgec.codegen.amx): the tile loops, the
tensorized tile, and the tile state every AMX kernel asks Linux for on entry and each of its
parallel tasks configures (with_tile_state)."""

from __future__ import annotations

from tvm import s_tir, tirx

from edgec.codegen import amx
from edgec.codegen.conv_epilogue import pass_by_tile, schedule_epilogue
from edgec.codegen.conv_tasks import parallel_tasks
from edgec.codegen.generic_schedule import ParallelVectorize, extent, root_blocks
from edgec.codegen.plain_kernels import FLAT_PIXELS

_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18
# The annotation of an AMX conv's parallel task loop: its tiles' height in pixels.
TASK_TILE_PIXELS = "edgec_amx_tile_pixels"


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
    task = parallel_tasks(sch, conv, batch, chunk, row, rows_first)
    sch.annotate(task, TASK_TILE_PIXELS, pixels)  # with_tile_state configures its tiles
    if FLAT_PIXELS in sch.get(conv).annotations:
        # Tiles of a flat plane span rows, which the epilogue's (row, column) loops cannot
        # follow (computed at the task, TVM bounded a 7x7 plane's 52 flat pixels as 7 rows
        # of 3 columns): it is a pass of its own over the plane, in cache (7x7x2048 int32
        # accumulators: 400 KB).
        if epilogue and not pass_by_tile(sch, epilogue[-1], amx.OUTPUT_CHANNELS):
            ParallelVectorize.schedule_block(sch, epilogue[-1])
    else:
        schedule_epilogue(sch, conv, epilogue, col_outer, unroll_tile=False)
    annotations = sch.get(conv).annotations
    intrinsic = amx.conv_tile(rows, pixels, extent(sch, icc), (extent(sch, kh), extent(sch, kw)),
                              tuple(int(s) for s in annotations["edgec_strides"]),
                              tuple(int(d) for d in annotations["edgec_dilation"]))
    # The init zeroes the accumulator tiles in place (tilezero) instead of storing zeros for
    # the update to load: with the tile configuration loaded once per thread and kernel
    # instead of per tile (with_tile_state), ResNet-50 INT8 ran 0.88x (this Xeon, 2 threads,
    # bench/ab.py, 7 rounds).
    init = sch.decompose_reduction(conv, tile[0])
    sch.tensorize(sch.get_loops(init)[-len(tile) - 1], amx.zero_tile(rows, pixels))
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


def with_tile_state(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """The scheduled function asking Linux for the tile state on entry (arch_prctl
    ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; a no-op once granted, ~0.1 us: without it the
    first tile instruction kills the process with SIGILL), and each parallel task holding
    this kernel's tile configuration.

    A task reads the thread's configuration (sttilecfg, cheap) and loads its own only where
    it differs (ldtilecfg: ~300 ns, as long as a 1x1 64 -> 64 tile's whole work on this Xeon
    VM; see schedule_amx for what loading it per tile cost). It leaves its configuration
    for the next task, unless it displaced one that is not edgec's: that it gives back, since
    ONNX Runtime's MLAS configures its tiles once per thread and dies (SIGILL) on finding
    another configuration, as it did in compile's check. It never releases the tile state
    (tilerelease): releasing after each task made every task reload, ResNet-50 INT8 1.08x
    slower (this Xeon, 2 threads, bench/ab.py, 9 rounds). A thread holding tile state costs
    8 KB more to save at a context switch, and its core the deepest idle states."""
    func = sch.mod["main"]
    args = [tirx.const(v, "int64")
            for v in (_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)]
    ask = tirx.Evaluate(tirx.call_extern("int64", "syscall", *args))
    held = tirx.decl_buffer((8,), "int64", name="held_tile_config", scope="local")
    wanted = tirx.decl_buffer((8,), "int64", name="tile_config", scope="local")
    realize = func.body
    root = realize.block
    configured = []
    body = tirx.SeqStmt([ask, _configuring_tasks(root.body, held, wanted, configured)])
    if not configured:  # tiles outside a parallel task would run unconfigured: SIGILL
        raise RuntimeError("edgec's AMX conv schedule left no parallel task around its "
                           "tiles; this is a bug in edgec, please report it")
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                         root.init, [*root.alloc_buffers, held, wanted], root.match_buffers,
                         root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))


def _configuring_tasks(stmt, held, wanted, configured: list):
    """`stmt` with each top-level parallel task schedule_amx annotated configuring its tiles
    first (each one appended to `configured`)."""
    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([_configuring_tasks(part, held, wanted, configured)
                             for part in stmt.seq])
    if not (isinstance(stmt, tirx.For) and TASK_TILE_PIXELS in stmt.annotations):
        return stmt
    ours = amx.tile_config(int(stmt.annotations[TASK_TILE_PIXELS]))
    rows_word = 6  # the word of the tiles' row counts: the one word edgec's kernels vary

    def tile_call(name, buffer):
        return tirx.Evaluate(tirx.call_llvm_intrin("void", f"llvm.x86.{name}",
                                                   tirx.address_of(buffer[0])))

    def held_is(i, word):
        return tirx.EQ(held[i], tirx.const(word, "int64"))

    differs = tirx.Not(tirx.all(*[held_is(i, w) for i, w in enumerate(ours)]))
    edgecs = tirx.And(
        tirx.all(*[held_is(i, w) for i, w in enumerate(ours) if i != rows_word]),
        tirx.any(*[held_is(rows_word, amx.tile_config(pixels)[rows_word])
                   for pixels in range(1, amx.MAX_PIXELS + 1)]))
    foreign = tirx.And(tirx.NE(held[0], tirx.const(0, "int64")), tirx.Not(edgecs))
    fill = [tirx.BufferStore(wanted, tirx.const(w, "int64"), [i]) for i, w in enumerate(ours)]
    load = tirx.IfThenElse(differs, tirx.SeqStmt([*fill, tile_call("ldtilecfg", wanted)]), None)
    give_back = tirx.IfThenElse(tirx.And(differs, foreign), tile_call("ldtilecfg", held), None)
    body = tirx.SeqStmt([tile_call("sttilecfg", held), load, stmt.body, give_back])
    configured.append(stmt.loop_var)
    return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                    stmt.annotations)
