"""The house rules of the package, checked on its source: no import circle, and each room imports only below it.

The floors, from the top down (docs/architecture.md names the same rooms):

1. The front rooms (:data:`FRONT`): the CLI, ``pipeline`` and the library's front door. They call stages as whole
   steps, so they may import any stage. Nothing below imports them.
2. The stages (:data:`STAGES`): each writes, or answers from, one part of a run. A stage imports no other stage.
3. The shared floors: every other module (``measures``, ``features``, ``runtime``, ``export``, the ``data/``
   blocks, ``models/``, ``config``, ...). A floor imports no stage and no front room.

Why: a stage that imports another stage for a helper ties the two together. A change in one then breaks the other,
and neither can be read, tested or reused alone. So a helper two stages need moves down a floor.

Some stages read another stage's product through that stage's own reader: the explorer and the live catalogue
answer over a whole run. Each such read is listed in :data:`STAGE_READS` with its reason; any other is a failure.
"""

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


FRONT = (  # modules (and their submodules) that call stages as whole steps
    "socialfeat.cli",  # each command calls its stage
    "socialfeat.__main__",  # ``python -m socialfeat`` runs the CLI
    "socialfeat.pipeline",  # ``run`` and ``demo`` run the stages in order
    "socialfeat.library",  # ``open_run``, the library's front door: it calls the stages' readers as the CLI does
)
# the package root itself is outside the floors: every room may read its ``__version__``, and it may re-export the
# front door; the circle test still covers it
ROOT = "socialfeat"

STAGES: dict[str, tuple[str, ...]] = {  # each stage's modules (a module and its submodules)
    "ingest": ("socialfeat.data.ingest", "socialfeat.data.simulate", "socialfeat.data.absorb"),
    "factorize": ("socialfeat.factorize",),
    "targets": ("socialfeat.targets",),
    "train": ("socialfeat.train", "socialfeat.selection", "socialfeat.preservation"),
    "embed": ("socialfeat.embed", "socialfeat.embed_images"),
    "index": ("socialfeat.index",),
    "content": ("socialfeat.content",),
    "evaluate": ("socialfeat.evaluate",),  # evaluate and transfer
    "report": ("socialfeat.report",),
    "recommend": ("socialfeat.recommend",),
    "live": ("socialfeat.live",),
    "serve": ("socialfeat.serve",),
}

STAGE_READS: dict[tuple[str, str], str] = {  # (stage, module of another stage): why the import stays
    ("ingest", "socialfeat.live.store"): "ingest --absorb folds the live store into the dataset, through its reader",
    ("report", "socialfeat.live.store"): "the report counts the items and events the live store added",
    ("report", "socialfeat.index"): "the report's neighbour gallery searches the index stage's faiss index",
    ("recommend", "socialfeat.index"): "a new image's neighbours come from the index stage's faiss index",
    ("recommend", "socialfeat.content"): "a new item's factors come from the content stage's fitted model",
    ("live", "socialfeat.index"): "the live catalogue answers `similar` over the batch index plus its items",
    ("live", "socialfeat.recommend"): "the live catalogue answers `recommend` over the batch run plus its items",
    ("live", "socialfeat.content"): "an added item's factors come from the content stage's fitted model",
    ("serve", "socialfeat.index"): "the explorer is an interface over a whole run, as the CLI is",
    ("serve", "socialfeat.recommend"): "the explorer is an interface over a whole run, as the CLI is",
    ("serve", "socialfeat.content"): "the explorer is an interface over a whole run, as the CLI is",
    ("serve", "socialfeat.live"): "serve --writable edits the run's live catalogue",
    ("serve", "socialfeat.report.gallery"): "the explorer shows the report's cached thumbnails",
}


def _within(module: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _stage_of(module: str) -> str | None:
    return next((stage for stage, prefixes in STAGES.items() if _within(module, prefixes)), None)


def _is_front(module: str) -> bool:
    return _within(module, FRONT)


def _layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the floors: a stage into another stage (unless :data:`STAGE_READS` lists it), a
    floor into a stage, anything below the front into a front room."""
    found = []
    for module, imported in sorted(graph.items()):
        if _is_front(module) or module == ROOT:
            continue
        stage = _stage_of(module)
        for target in sorted(imported - {ROOT}):
            other = _stage_of(target)
            if _is_front(target):
                found.append(f"{module} imports the front room {target}")
            elif stage is None and other is not None:
                found.append(f"the floor {module} imports the {other} stage's {target}")
            elif other not in (None, stage):
                read = [m for (s, m) in STAGE_READS if s == stage and _within(target, [m])]
                if not read:
                    found.append(f"the {stage} stage's {module} imports the {other} stage's {target}")
    return found


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


def test_the_layer_check_finds_a_planted_breach() -> None:
    graph = {
        "socialfeat.content.gram": {"socialfeat.evaluate.stage"},  # a stage into another: a breach
        "socialfeat.measures.metrics": {"socialfeat.train"},  # a floor into a stage: a breach
        "socialfeat.features": {"socialfeat.cli.options"},  # a floor into a front room: a breach
        "socialfeat.recommend": {"socialfeat.index", "socialfeat.measures.metrics"},  # a listed read, a floor
        "socialfeat.pipeline": {"socialfeat.train", "socialfeat.evaluate.stage"},  # the front calls stages
    }
    breaches = _layer_breaches(graph)
    assert len(breaches) == 3, breaches
    assert any("socialfeat.content.gram" in b and "socialfeat.evaluate.stage" in b for b in breaches)
    assert _layer_breaches({"socialfeat.train": {"socialfeat.measures.coldstart", "socialfeat.runtime"}}) == []


def test_no_stage_imports_another_stage() -> None:
    graph = _graph()
    breaches = _layer_breaches(graph)
    assert not breaches, "\n".join(breaches)


def test_the_stage_lists_name_modules_that_exist() -> None:
    """A renamed stage module must not empty its stage, and a read no import needs any more goes from the list."""
    graph = _graph()
    for stage, prefixes in STAGES.items():
        for prefix in prefixes:
            assert any(_within(m, [prefix]) for m in graph), (stage, prefix)
    for (stage, target), why in STAGE_READS.items():
        used = any(_stage_of(m) == stage and any(_within(t, [target]) for t in graph[m]) for m in graph)
        assert used, f"{stage} no longer imports {target}: remove the read ({why})"
