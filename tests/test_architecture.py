"""The shape of moot/ as docs/design/architecture.md states it: no import
cycle, recipes never import the coordinator (they take a session), and no
module over 500 lines without a stated reason."""

from __future__ import annotations

import ast
from pathlib import Path

import moot

ROOT = Path(moot.__file__).resolve().parent
LONG = 500
#: What a module over LONG lines must say in its docstring, with the reason.
LONG_REASON = "Long because"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """moot modules imported by ``path`` at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name == "moot" or name.startswith("moot.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in ROOT.rglob("*.py")}
    return {name: {imp for imp in _imports(path) if imp in modules and imp != name}
            for name, path in modules.items()}


def test_no_import_cycle_in_moot() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt == "moot" or (node.startswith(nxt + ".")):
                continue  # a module importing its own package's __init__ is not a cycle of modules
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_recipes_take_a_session_and_never_import_the_coordinator() -> None:
    graph = _graph()
    offenders = sorted(name for name, imports in graph.items()
                       if name.startswith("moot.recipes") and "moot.coordinator" in imports)
    assert not offenders, f"recipes importing moot.coordinator: {offenders}"


def test_no_module_is_long_without_a_stated_reason() -> None:
    unexplained = []
    for path in sorted(ROOT.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > LONG and LONG_REASON not in docstring:
            unexplained.append(f"{path.relative_to(ROOT.parent)} ({lines} lines)")
    assert not unexplained, f"over {LONG} lines without '{LONG_REASON} ...' in the docstring: {unexplained}"


def test_integrations_use_only_the_public_api() -> None:
    """moot.integrations (the tooz driver...) import moot's package API only
    and never reach around a coordinator (its session or backend)."""
    graph = _graph()
    offenders = sorted(f"{name} imports {imp}" for name, imports in graph.items()
                       if name.startswith("moot.integrations")
                       for imp in imports if imp != "moot" and not imp.startswith("moot.integrations"))
    for path in sorted((ROOT / "integrations").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("session", "backend", "_session", "_backend"):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} uses .{node.attr}")
    assert not offenders, f"moot.integrations reaching past the public API: {offenders}"


def test_backends_that_say_they_read_no_deadline_import_none() -> None:
    """``reads_deadline = False`` lets the session skip setting the caller's
    deadline around each call: true only while those backends never read it."""
    from moot.backends.file.backend import FileBackend
    from moot.backends.memory import MemoryBackend

    assert not FileBackend.reads_deadline and not MemoryBackend.reads_deadline
    graph = _graph()
    readers = sorted(name for name, imports in graph.items()
                     if (name.startswith("moot.backends.file") or name == "moot.backends.memory")
                     and "moot.deadline" in imports)
    assert not readers, f"modules of a backend with reads_deadline = False that import moot.deadline: {readers}"
