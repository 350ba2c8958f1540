"""Stride-2 phase copies of NCHW depthwise convs as contiguous loads and two shuffles.

A depthwise conv of stride 2 on flat planes (edgec.codegen.nchw_planes) first splits each
input row into its two column phases, the even and the odd pixels. TVM's vectorizer reads a
phase at stride 2 lane by lane; left to LLVM, the copy loaded each phase on its own as a
masked vector of every other lane plus a permute, 8 pixels at a time: 64% of the time of
MobileNetV3-Small's 72-channel 56x56 -> 28x28 conv (perf, one thread, AVX-512 Ice Lake),
against 24% for its multiply-adds. Here each piece of a row's inner columns (no border
test) loads 2 x lanes contiguous pixels once and stores their even and odd lanes as one
vector each (two shufflevectors: vpermt2ps on AVX-512, uzp1/uzp2 on NEON).

TVM 0.27 has no schedule primitive for it (a tensor intrinsic would have to match the copy's
clamped, border-tested body), so PlaneConv marks the loop (mark) and the default schedule
rewrites the scheduled function (with_shuffles): the marked loop's block, whose iter vars
keep their meaning, gets a body of whole-vector stores.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir import Range, TensorLoad

_MARK = "edgec_deinterleave_lanes"


def mark(sch: s_tir.Schedule, loop, lanes: int) -> None:
    """Have with_shuffles copy the two column phases of this loop (the inner columns of a
    phase row, its column phases unrolled inside it) in `lanes`-pixel vectors."""
    sch.annotate(loop, _MARK, lanes)


def with_shuffles(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with every marked copy loop rewritten (unchanged where none is marked, or
    where the loop is not the copy it expects: its plain copy then stays)."""
    body = _rewritten(func.body)
    return func if body.same_as(func.body) else func.with_body(body)


def _rewritten(stmt):
    if isinstance(stmt, tirx.For):
        if _MARK in stmt.annotations:
            return _shuffled(stmt) or _loop(stmt, stmt.body, unmarked=True)
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


def _loop(loop: tirx.For, body, unmarked: bool = False) -> tirx.For:
    annotations = {k: v for k, v in loop.annotations.items() if not (unmarked and k == _MARK)}
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, body,
                    loop.thread_binding, annotations)


def _block(block, body, reads):
    return s_tir.SBlock(block.iter_vars, reads, block.writes, block.name_hint, body,
                        block.init, block.alloc_buffers, block.match_buffers,
                        block.annotations)


def _shuffled(loop: tirx.For):
    """The copy loop as pieces of whole vectors, None where it is not the expected copy:
    for col in [first, end): for pw in 0, 1: planes[.., phase(pw), row, col] =
    Select(clamp(y) == y and clamp(x) == x, data[.., clamp(y), clamp(x)], 0), x the
    input column of (col, pw), both phases' x inside the row for every col of the loop."""
    lanes = int(loop.annotations[_MARK])
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
    iter_vars = [iv.var for iv in realize.block.iter_vars]
    phase_binding = next((value for var, value in zip(iter_vars, realize.iter_values,
                                                      strict=True) if var.same_as(phase)), None)
    even = _substitute(phase_binding, phases.loop_var, 0)
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
        values = [even if v.same_as(phase) else start if v.same_as(col) else value
                  for v, value in zip(iter_vars, realize.iter_values, strict=True)]
        return s_tir.SBlockRealize(values, realize.predicate, block)

    index = _dtype(loop.loop_var)
    piece_var = tirx.Var("piece", index)
    whole = count // lanes
    parts = [tirx.For(piece_var, tirx.const(0, index), tirx.const(whole, index),
                      tirx.ForKind.SERIAL, piece(first + piece_var * lanes))]
    if count % lanes:  # the last piece ends with the row, overlapping the one before
        parts.append(piece(tirx.const(first + count - lanes, index)))
    return tirx.SeqStmt(parts) if len(parts) > 1 else parts[0]


def _dtype(expr) -> str:
    return str(expr.ty)


def _one(var):
    return tirx.const(1, _dtype(var))


def _point_ranges(indices):
    return [Range.from_min_extent(i, tirx.const(1, _dtype(i))) for i in indices]


def _substitute(expr, var, value: int):
    """expr (a block binding: vars, constants, + and *) with var = value; None for any other
    node (the rewrite then leaves the loop alone)."""
    if expr is None:
        return None
    if isinstance(expr, tirx.Var):
        return tirx.const(value, _dtype(expr)) if expr.same_as(var) else expr
    if isinstance(expr, tirx.IntImm):
        return expr
    if isinstance(expr, (tirx.Add, tirx.Mul)):
        a, b = _substitute(expr.a, var, value), _substitute(expr.b, var, value)
        if a is None or b is None:
            return None
        return a + b if isinstance(expr, tirx.Add) else a * b
    return None
