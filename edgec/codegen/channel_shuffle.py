"""ShuffleNet's channel shuffle in NHWC, as one kernel with a schedule of its own.

As Relax ops the shuffle is reshape (N, H, W, g, C/g), swap, reshape (N, H, W, C); fused
with the concat before it and the split after it, TVM composed the reshapes' flat indices
into div/mod chains over every axis, vectorized 16 lanes of gathers under a tail predicate,
and ran the shuffles of ShuffleNetV2 at ~10x a copy's cost: 0.40 ms of its 1.37 ms INT8
model (x86_64-avx512-vnni, Zen 5, 2 threads). Here (edgec.layout.nhwc_regions builds it) the
kernel reads the concat's parts and writes the split's parts itself: output channel j of a
part starting at channel b reads part (j % g), channel (b + j) // g. The schedule splits j
into (c, g) with the g reads unrolled, so each output row is g plain streams interleaved,
which LLVM vectorizes with shuffles (a 14x14 concat-shuffle-split of 2 x 116 channels,
requantize included: 3.2 us instead of 36).
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from edgec.codegen.generic_schedule import (
    ParallelVectorize,
    extent,
    inline_elementwise,
    root_blocks,
    schedule_named,
)

BLOCK = "channel_shuffle_nhwc"


def channel_shuffle_nhwc(sources: list[te.Tensor], groups: int, begin: int = 0,
                         end: int | None = None) -> te.Tensor:
    """Channels [begin, end) of ShuffleNet's shuffle on NHWC's last axis: of (N, H, W, C),
    output channel c * groups + g is input channel g * (C / groups) + c. `sources` is that
    input, or its `groups` parts of C / groups channels each (the concat that ShuffleNet
    shuffles): then each output channel reads its group's part directly, with no bounds test
    of a fused concat in the loop. A part of the shuffle that starts on a multiple of
    `groups` (a split of it) keeps the plain pattern, shifted."""
    channels = sum(int(source.shape[-1]) for source in sources)
    end = channels if end is None else end
    per_group, shift = channels // groups, begin // groups
    assert begin % groups == 0 and len(sources) in (1, groups), (begin, groups, len(sources))

    def value(n, h, w, j):
        group, channel = j % groups, shift + j // groups
        if len(sources) == 1:
            return sources[0][n, h, w, group * per_group + channel]
        picked = sources[-1][n, h, w, channel]
        for k in range(groups - 2, -1, -1):  # constant once the group loop is unrolled
            picked = tirx.Select(group == k, sources[k][n, h, w, channel], picked)
        return picked

    return te.compute((*sources[0].shape[:-1], end - begin), value, name=BLOCK,
                      attrs={"edgec_groups": groups})


def channel_shuffle_parts(sources: list[te.Tensor], groups: int,
                          bounds: list[int]) -> list[te.Tensor]:
    """The shuffle split at `bounds` (0, ..., C; each a multiple of `groups`): one result
    per part, as relax.split returns them."""
    return [channel_shuffle_nhwc(sources, groups, begin, end)
            for begin, end in zip(bounds[:-1], bounds[1:], strict=True)]


class ChannelShuffle:
    """Functions holding a channel_shuffle_nhwc block (with the requantize of the concat's
    parts fused before it): everything inlined into the outputs; per output, parallel over
    pixels, channels split by the group count with the group reads unrolled."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        return schedule_named(func, BLOCK, _schedule)


def _schedule(sch: s_tir.Schedule) -> None:
    groups = int(sch.get(sch.get_sblock(BLOCK)).annotations["edgec_groups"])
    inline_elementwise(sch)  # the parts' requantize; the shuffle's parts are its outputs
    for block in root_blocks(sch):
        loops = sch.get_loops(block)
        if len(loops) != 4 or (extent(sch, loops[-1]) or 0) % groups:
            ParallelVectorize.schedule_block(sch, block)  # not a shuffled NHWC row
            continue
        sch.parallel(sch.fuse(*loops[:3]))
        _, group = sch.split(loops[3], [None, groups])
        sch.unroll(group)  # LLVM vectorizes the channel loop over interleaved streams
