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


# The sub-packages, lowest first: each may import its own modules and those of the packages before it, never one
# after it. The modules at the top (the tool declarations, the pipeline, the SDK's tools made of them) may import every
# package.
LAYERS = ("runtime", "openmeter", "questions", "answers", "access")
TOP = {"pipeline", "tools", "sdk_tools"}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package's own __init__
        return -1
    if parts[1] in TOP:
        return len(LAYERS)
    return LAYERS.index(parts[1])


def test_every_module_lives_in_a_layer() -> None:
    loose = {name for name in import_graph() if name.count(".") == 1 and name.split(".")[1] not in {*LAYERS, *TOP}}
    assert not loose, f"modules outside every sub-package: {sorted(loose)}"


def test_each_layer_says_what_it_owns_and_may_import() -> None:
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{layer}/__init__.py has no docstring saying what it may import"


def test_dependencies_run_one_way_between_the_layers() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not upward, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(sorted(upward))


def test_dependencies_run_one_way() -> None:
    graph = import_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    # The stand-in is a test double of the server: it shares only how the meter reads a number with the client.
    standin = {name for name in graph if name.startswith(f"{PACKAGE}.openmeter.standin")}
    for module in standin:
        assert reaches(module) <= standin | {f"{PACKAGE}.openmeter.numbers"}, module
    # A pure module reaches only pure modules: these, and the pure questions themselves (trend names its dimensions
    # as filters does).
    pure_questions = {f"{PACKAGE}.questions.{name}" for name in ("trend", "compare", "forecast", "filters")}
    pure = {f"{PACKAGE}.runtime.{name}" for name in ("errors", "window")} | pure_questions
    for module in pure_questions:
        assert reaches(module) <= pure, module
    assert reaches(f"{PACKAGE}.runtime.window") <= pure
