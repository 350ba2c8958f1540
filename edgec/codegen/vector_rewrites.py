"""Whole-vector rewrites of flat-plane NCHW depthwise convs (edgec.codegen.nchw_planes) that
TVM 0.27 has no schedule primitive for. PlaneConv marks a loop (mark_deinterleave,
mark_overlapping_rows) and edgec.build.lower rewrites the scheduled module (rewrite_module),
whether a default schedule or a tuning record scheduled it: the marked loop's block keeps
its iter vars and their meaning, with new bindings or body. (MetaSchedule's builder times
tuning candidates without the rewrite.)

Deinterleaving: a depthwise conv of stride 2 first splits each input row into its two
column phases, the even and the odd pixels. TVM's vectorizer reads a phase at stride 2
lane by lane; left to LLVM, the copy loaded each phase on its own as a masked vector of
every other lane plus a permute, 8 pixels at a time: 64% of the time of MobileNetV3-Small's
72-channel 56x56 -> 28x28 conv (perf, one thread, AVX-512 Ice Lake), against 24% for its
multiply-adds. Each piece of a row's inner columns (no border test) now loads 2 x lanes
contiguous pixels once and stores their even and odd lanes as one vector each (two
shufflevectors: vpermt2ps on AVX-512, uzp1/uzp2 on NEON).

Overlapping rows: the crop of an accumulated plane (rows at a pitch) into the output rows
ran each row of 14 pixels as a 14-lane vector, which LLVM splits into 8 + 4 + 2 (16-lane
reads of the accumulators spilled and reloaded as 8 and 4). A row that is not the last of
its task's block is now one whole vector of the next multiple of the lanes, reading the
accumulator's pitch padding and writing the next output row's first pixels, which that
row's own store overwrites next (a task's rows go in order; its last row stays exact, so
no store reaches a row another task writes).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir import Range, TensorLoad

_DEINTERLEAVE = "edgec_deinterleave_lanes"
_OVERLAPPING = "edgec_overlapping_rows"


def mark_deinterleave(sch: s_tir.Schedule, loop, lanes: int) -> None:
    """Copy the two column phases of this loop (the inner columns of a phase row, its
    column phases unrolled inside it) in `lanes`-pixel vectors."""
    sch.annotate(loop, _DEINTERLEAVE, lanes)


def mark_overlapping_rows(sch: s_tir.Schedule, loop, lanes: int, block_rows: int) -> None:
    """Store this vectorized output row (of a block of `block_rows` rows) as whole `lanes`
    vectors where it is not the last row of its block or of the plane."""
    sch.annotate(loop, _OVERLAPPING, [lanes, block_rows])


def rewrite_module(mod):
    """`mod` with every scheduled PrimFunc rewritten (rewrite)."""
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            rewritten = rewrite(func)
            if not rewritten.same_as(func):
                mod[gvar] = rewritten
    return mod


def rewrite(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with every marked loop rewritten (unchanged where none is marked, or where a
    loop is not what its rewrite expects: it then stays as scheduled)."""
    body = _rewritten(func.body)
    return func if body.same_as(func.body) else func.with_body(body)


def _rewritten(stmt):
    if isinstance(stmt, tirx.For):
        for mark, rewritten in ((_DEINTERLEAVE, _shuffled), (_OVERLAPPING, _overlapped)):
            if mark in stmt.annotations:
                return rewritten(stmt) or _unmarked(stmt)
        body = _rewritten(stmt.body)
        return stmt if body.same_as(stmt.body) else _loop(stmt, body)
    if isinstance(stmt, tirx.SeqStmt):
        parts = [_rewritten(part) for part in stmt.seq]
        changed = any(not new.same_as(old) for new, old in zip(parts, stmt.seq, strict=True))
        return tirx.SeqStmt(parts) if changed else stmt
    if isinstance(stmt, s_tir.SBlockRealize):
        block = stmt.block
        body = _rewritten(block.body)
        if body.same_as(block.body):
            return stmt
        return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate,
                                   _block(block, body, block.reads))
    return stmt


def _loop(loop: tirx.For, body, var=None, extent=None, annotations=None) -> tirx.For:
    return tirx.For(loop.loop_var if var is None else var, loop.min,
                    loop.extent if extent is None else extent, loop.kind, body,
                    loop.thread_binding, loop.annotations if annotations is None else annotations)


def _unmarked(loop: tirx.For) -> tirx.For:
    marks = (_DEINTERLEAVE, _OVERLAPPING)
    return _loop(loop, loop.body,
                 annotations={k: v for k, v in loop.annotations.items() if k not in marks})


def _block(block, body, reads):
    return s_tir.SBlock(block.iter_vars, reads, block.writes, block.name_hint, body,
                        block.init, block.alloc_buffers, block.match_buffers,
                        block.annotations)


def _shuffled(loop: tirx.For):
    """The copy loop as pieces of whole vectors, None where it is not the expected copy:
    for col in [first, end): for pw in 0, 1: planes[.., phase(pw), row, col] =
    Select(clamp(y) == y and clamp(x) == x, data[.., clamp(y), clamp(x)], 0), x the
    input column of (col, pw), both phases' x inside the row for every col of the loop."""
    lanes = int(loop.annotations[_DEINTERLEAVE])
    phases = loop.body
    if not (isinstance(phases, tirx.For) and int(phases.extent) == 2
            and isinstance(phases.body, s_tir.SBlockRealize)):
        return None
    realize, first, count = phases.body, int(loop.min), int(loop.extent)
    store = realize.block.body
    predicate = realize.predicate  # a guard would name the loops the rewrite removes
    if count < lanes or not isinstance(store, tirx.BufferStore) or not (
            isinstance(predicate, tirx.IntImm) and int(predicate) == 1):
        return None
    select = store.value
    if not (isinstance(select, tirx.Select) and isinstance(select.condition, tirx.And)
            and isinstance(select.true_value, TensorLoad)):
        return None
    row_inside, column_inside = select.condition.a, select.condition.b
    load = select.true_value
    if not (isinstance(row_inside, tirx.EQ) and isinstance(column_inside, tirx.EQ)):
        return None
    *outer, phase, row, col = store.indices
    if any(not isinstance(i, tirx.Var) for i in (phase, row, col)):
        return None
    even = _substitute(_binding(realize, phase), phases.loop_var, tirx.const(0, _dtype(phase)))
    if even is None:
        return None
    # The run of 2 x lanes input pixels from the even phase's column (the block's phase is
    # bound to the even one): its even lanes are phase pw = 0, its odd lanes pw = 1.
    wide = 2 * lanes
    run = tirx.BufferLoad(load.source, [*load.indices[:-1],
                                        tirx.Ramp(column_inside.b, _one(col), wide)])
    zero = tirx.Broadcast(tirx.const(0, str(store.buffer.dtype)), lanes)
    stores = [tirx.BufferStore(store.buffer,
                               tirx.Select(row_inside,
                                           tirx.Shuffle([run], list(range(pw, wide, 2))),
                                           zero),
                               [*outer, phase + pw, row, tirx.Ramp(col, _one(col), lanes)])
              for pw in (0, 1)]
    reads = [tirx.BufferRegion(load.source, [
        *(r for r in _point_ranges(load.indices[:-1])),
        Range.from_min_extent(column_inside.b, tirx.const(wide, _dtype(col)))])]
    block = _block(realize.block, tirx.SeqStmt(stores), reads)

    def piece(start):
        values = [even if iv.var.same_as(phase) else start if iv.var.same_as(col) else value
                  for iv, value in zip(realize.block.iter_vars, realize.iter_values,
                                       strict=True)]
        return s_tir.SBlockRealize(values, realize.predicate, block)

    index = _dtype(loop.loop_var)
    piece_var = tirx.Var("piece", index)
    whole = count // lanes
    parts = [tirx.For(piece_var, tirx.const(0, index), tirx.const(whole, index),
                      tirx.ForKind.SERIAL, piece(first + piece_var * lanes))]
    if count % lanes:  # the last piece ends with the row, overlapping the one before
        parts.append(piece(tirx.const(first + count - lanes, index)))
    return tirx.SeqStmt(parts) if len(parts) > 1 else parts[0]


def _overlapped(loop: tirx.For):
    """if the row is not its block's or the plane's last: the row as whole vectors of the
    next multiple of the lanes; else as scheduled. None where the loop is not a vectorized
    output row of one block over (.., y, x)."""
    lanes, block_rows = (int(v) for v in loop.annotations[_OVERLAPPING])
    width = int(loop.extent)
    wide = -(-width // lanes) * lanes
    realize = loop.body
    if (wide == width or wide >= 2 * width or int(loop.min) != 0
            or loop.kind != tirx.ForKind.VECTORIZED
            or not isinstance(realize, s_tir.SBlockRealize)
            or not isinstance(realize.block.body, tirx.BufferStore)):
        return None
    store = realize.block.body
    *_, row, col = store.indices
    if not (isinstance(row, tirx.Var) and isinstance(col, tirx.Var)):
        return None
    y, out_h = _binding(realize, row), int(store.buffer.shape[-2])
    index = _dtype(loop.loop_var)
    lane = tirx.Var(f"{loop.loop_var.name}_wide", index)
    values = [_substitute(value, loop.loop_var, lane) for value in realize.iter_values]
    predicate = _substitute(realize.predicate, loop.loop_var, lane)
    if y is None or predicate is None or any(value is None for value in values):
        return None
    # Not the plane's last row, nor its block's (rows y of a block: y % block_rows).
    inside = tirx.And(y < out_h - 1,
                      tirx.FloorMod(y, tirx.const(block_rows, index)) < block_rows - 1)
    exact = _unmarked(loop)
    whole = _loop(exact, s_tir.SBlockRealize(values, predicate, realize.block), var=lane,
                  extent=tirx.const(wide, index))
    return tirx.IfThenElse(inside, whole, exact)


def _binding(realize, var):
    """The value the block realize binds its iter var `var` to, None if not one of them."""
    return next((value for iv, value in zip(realize.block.iter_vars, realize.iter_values,
                                            strict=True) if iv.var.same_as(var)), None)


def _dtype(expr) -> str:
    return str(expr.ty)


def _one(var):
    return tirx.const(1, _dtype(var))


def _point_ranges(indices):
    return [Range.from_min_extent(i, tirx.const(1, _dtype(i))) for i in indices]


_BINARY = (tirx.Add, tirx.Sub, tirx.Mul, tirx.FloorDiv, tirx.FloorMod, tirx.Min, tirx.Max,
           tirx.LT, tirx.LE, tirx.GT, tirx.GE, tirx.EQ, tirx.NE, tirx.And, tirx.Or)


def _substitute(expr, var, value):
    """expr (a block binding or predicate: vars, constants and arithmetic or comparisons)
    with var replaced by value; None for any other node (the rewrite then leaves the loop
    alone)."""
    if expr is None:
        return None
    if isinstance(expr, tirx.Var):
        return value if expr.same_as(var) else expr
    if isinstance(expr, tirx.IntImm):
        return expr
    if isinstance(expr, _BINARY):
        a, b = _substitute(expr.a, var, value), _substitute(expr.b, var, value)
        if a is None or b is None:
            return None
        return expr if a.same_as(expr.a) and b.same_as(expr.b) else type(expr)(a, b)
    return None
