"""What `edgec compile` reports: the CompileResult the pipeline returns, its summary and
its JSON form (the tuning line says honestly where each function's schedule came from)."""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec import reference
from edgec.check import VerifyReport
from edgec.model import Model
from edgec.package import PackageInfo
from edgec.quant.accuracy import QuantReport


@dataclass(frozen=True)
class CompileResult:
    """What compile produced and how it was checked."""

    path: Path
    info: PackageInfo
    layout_transforms: int
    verify: VerifyReport | None
    seconds: dict[str, float]
    tuning: dict[str, int]
    quantization: QuantReport | None = None
    model: Model | None = None  # the compiled graph; .reference is what the check ran
    layout_decision: Any = None  # --layout auto: edgec.layout.by_measurement.LayoutDecision
    quantize_decision: Any = None  # --quantize auto: edgec.quant.by_measurement

    def _layout_why(self) -> str:
        why = self.model.layout_why if self.model is not None else ""
        return f" ({why})" if why and self.layout_decision is None else ""

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} (+ {self.path.name}.json), {self.info.arch}, "
            f"layout {self.info.layout}{self._layout_why()}, {self.layout_transforms} layout "
            "transforms in the graph",
            *([self.layout_decision.summary()] if self.layout_decision else []),
            *([self.quantize_decision.summary()] if self.quantize_decision else []),
            "steps: " + ", ".join(self.info.applied),
            _tuning_line(self.tuning),
            "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
        ]
        if self.verify is not None:
            against = self.model and reference.runtime_name(self.model.reference)
            lines += [f"check against {against or 'the reference'}:", self.verify.summary()]
        if self.quantization is not None:
            lines.append(self.quantization.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything summary() shows, as plain data (for --json)."""
        return {
            "path": str(self.path), "info": json.loads(self.info.to_json()),
            "layout_transforms": self.layout_transforms, "seconds": self.seconds,
            "tuning": self.tuning,
            "layout_decision": (None if self.layout_decision is None else
                                {"layout": self.layout_decision.layout,
                                 "ms": self.layout_decision.table,
                                 "how": self.layout_decision.how}),
            "quantize_decision": (None if self.quantize_decision is None
                                  else self.quantize_decision.record()),
            "verify": json.loads(self.verify.to_json()) if self.verify else None,
            "quantization": self.quantization.to_dict() if self.quantization else None,
        }


def _tuning_line(stats: dict[str, Any]) -> str:
    if stats.get("untuned"):
        line = "schedules: no tuning logs applied (--untuned); every task uses edgec's defaults"
    elif "tuned" not in stats:
        line = "schedules: no tuning logs for this target; every task uses edgec's defaults"
    else:
        tuned, functions, confirmed = stats["tuned"], stats["functions"], stats["confirmed"]
        rejected, stale = stats.get("rejected", 0), stats.get("stale", 0)
        line = (f"schedules: {tuned - confirmed} functions from tuned records, {confirmed} on "
                f"defaults that tuning confirmed, "
                + (f"{rejected} on defaults because their records ran slower in the model, "
                   if rejected else "")
                + (f"{stale} on defaults because their records were tuned against an older "
                   f"default (`edgec tune` measures the two), " if stale else "")
                + f"{functions - tuned - rejected - stale} untuned (edgec's defaults)")
    here = stats.get("cpu")  # None for a board target: its records come from boards anyway
    others = {cpu: n for cpu, n in stats.get("from_cpu", {}).items() if here and cpu != here}
    if others:
        line += "; records measured on another CPU, whose speed-ups may not hold here: " + (
            ", ".join(f"{n} functions from {cpu}" for cpu, n in others.items()))
    generic = stats.get("generic_names")
    if generic:
        line += f"; {len(generic)} on the generic schedule (no edgec kernel): " + _grouped(generic)
    return line


def _grouped(names: list[str], most: int = 6) -> str:
    """"conv2d x5, mean x8, ..." from TVM's numbered function names, most frequent first."""
    groups = collections.Counter(re.sub(r"(?<=[a-z])\d+(?=_|$)", "", name) for name in names)
    shown = [f"{name} x{count}" if count > 1 else name for name, count in groups.most_common(most)]
    rest = len(groups) - most
    return ", ".join(shown) + (f" and {rest} more kinds" if rest > 0 else "")
