"""The package's layers, checked from the code's own imports: a module imports only from its own
layer or the ones below it, and there are no import loops.

Only the entry points that put everything together may reach up: ``adapter/app.py`` (builds the
parts), the CLI modules (``adapter/ops/cli*.py``) and the runner (``adapter/pipeline/runner.py``).
Imports inside functions count like the others: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "adapter"

LAYERS: list[tuple[str, ...]] = [
    ("adapter.events.digits", "adapter.redact", "adapter.limits"),
    ("adapter.config", "adapter.keys", "adapter.tls"),
    ("adapter.events", "adapter.store", "adapter.replies"),
    ("adapter.broker", "adapter.mapping", "adapter.fallback", "adapter.samples", "adapter.replies.outbox",
     "adapter.replies.sinks"),
    ("adapter.destinations",),
    ("adapter.sim", "adapter.outage"),
    ("adapter.reconcile", "adapter.pipeline"),
    ("adapter.ops", "adapter.app", "adapter.__main__"),
]
"""Lowest first. A module belongs to the layer of the longest prefix naming it."""

ENTRY_POINTS = ("adapter.app", "adapter.__main__", "adapter.pipeline.runner")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, found = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found >= 0, f"{module} is in no layer: add it to LAYERS"
    return found


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "adapter" or name.startswith("adapter.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def is_entry_point(module: str) -> bool:
    return module in ENTRY_POINTS or module.startswith("adapter.ops.cli")


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = sorted(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
                    for module, targets in graph().items() if not is_entry_point(module)
                    for target in targets if layer_of(target) > layer_of(module))
    assert upward == []


def test_no_import_loops_between_modules() -> None:
    edges = graph()
    loops: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                loops.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    package_faces = {m for m in edges if (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").exists()}
    real = [loop for loop in loops if not set(loop) & package_faces]
    assert real == []
