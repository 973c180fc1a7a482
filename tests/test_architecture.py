"""The package's shape: no import cycles, type-only and function-level imports included, and dependencies that run
one way (the OpenMeter side never imports the questions, the pure rules import no I/O)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ai_credit_usage"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports anywhere (top level, functions, TYPE_CHECKING)."""
    modules = {_module_name(path): path for path in (ROOT / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found |= {target for target in targets if target in modules and target != name}
        graph[name] = found
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
    assert set(order) == set(graph)


def test_dependencies_run_one_way() -> None:
    graph = import_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    openmeter_side = {name for name in graph if name.startswith(f"{PACKAGE}.openmeter")}
    questions = {f"{PACKAGE}.{name}" for name in ("usage", "event_walk", "pipeline", "tools", "gate", "render")}
    for module in openmeter_side - {f"{PACKAGE}.openmeter.standin"}:
        assert not reaches(module) & questions, f"{module} reaches the questions"
    for pure in ("window", "trend", "compare", "forecast"):
        assert reaches(f"{PACKAGE}.{pure}") <= {f"{PACKAGE}.{name}" for name in ("errors", "window")}, pure
