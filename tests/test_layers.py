"""The house's layering (../shared/STYLE.md): nothing imports upward, and no module imports form a cycle.

Layers, lowest first. ``report`` renders from data handed to it, so it sits below the run folder
and the workflows that call it; ``api`` (what ``import cxrkit`` exposes) and ``cli`` are on top.
Every import counts, also those inside functions (they would still point upward).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cxrkit"
LAYERS = [
    {"cxrkit", "labels", "config", "config_check", "outputs"},
    {"data"},
    {"models"},
    {"evaluate", "explain", "eda"},
    {"report"},
    {"run"},
    {"training"},
    {"workflows"},
    {"serve", "dicom"},
    {"api", "cli", "recipes"},
]


def layer_of(module: str) -> int:
    """The layer of ``cxrkit.a.b`` (by its first part below cxrkit; ``cxrkit`` itself is the package root)."""
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "cxrkit"
    for k, names in enumerate(LAYERS):
        if key in names:
            return k
    raise AssertionError(f"{module}: not in any layer of the house; add it to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every cxrkit module ``path`` imports, anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cxrkit"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            if base.split(".")[0] == "cxrkit":
                found.add(base)
    return found


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_layer_table_covers_every_package():
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "cxrkit"))
def test_no_upward_import(name):
    mine = layer_of(name)
    upward = sorted(m for m in imports_of(MODULES[name]) if layer_of(m) > mine)
    assert not upward, f"{name} (layer {mine}) imports higher layers: {upward}"


def test_no_import_cycles():
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for m in imports_of(path):
            while m and m not in MODULES:  # `from cxrkit.data.cache import x` -> cxrkit.data.cache
                m = m.rpartition(".")[0]
            if m and m != name:
                targets.add(m)
        graph[name] = targets
    # a package's __init__ importing its own submodules is not a cycle between layers: skip parent edges
    for name in graph:
        graph[name] = {
            t for t in graph[name] if not name.startswith(t + ".") and not t.startswith(name + ".")
        }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*stack[stack.index(nxt) :], node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, node]):
                return True
        state[node] = 2
        return False

    for n in sorted(graph):
        if state.get(n) is None and visit(n, []):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "cxrkit" / "evaluate" / "oops.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "def f():\n    from cxrkit.workflows.evaluate import evaluate_run\n    from ..run import files\n"
    )
    global SRC
    old, SRC = SRC, tmp_path / "cxrkit"
    try:
        found = imports_of(bad)
    finally:
        SRC = old
    assert found == {"cxrkit.workflows.evaluate", "cxrkit.run"}
    assert layer_of("cxrkit.workflows.evaluate") > layer_of("cxrkit.evaluate.oops")
