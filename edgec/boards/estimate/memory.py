"""The memory term of the estimate: how long each compiled function spends moving its
tensors between the caches/DRAM and the core, which llvm-mca (all loads hit L1) leaves out.

Each call's tensor arguments are known from the counted run (address and size). Weights
are the tensors seen in exactly one call (a constant feeds one kernel; an activation is
written by one call and read by at least one more, and the pooled allocator reuses the
same buffers). The two kinds travel differently:
- a weight is read once per inference and comes back only after every other weight has
  gone through the caches, so it streams from the smallest level holding the model's
  whole footprint (all weights plus the largest call's activations), often DRAM;
- a call's activations were just written by the previous call, so they stream from the
  smallest level holding that call's activations.
Bandwidths count bytes read plus bytes written, as the per-core figures in cores.py do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .cores import Core


@dataclass(frozen=True)
class Traffic:
    """Bytes one compiled function moves in one inference."""

    calls: int
    weight_bytes: int
    activation_bytes: int
    largest_call_activations: int  # the biggest one call's activations (its working set)


def traffic(calls: list[tuple[str, list[tuple[int, int]]]],
            inputs: list[tuple[int, int]]) -> dict[str, Traffic]:
    """Per compiled function, what its calls read and write (see the module docstring)."""
    seen = Counter(tensor for _name, args in calls for tensor in args)
    model_inputs = set(inputs)
    per: dict[str, list[int]] = {}
    for name, args in calls:
        weights = sum(t[1] for t in args if seen[t] == 1 and t not in model_inputs)
        acts = sum(n for _addr, n in args) - weights
        entry = per.setdefault(name, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += weights
        entry[2] += acts
        entry[3] = max(entry[3], acts)
    return {name: Traffic(*values) for name, values in per.items()}


def footprint(traffics: dict[str, Traffic]) -> int:
    """Bytes one inference keeps live across inferences: weights plus the largest call."""
    weights = sum(t.weight_bytes for t in traffics.values())
    return weights + max((t.largest_call_activations for t in traffics.values()), default=0)


def bandwidth_gbps(core: Core, working_set: int) -> float:
    """Bandwidth of the smallest level that holds `working_set` bytes (DRAM when none)."""
    for size, gbps in core.caches:
        if working_set <= size:
            return gbps
    return core.dram_gbps


def memory_seconds(core: Core, t: Traffic, model_footprint: int) -> float:
    """Time one function's tensors take to stream in and out, per inference."""
    weights = t.weight_bytes / (bandwidth_gbps(core, model_footprint) * 1e9)
    acts = t.activation_bytes / (bandwidth_gbps(core, t.largest_call_activations) * 1e9)
    return weights + acts


def combine(compute_s: float, memory_s: float, how: str) -> float:
    """One function's time from its compute and memory terms.

    "max": a roofline, prefetchers overlap streaming with arithmetic completely.
    "sum": no overlap, every byte's transfer adds to the arithmetic (a miss penalty).
    """
    if how == "max":
        return max(compute_s, memory_s)
    if how == "sum":
        return compute_s + memory_s
    raise ValueError(f"combine: how must be 'max' or 'sum', not {how!r}")
