"""The house rules of the package, checked on its source: no import circle, and each room imports only below it."""

from __future__ import annotations

import ast
from pathlib import Path

import socialfeat

PACKAGE = Path(socialfeat.__file__).resolve().parent
STAGE_HELPER_RULES = {  # a stage never climbs into another stage's module for a helper they share
    "socialfeat.train": ("socialfeat.embed", "socialfeat.embed_images"),
    "socialfeat.embed": ("socialfeat.train",),
    "socialfeat.embed_images": ("socialfeat.train",),
    "socialfeat.evaluate.transfer_stage": ("socialfeat.train",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every socialfeat module ``path`` imports, at the top or inside a function (``from a import b`` counts as
    ``a.b`` when ``a.b`` is a module, else as ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("socialfeat"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("socialfeat"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle if there is any (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package() -> None:
    graph = _graph()
    assert "socialfeat.cli.options" in graph  # the walk sees the CLI package
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_command_modules_import_only_the_shared_options_and_tables() -> None:
    graph = _graph()
    commands = [m for m in graph if m.startswith("socialfeat.cli.") and m not in ("socialfeat.cli.options",)]
    assert len(commands) >= 8
    for module in commands:
        inside = {m for m in graph[module] if m.startswith("socialfeat.cli")}
        assert inside <= {"socialfeat.cli.options", "socialfeat.cli.tables"}, (module, inside)


def test_nothing_outside_the_cli_imports_it() -> None:
    graph = _graph()
    for module, imported in graph.items():
        if module.startswith("socialfeat.cli") or module == "socialfeat.__main__":
            continue
        assert not any(m.startswith("socialfeat.cli") for m in imported), module


def test_stages_share_helpers_through_the_runtime_not_each_other() -> None:
    graph = _graph()
    for module, forbidden in STAGE_HELPER_RULES.items():
        assert not graph[module] & set(forbidden), (module, graph[module] & set(forbidden))
        assert "socialfeat.runtime" in graph[module], module
