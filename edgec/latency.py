"""Benchmark stage: latency statistics of a loaded model, measured on its own device."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgec.errors import ConfigError, MissingDependencyError


@dataclass(frozen=True)
class BenchReport:
    """Latency of single inferences in milliseconds, after warm-up."""

    model: str
    where: str
    runs: int
    warmup: int
    latencies_ms: list[float]
    profile_ms: dict[str, float] = field(default_factory=dict)  # per function, slowest first
    requested_runs: int = 0  # --runs; `runs` is fewer when --max-seconds ended it first
    max_seconds: float | None = None
    ended_by: str = "runs"  # "runs" or "time": which limit stopped the timed runs

    def with_profile(self, profile_ms: dict[str, float]) -> BenchReport:
        return replace(self, profile_ms=dict(profile_ms))

    def stats(self) -> dict[str, float]:
        values = np.asarray(self.latencies_ms)
        return {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)),
            "min": float(values.min()),
            "max": float(values.max()),
            "std": float(values.std()),
            "throughput_per_s": float(1000.0 / values.mean()),
        }

    def summary(self) -> str:
        stats = self.stats()
        head = f"{self.model} on {self.where}: {self.runs} runs after {self.warmup} warm-up"
        if self.ended_by == "time":
            head += (f" (stopped by --max-seconds {self.max_seconds:g} before --runs "
                     f"{self.requested_runs})")
        cells = "  ".join(f"{k} {v:.3f}" for k, v in stats.items() if k != "throughput_per_s")
        text = f"{head}\n  ms: {cells}\n  throughput: {stats['throughput_per_s']:.1f} inferences/s"
        return text + ("\n" + self.profile_table() if self.profile_ms else "")

    def profile_table(self, top: int = 25) -> str:
        """The slowest compiled functions: mean ms per inference and share of the total."""
        total = sum(self.profile_ms.values()) or 1.0
        rows = sorted(self.profile_ms.items(), key=lambda kv: -kv[1])
        width = max(len(name) for name, _ in rows[:top])
        lines = [f"  per operator ({len(rows)} functions, {total:.2f} ms in all):",
                 f"    {'function':<{width}}  {'ms':>8}  {'share':>6}"]
        lines += [f"    {name:<{width}}  {ms:>8.3f}  {100 * ms / total:>5.1f}%"
                  for name, ms in rows[:top]]
        if len(rows) > top:
            rest = sum(ms for _, ms in rows[top:])
            lines.append(f"    {f'({len(rows) - top} more)':<{width}}  {rest:>8.3f}  "
                         f"{100 * rest / total:>5.1f}%")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "stats_ms": self.stats()}, indent=2)


# Progress of a benchmark: phase ("warm-up" or "runs"), runs done, runs asked for.
Progress = Callable[[str, int, int], None]
# Runs are timed in chunks of about this many seconds, so that progress shows and the time
# limit holds on a slow build (an emulated board takes seconds per inference).
_CHUNK_SECONDS = 0.5
# Warm-up may use at most this share of --max-seconds, so some timed runs always follow it.
_WARMUP_SHARE = 0.2


def benchmark(model, inputs, *, runs: int = 100, warmup: int = 10,
              max_seconds: float | None = None, where: str = "local",
              progress: Progress | None = None) -> BenchReport:
    """Time up to `runs` single inferences of a runtime.CompiledModel after up to `warmup`
    untimed ones, stopping early once `max_seconds` of wall time are spent (at least one
    warm-up, when asked for, and one timed run always happen).

    Raises:
        ConfigError: runs, warmup or max_seconds out of range.
    """
    if runs < 1 or warmup < 0 or (max_seconds is not None and max_seconds <= 0):
        raise ConfigError("--runs must be >= 1, --warmup >= 0 and --max-seconds > 0 "
                          f"(got {runs}, {warmup}, {max_seconds})")
    measure = model.timer(inputs)
    start = time.monotonic()
    budget = max_seconds if max_seconds is not None else math.inf
    warm = _timed_runs(measure, warmup, start + _WARMUP_SHARE * budget, "warm-up", progress)
    seconds = _timed_runs(measure, runs, start + budget, "runs", progress)
    ended_by = "runs" if len(seconds) == runs else "time"
    return BenchReport(model.info.model, where, len(seconds), len(warm),
                       [s * 1000.0 for s in seconds], requested_runs=runs,
                       max_seconds=max_seconds, ended_by=ended_by)


def _timed_runs(measure, count: int, deadline: float, phase: str,
                progress: Progress | None) -> list[float]:
    """Up to `count` latencies (seconds), in chunks sized to _CHUNK_SECONDS of wall time; no
    chunk starts that would end past `deadline` once one run is done."""
    done: list[float] = []
    per_run = None  # wall seconds per run, learned from the first chunk
    while len(done) < count:
        left = count - len(done)
        chunk = 1 if per_run is None else max(1, min(left, int(_CHUNK_SECONDS / per_run)))
        if done and deadline != math.inf:  # no --max-seconds: no deadline to fit
            fits = int((deadline - time.monotonic()) / per_run)
            if fits < 1:
                break
            chunk = min(chunk, fits)
        began = time.monotonic()
        done += measure(chunk)
        per_run = max((time.monotonic() - began) / chunk, 1e-6)
        if progress:
            progress(phase, len(done), count)
    return done


def plot_latencies(report: BenchReport, path: str | Path) -> Path:
    """Write a PNG: a histogram of the latencies with median/p90/p99 marked, and a violin.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError as err:
        raise MissingDependencyError("--plot needs matplotlib: pip install matplotlib") from err
    values, stats = np.asarray(report.latencies_ms), report.stats()
    figure = Figure(figsize=(9, 4), layout="constrained")
    hist, violin = figure.subplots(1, 2, width_ratios=[3, 1])
    hist.hist(values, bins=min(50, max(10, len(values) // 4)), color="tab:blue", alpha=0.8)
    for name, style in (("median", "-"), ("p90", "--"), ("p99", ":")):
        hist.axvline(stats[name], color="black", linestyle=style,
                     label=f"{name} {stats[name]:.2f} ms")
    hist.set_xlabel("latency (ms)")
    hist.set_ylabel("runs")
    hist.legend()
    violin.violinplot(values, showmedians=True)
    violin.set_xticks([])
    violin.set_ylabel("latency (ms)")
    figure.suptitle(f"{report.model} on {report.where}: {report.runs} runs, "
                    f"{stats['throughput_per_s']:.1f} inferences/s")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
