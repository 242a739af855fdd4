"""The layout docs/ARCHITECTURE.md describes: imports only go down (no circle, lazy
imports included), train() stays small, the CLI's help needs no torch."""

from __future__ import annotations

import ast
import inspect
import pathlib
import subprocess
import sys

import fastneuron
import fastneuron.kernels
from fastneuron import api

PACKAGE = pathlib.Path(fastneuron.__file__).resolve().parent
KERNELS = pathlib.Path(fastneuron.kernels.__file__).resolve().parent  # the top-level kernels/ folder


def _module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE, package: str = "fastneuron") -> str:
    parts = [*package.split("."), *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict:
    """module -> the fastneuron modules it imports, at any depth of its code."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.update({_module_name(p, KERNELS, "fastneuron.kernels"): p for p in KERNELS.rglob("*.py")})
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:  # `from . import x`: x may be a module
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_circle():
    graph = _imports()
    state: dict = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_train_is_small():
    lines = inspect.getsource(api.train).splitlines()
    assert len(lines) <= 80, f"train() has {len(lines)} lines"


def test_help_needs_no_torch():
    code = ("import sys, runpy\n"
            "sys.argv = ['fastneuron', '--help']\n"
            "try:\n    runpy.run_module('fastneuron', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: fastneuron" in out and out.strip().endswith("NO-TORCH"), out[-300:]
