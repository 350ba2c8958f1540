"""Benchmark stage: latency statistics of a loaded model, measured on its own device."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from edgec.errors import ConfigError


@dataclass(frozen=True)
class BenchReport:
    """Latency of single inferences in milliseconds, after warm-up."""

    model: str
    where: str
    runs: int
    warmup: int
    latencies_ms: list[float]

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
        cells = "  ".join(f"{k} {v:.3f}" for k, v in stats.items() if k != "throughput_per_s")
        return f"{head}\n  ms: {cells}\n  throughput: {stats['throughput_per_s']:.1f} inferences/s"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "stats_ms": self.stats()}, indent=2)


def benchmark(
    model, inputs, *, runs: int = 100, warmup: int = 10, where: str = "local"
) -> BenchReport:
    """Time `runs` single inferences of a runtime.CompiledModel after `warmup` untimed ones.

    Raises:
        ConfigError: runs or warmup out of range.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    if warmup:
        model.time_evaluator(inputs, number=1, repeat=warmup)
    seconds = model.time_evaluator(inputs, number=1, repeat=runs)
    return BenchReport(model.info.model, where, runs, warmup, [s * 1000.0 for s in seconds])
