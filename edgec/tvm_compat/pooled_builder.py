"""MetaSchedule's LocalBuilder with worker processes that outlive a batch (tvm.s_tir.meta_schedule
0.27 internals: LocalBuilder's worker function and PopenPoolExecutor).

LocalBuilder starts a fresh process pool for every batch (and one more to check its build
functions), so each batch pays for every worker's `import tvm` and its tensor-intrinsic
tables before compiling anything: ~13 s per batch on a 2-core Zen 1, when compiling a small
conv's candidates takes ~1 s. A 24-trial tune of a 3-conv model spent 116 of its 177 s in
those pools. TVM restarts them for a memory leak of long-lived workers; here each worker is
replaced after MAX_USES builds instead (PopenPoolExecutor's own knob), so the leak stays
bounded and the import is paid once per MAX_USES candidates.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import local_builder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

# Builds a worker runs before it is replaced. A worker's resident memory grows by a few MB
# per LLVM build; 64 keeps it well under a GB while the restart cost spreads over 64 builds.
MAX_USES = 64


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """Builds candidates in `workers` processes kept across batches. close() ends them."""

    def __init__(self, workers: int, timeout_sec: float, initializer: Callable[[], None],
                 f_export: Callable | None = None) -> None:
        super().__init__()
        self.workers = workers
        self.timeout_sec = timeout_sec
        self.initializer = initializer
        self.f_export = f_export
        self._pool: PopenPoolExecutor | None = None

    def _executor(self) -> PopenPoolExecutor:
        if self._pool is None:
            self._pool = PopenPoolExecutor(max_workers=self.workers, timeout=self.timeout_sec,
                                           initializer=self.initializer,
                                           maximum_process_uses=MAX_USES)
        return self._pool

    def build(self, build_inputs):
        jobs = [(None, self.f_export, item.mod, item.target,
                 local_builder._serialize_params(item.params)) for item in build_inputs]
        results = []
        for outcome in self._executor().map_with_error_catching(
                lambda job: local_builder._worker_func(*job), jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"LocalBuilder: Timeout, killed after {self.timeout_sec} seconds"))
            else:
                results.append(ms.builder.BuilderResult(
                    None, "LocalBuilder: An exception occurred\n" + str(outcome.value)))
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
