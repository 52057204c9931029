"""The package is built in layers (``ios_tvm.LAYERS``, lowest first): every import of the source,
function-level ones included, goes to the same layer or one below; the import graph has no
cycles; the pure core imports without TVM; the top level stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ios_tvm

PACKAGE = Path(ios_tvm.__file__).resolve().parent
#: the package itself (its lazy public names) and ``python -m ios_tvm``: above every layer
FACADE = {"ios_tvm", "ios_tvm.__main__"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """ios_tvm modules ``name`` imports (at any depth of its code), resolved to modules that exist:
    ``from .x import y`` is module ``x.y`` when that is a module, else ``x``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out.update(t for t in targets if t == "ios_tvm" or t.startswith("ios_tvm."))
    return out - {name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _layer(module: str) -> int | None:
    if module in FACADE:
        return None
    return ios_tvm.LAYERS.index(module.split(".")[1])


def test_every_module_is_in_a_layer():
    for name in _modules():
        assert name in FACADE or name.split(".")[1] in ios_tvm.LAYERS, \
            f"{name} belongs to no layer: add its subpackage to ios_tvm.LAYERS (and to README's Architecture)"


def test_no_import_goes_up_a_layer():
    wrong = []
    for name, targets in _graph().items():
        if name in FACADE:
            continue
        for t in targets:
            if t in FACADE:
                wrong.append(f"{name} imports the package facade {t} (import from the layer that defines it)")
            elif _layer(t) > _layer(name):
                wrong.append(f"{name} ({ios_tvm.LAYERS[_layer(name)]}) imports {t} ({ios_tvm.LAYERS[_layer(t)]})")
    assert not wrong, "imports up a layer:\n  " + "\n  ".join(sorted(wrong))


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The graph the tests above read is what Python would import: a function-level import is an
    edge, and ``from . import x`` names module ``x``."""
    graph = _graph()
    assert "ios_tvm.cost.measure" in graph["ios_tvm.cost"]  # imported inside a function of cost/__init__
    assert "ios_tvm.runtime" in graph["ios_tvm.compiler.pipeline"]  # from .. import runtime
    assert "ios_tvm.models" in graph["ios_tvm.tuning.tuner"]


def test_the_core_imports_without_tvm():
    code = ("import sys\nimport ios_tvm.core.search, ios_tvm.core.schedule, ios_tvm.core.blocks, "
            "ios_tvm.core.descent\nfrom ios_tvm.core.search import solve\n"
            "assert solve(2, [(0, 1)], lambda g: 1.0) == [[[0, 1]]]\n"
            "loaded = sorted(m for m in sys.modules if m == 'tvm' or m.startswith('tvm.'))\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_core_imports_nothing_of_tvm_in_its_source():
    for name, path in _modules().items():
        if not name.startswith("ios_tvm.core"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m == "tvm" or m.startswith(("tvm.", "tvm_ffi")) for m in mods), f"{name} imports {mods}"


def test_at_most_eight_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
