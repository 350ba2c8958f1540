"""A Relax module with its main function replaced: the end of every rewrite pass edgec runs
on `main` (TVM 0.27 lists a module's functions with `functions_items`)."""

from __future__ import annotations

from typing import Any


def replace_main(ir: Any, main: Any) -> Any:
    """A copy of the IRModule `ir` whose "main" is `main`; every other function kept."""
    import tvm

    out = tvm.IRModule(dict(ir.functions_items()))
    out[out.get_global_var("main")] = main
    return out
