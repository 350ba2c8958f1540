"""The package's shape: no import cycles, and a board-side loader that needs nothing but
numpy, the TVM runtime and the standard library."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from edgec.boards.probe import LOADER_FILES

PACKAGE = REPO / "edgec"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """edgec modules imported by `path` at module level (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" depends on the submodule; "from pkg import name"
            # on the package's __init__.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in modules] or [node.module]
        found |= {n for n in names if n in modules}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of module-level imports, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_edgec_has_no_import_cycles():
    """Explicit module-level imports between edgec modules form no cycle (a package's
    __init__ importing its own submodules is the one expected direction)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(files)) - {name} for name, path in files.items()}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_every_module_stays_small():
    """STYLE.md: modules around 300 lines; past ~350, split by responsibility."""
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 350}
    assert not long, long


_BLOCKER = r"""
import importlib.abc, sys
allowed = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in allowed:
            return None
        raise ImportError(f"blocked on a board: {name}")
sys.meta_path.insert(0, Block())
import edgec.runtime
import edgec.runtime as rt
assert callable(rt.load) and callable(rt.load_remote)
print("loaded", edgec.runtime.__file__)
"""


def test_board_loader_imports_with_only_numpy_tvm_and_the_stdlib(tmp_path):
    """What `deploy --smoke` uploads (LOADER_FILES) imports on its own, with every other
    edgec module and every third-party package but numpy and TVM's own blocked."""
    for name in LOADER_FILES:
        (tmp_path / "edgec" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / name, tmp_path / "edgec" / name)
    # What importing tvm itself needs is part of "the TVM runtime" a board installs.
    tvm_closure = subprocess.run(
        [sys.executable, "-c", "import sys, tvm; print(','.join(sorted({m.split('.')[0] "
         "for m in sys.modules})))"], capture_output=True, text=True, check=True).stdout.strip()
    allowed = {m for m in tvm_closure.split(",") if m != "edgec"} | {"numpy", "edgec"}
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(sorted(allowed))],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) in done.stdout
    for heavy in ("onnx", "onnxruntime", "click", "paramiko", "xgboost", "rich"):
        assert heavy not in allowed, heavy  # the blocker really blocks what boards lack
