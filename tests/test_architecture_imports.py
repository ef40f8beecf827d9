"""The floors of docs/architecture.md hold: which conspo package imports which, and no import cycle.

Static: every `import` / `from ... import` in src/conspo (lazy ones inside functions included, imports under
`if TYPE_CHECKING:` left out, as they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# package -> the conspo packages it may import (docs/architecture.md, "Floors").
FLOORS: dict[str, set[str]] = {
    "conspo.objectives": set(),
    "conspo.config": set(),
    "conspo.rewards": {"conspo.config"},
    "conspo.data": {"conspo.config"},
    "conspo.testbed": {"conspo.config", "conspo.data", "conspo.rewards"},
    "conspo.rollout": set(),
    "conspo.eval": {"conspo.config", "conspo.data", "conspo.rewards", "conspo.rollout"},
    "conspo.trainer": {
        "conspo.config",
        "conspo.objectives",
        "conspo.rewards",
        "conspo.data",
        "conspo.testbed",
        "conspo.rollout",
        "conspo.eval",
    },
    "conspo.integrations": {"conspo.config", "conspo.objectives", "conspo.rewards", "conspo.trainer"},
    "conspo.compare": {"conspo.config", "conspo.objectives", "conspo.testbed", "conspo.trainer"},
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in (SRC / "conspo").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known and name != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, (path, is_package) in modules.items():
        deps = _imports(module, path, is_package, known)
        # A module's own package __init__ runs first anyway: not an edge of the graph.
        graph[module] = {d for d in deps if not (modules[d][1] and module.startswith(d + "."))}
    return graph


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_import_cycle():
    assert _cycles(_graph()) == []


def test_packages_import_only_the_floors_below_them():
    wrong = []
    for module, deps in sorted(_graph().items()):
        package = _package(module)
        if package not in FLOORS:
            continue
        for dep in sorted(deps):
            target = _package(dep)
            if target != package and target not in FLOORS[package]:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_no_objective_module_imports_another():
    objectives = {"conspo", "grpo", "sequence_ratio", "soft_clip", "disco", "analysis"}
    names = {f"conspo.objectives.{name}" for name in objectives}
    graph = _graph()
    assert {m: graph[m] & names for m in names if graph[m] & names} == {}
    assert not graph["conspo.objectives.registry"] & names
