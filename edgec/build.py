"""Build stage: compile a Model for a Target and write OUT.so + OUT.so.json atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec import __version__
from edgec.errors import BuildError, MissingDependencyError
from edgec.model import Model
from edgec.package import PackageInfo, file_sha256, metadata_path
from edgec.targets import Target
from edgec.tvm_compat.log_filters import quiet_scope_warnings

_CROSS_PACKAGES = {"aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}


def check_toolchain(target: Target) -> None:
    """Fail early, before minutes of compilation, when the cross compiler is missing.

    Raises:
        MissingDependencyError: with the command that installs it.
    """
    compiler = target.cross_compiler
    if compiler and not shutil.which(compiler):
        package = _CROSS_PACKAGES.get(compiler, compiler)
        raise MissingDependencyError(
            f"cross compiler {compiler} for target {target.name} is not installed; "
            f"install it with: sudo apt-get install {package}"
        )


def lower(
    model: Model,
    target: Target,
    schedule: Callable[[Any], Any] | None = None,
    *,
    default_schedules: bool = True,
    generic: list[str] | None = None,
):
    """Legalize and schedule the model's Relax module; returns the module relax.build takes.

    Args:
        schedule: applied to the legalized module under the target (e.g. tuning records);
            whatever it leaves unscheduled gets edgec's default CPU schedules.
        default_schedules: False gives the unscheduled module, the one tuning works on.
        generic: collects the names of functions no edgec kernel covered (generic schedule).
    """
    import tvm
    from tvm import relax

    from edgec.codegen import vector_rewrites
    from edgec.codegen.legalize import legalize_map
    from edgec.codegen.schedules import default_schedule
    from edgec.layout.blocks import block_of

    target = target.for_precision(model.quantization)
    with tvm.target.Target(target.tvm_target()):
        block = block_of(model.layout) or target.cpu.nchwc_block
        ir = relax.transform.LegalizeOps(
            customize_legalize_map=legalize_map(block, target.cpu)
        )(model.ir)
        ir = relax.transform.LegalizeOps()(ir)
        ir = relax.transform.AnnotateTIROpPattern()(ir)
        ir = relax.transform.FoldConstant()(ir)
        ir = relax.transform.FuseOps()(ir)
        ir = relax.transform.FuseTIR()(ir)
        if schedule is not None:
            ir = schedule(ir)
        if default_schedules:
            ir = default_schedule(generic)(ir)
        # The plane convs' marked loops, scheduled by default or by tuning records alike.
        ir = vector_rewrites.rewrite_module(ir)
    return ir


def compile_to_executable(model: Model, target: Target, schedule=None,
                          stats: dict[str, Any] | None = None):
    """Compile to an in-memory tvm Executable (no files written).

    Args:
        stats: if given, gets "generic" (count) and "generic_names": the functions that no
            edgec kernel covered and run on the generic parallel/vectorize schedule.

    Raises:
        BuildError: TVM failed; the message names the stage and TVM's own error line.
            A bug in edgec's own code keeps its traceback instead.
    """
    import tvm
    from tvm import relax

    from edgec.tvm_compat import errors

    generic: list[str] = []
    stage, ir = "legalize and schedule", model.ir
    target = target.for_precision(model.quantization)
    try:
        ir = lower(model, target, schedule, generic=generic)
        stage = "generate code for"
        with tvm.transform.PassContext(opt_level=3):
            executable = relax.build(ir, target=target.tvm_target())
    except Exception as err:
        if isinstance(err, BuildError) or not errors.is_tvm_error(err):
            raise
        raise BuildError(_failure_message(model, target, stage, ir, err)) from err
    if stats is not None:
        stats["generic"] = len(generic)
        stats["generic_names"] = sorted(generic)
    return executable


def _failure_message(model: Model, target: Target, stage: str, ir: Any,
                     err: BaseException) -> str:
    """One line: the stage, the op and its layouts, TVM's own reason and what to try; never
    the last line of an IR dump."""
    from edgec.tvm_compat import errors

    op = errors.failing_op(err)
    where = f" at {op}" if op else ""
    # The other plain layout: suggesting the one that just failed sends the user in a circle.
    other = "NHWC" if model.layout == "NCHW" else "NCHW"
    hint = f"try --layout {other} or another --target"
    if errors.debug_enabled():
        hint = f"the IR that failed is in {errors.save_failing_ir(ir, model.name)}; " + hint
    else:
        hint += "; EDGEC_DEBUG=1 (or edgec --debug) keeps the traceback and saves the IR"
    return (f"TVM failed to {stage} {model.name} for {target.name}{where}: "
            f"{errors.message_line(err)}; {hint}; please report it")


def export(
    executable: Any, model: Model, target: Target, out: str | Path, tuning: dict | None = None,
    check: dict | None = None,
) -> PackageInfo:
    """Write OUT.so and OUT.so.json; both appear together or not at all. `check` is the
    tolerance `edgec verify` applies against the source model (PackageInfo.check).

    Raises:
        BuildError: linking failed (e.g. the cross compiler rejected the object files).
    """
    import tvm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = target.for_precision(model.quantization)  # the [tvm] table it was built with
    fcompile = None
    if target.cross_compiler:
        options = [f"--sysroot={target.sysroot}"] if target.sysroot else None
        fcompile = tvm.support.cc.cross_compiler(target.cross_compiler, options=options)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".edgec-") as tmp:
        library = Path(tmp) / out.name
        try:
            with quiet_scope_warnings():
                executable.export_library(str(library), fcompile=fcompile)
        except (RuntimeError, OSError) as err:  # tvm.support.cc: the compiler's output
            raise BuildError(f"linking {out.name} for {target.name} failed: {err}") from err
        info = PackageInfo(
            model=model.name,
            inputs=[s.to_dict() for s in model.inputs],
            outputs=[s.to_dict() for s in model.outputs],
            layout=model.layout,
            target={"name": target.name, "tvm": target.tvm, "source": target.source},
            arch=target.arch,
            tvm_version=tvm.__version__,
            sha256=file_sha256(library),
            edgec_version=__version__,
            applied=list(model.applied),
            tuning=tuning or {},
            check=dict(check or {}),
        )
        meta = Path(tmp) / metadata_path(out.name).name
        meta.write_text(info.to_json())
        os.replace(meta, metadata_path(out))
        os.replace(library, out)
    return info


def assembly(executable: Any) -> str:
    """The target assembly of the compiled kernels (LLVM modules imported by the VM)."""
    listings = []
    for module in executable.mod.imports:
        if module.kind == "llvm":
            listings.append(module.inspect_source("asm"))
    return "\n".join(listings)
