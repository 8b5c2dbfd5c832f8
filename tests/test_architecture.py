"""The package's layering: no import cycle between modules, and no layer importing a higher one
(imports inside functions count too). A new top-level module or package needs a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# lower numbers are lower layers; a module may import its own layer (within its package) and lower ones
LAYERS = {
    "_version": 0, "errors": 0, "messages": 0,
    "io": 1, "checks": 1, "kernels": 1, "device": 1, "progress": 1, "registry": 1, "seeds": 1, "parallel": 1,
    "folder_lock": 1,
    "data": 2, "nets": 2, "diffusion": 2, "masking": 2,
    "methods": 3, "config": 3, "preprocess": 3, "evaluation": 3, "viz": 3, "weights": 3, "run_folder": 3,
    "training": 4,
    "inference": 5, "report": 5,
    "benchmark": 6,
    "demo": 7, "api": 7,
    "cli": 8,
    "mddpm": 9,  # the package root: its lazy facade hands out mddpm.api
}


def _imported_by_name(node: ast.AST) -> str | None:
    """The module an ``import_module(...)`` call names: its literal text, or an f-string's literal head up to
    its last dot (``f"mddpm.cli.{name}"`` -> ``mddpm.cli``); None for any other node."""
    if not (isinstance(node, ast.Call) and node.args and getattr(node.func, "attr", getattr(node.func, "id", None))
            == "import_module"):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        name = arg.value
    elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        name = arg.values[0].value.rpartition(".")[0]
    else:
        return None
    return name if name.split(".")[0] == "mddpm" else None


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "mddpm").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the mddpm modules it imports (a name imported from a package counts as its module if it is one)."""
    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mddpm":
                deps |= {known(f"{node.module}.{a.name}") for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names if a.name.split(".")[0] == "mddpm"}
            elif _imported_by_name(node):  # importlib.import_module("mddpm.x") or f"mddpm.x.{name}"
                deps.add(known(_imported_by_name(node)))
        edges[name] = deps - {name}
    return edges


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else parts[0]]


def test_every_module_has_a_layer_and_imports_none_above_it():
    edges = _imports(_modules())
    unknown = sorted({m.split(".")[1] for m in edges if "." in m} - set(LAYERS))
    assert not unknown, f"give these a layer in tests/test_architecture.py: {unknown}"
    upward = [f"{a} -> {b}" for a, deps in edges.items() for b in deps if _layer(b) > _layer(a)]
    assert not upward, upward


def test_no_import_cycle():
    edges = _imports(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(edges[module]):
            if state.get(dep) == 1:
                return path + [module, dep]
            if dep not in state and (cycle := visit(dep, path + [module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_evaluation_draws_nothing_and_viz_only_draws():
    edges = _imports(_modules())
    drawn = [f"{a} -> {b}" for a, deps in edges.items() if a.startswith("mddpm.evaluation")
             for b in deps if b.startswith("mddpm.viz")]
    assert not drawn, drawn
    allowed = ("mddpm.viz", "mddpm.data", "mddpm.io", "mddpm.errors")
    beyond = [f"{a} -> {b}" for a, deps in edges.items() if a.startswith("mddpm.viz")
              for b in deps if not b.startswith(allowed) and b != "mddpm"]
    assert not beyond, beyond
