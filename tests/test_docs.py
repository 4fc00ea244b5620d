"""The manual cannot drift from the program: the CLI reference is what the app generates, and every example the
docs mark as runnable (``<!-- runnable -->`` on the line before a ```bash or ```python fence, in README.md or
docs/**/*.md) runs on a small demo run at ``runs/demo`` and exits 0. An example marked ``<!-- runnable: serve
--writable -->`` runs beside ``socialfeat serve runs/demo --writable`` on a free port, with ``SERVER`` (its address)
and ``TOKEN`` (the token writes must send) in its environment: the API's curl examples."""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- runnable -->"
MARK_SERVE = "<!-- runnable: serve --writable -->"  # runs beside a writable explorer of runs/demo
SERVE_START_S = 180  # the explorer loads the run's models and indexes before it listens
LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
TIMEOUT_S = 120  # per example: a marked example is a quick one (a demo at test size, a query), never a server
FAILED_AT = "docs-example-failed-at: "
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


def generator() -> ModuleType:
    """docs/gen_cli.py, the script ``make docs-cli`` runs."""
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_what_the_app_generates() -> None:
    gen = generator()
    committed = gen.PAGE.read_text(encoding="utf-8") if gen.PAGE.is_file() else ""
    fresh = gen.render()
    if committed != fresh:
        diff = difflib.unified_diff(committed.splitlines(), fresh.splitlines(), "committed", "generated", lineterm="")
        pytest.fail("docs/reference/cli.md is out of date; run: make docs-cli\n" + "\n".join(list(diff)[:40]))


STAGE_FUNCTIONS = {  # what each stage of socialfeat.pipeline calls, by stage
    "simulate": "simulate",
    "ingest": "ingest",
    "factorize": "factorize",
    "targets": "targets",
    "train": "train",
    "embed": "embed",
    "index": "build_index",
    "content": "content",
    "evaluate": "evaluate",
    "transfer": "transfer",
    "report": "report",
}


DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n|\n)*)", re.M)  # a ::: block and its indented options
SECTION = re.compile(r"^( *)(Args|Arguments|Attributes|Returns|Yields|Raises):$")
ENTRY = re.compile(r"\*{0,2}(\w+)(?: \(.*?\))?:")  # ``name:`` or ``name (type):`` opening an Args entry
NOT_YET: dict[str, str] = {}  # documented on the API pages with a known gap: name it here, with why


def api_objects() -> list[tuple[str, str]]:
    """(docs/api page, dotted path) of every object a ``:::`` block documents: the block's own path, or each
    member of a module block with a ``members:`` list."""
    found = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for m in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            members = re.findall(r"^ {8}- (\w+)$", m[2], re.M)
            found += [(page.name, f"{m[1]}.{name}") for name in members] or [(page.name, m[1])]
    return found


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def find_definition(dotted: str) -> Definition | None:
    """The ``def`` or ``class`` a dotted path names in src/, following ``from … import`` re-exports; None for a
    module, or for a name its module neither defines nor imports."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT / "src" / Path(*parts[:cut])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if source.is_file():
            break
    else:
        raise AssertionError(f"{dotted}: no module of it under src/")
    package = parts[:cut] if source.name == "__init__.py" else parts[: cut - 1]
    tree = ast.parse(source.read_text(encoding="utf-8"))
    node: ast.Module | Definition = tree
    for i, name in enumerate(parts[cut:]):
        defined = {n.name: n for n in node.body if isinstance(n, Definition)}
        if name in defined:
            node = defined[name]
            continue
        for imp in tree.body if node is tree else []:
            if isinstance(imp, ast.ImportFrom) and (
                alias := next((a for a in imp.names if (a.asname or a.name) == name), None)
            ):
                origin = (
                    [*package[: len(package) - imp.level + 1], *(imp.module or "").split(".")]
                    if imp.level
                    else [imp.module or ""]
                )
                return find_definition(".".join([*filter(None, origin), alias.name, *parts[cut + i + 1 :]]))
        return None
    return None if node is tree else node  # type: ignore[return-value]


def docstring_sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a docstring: name → its entries (the lines at the section's first indent)."""
    lines, found, i = doc.splitlines(), {}, 0
    while i < len(lines):
        m = SECTION.match(lines[i])
        i += 1
        if m is None:
            continue
        entries, first = [], None
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(m[1])):
            indent = len(lines[i]) - len(lines[i].lstrip())
            if lines[i].strip() and (first is None or indent == first):
                first = indent
                entries.append(lines[i].strip())
            i += 1
        found[m[2]] = entries
    return found


def docstring_gaps(dotted: str, node: Definition) -> list[str]:
    """What the API page of ``node`` would lack: a parameter without an ``Args:`` entry (or an entry naming no
    parameter), a result without ``Returns:``, a field of a record type without an ``Attributes:`` entry."""
    doc = ast.get_docstring(node)
    if doc is None:
        return [f"{dotted}: no docstring"]
    sections = docstring_sections(doc)
    named = {m[1] for e in sections.get("Args", sections.get("Arguments", [])) if (m := ENTRY.match(e))}
    gaps = []
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        fields = [n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        if init is not None:
            gaps += _parameter_gaps(dotted, init, named)
        else:  # a record (dataclass, pydantic model): its fields are what a reader needs
            listed = {m[1] for e in sections.get("Attributes", []) if (m := ENTRY.match(e))}
            gaps += [
                f"{dotted}: field '{f}' not under Attributes:"
                for f in fields
                if not f.startswith("_") and f not in listed
            ]
        for method in node.body:
            if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef) and not method.name.startswith("_"):
                gaps += docstring_gaps(f"{dotted}.{method.name}", method)
        return gaps
    gaps += _parameter_gaps(dotted, node, named)
    returns = node.returns
    if returns is not None and not (isinstance(returns, ast.Constant) and returns.value is None):
        if not (sections.get("Returns") or sections.get("Yields")):
            gaps.append(f"{dotted}: returns {ast.unparse(returns)} but has no Returns:")
    return gaps


def _parameter_gaps(dotted: str, fn: ast.FunctionDef | ast.AsyncFunctionDef, named: set[str]) -> list[str]:
    a = fn.args
    params = [p.arg for p in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg) if p is not None]
    params = [p for p in params if p not in ("self", "cls")]
    return [f"{dotted}: parameter '{p}' not under Args:" for p in params if p not in named] + [
        f"{dotted}: Args: names '{n}', which is no parameter" for n in sorted(named - set(params))
    ]


def test_the_api_pages_document_every_stage_function_and_only_what_exists() -> None:
    from socialfeat.pipeline import STAGES

    objects = api_objects()
    assert set(STAGES) == set(STAGE_FUNCTIONS)
    documented = {dotted.rsplit(".", 1)[-1] for _, dotted in objects}
    assert not set(STAGE_FUNCTIONS.values()) - documented, set(STAGE_FUNCTIONS.values()) - documented
    missing = [(page, dotted) for page, dotted in objects if find_definition(dotted) is None]
    assert objects and not missing, missing


def test_every_documented_function_lists_its_parameters_and_result() -> None:
    """mkdocstrings renders a Parameters table only from an ``Args:`` section, so each function and method the API
    pages show names every parameter there and says what it returns; each record type lists its fields."""
    gaps = []
    for _, dotted in api_objects():
        node = find_definition(dotted)
        if node is not None and dotted not in NOT_YET:
            gaps += docstring_gaps(dotted, node)
    assert not gaps, "\n".join(gaps)


def test_the_docstring_check_finds_what_a_page_would_lack() -> None:
    source = '''
def stage(config, run, k=3):
    """Do it.

    Args:
        config: The configuration.
        kk: A misspelt parameter.

    Returns:
        Nothing useful.
    """


def bare(run) -> int:
    """Do it without sections."""


@dataclass
class Result:
    """Where it went.

    Attributes:
        out: The folder.
    """

    out: Path
    metrics: dict
    _cache: dict
'''
    found = {n.name: n for n in ast.parse(source).body if isinstance(n, Definition)}
    assert docstring_gaps("m.stage", found["stage"]) == [
        "m.stage: parameter 'run' not under Args:",
        "m.stage: parameter 'k' not under Args:",
        "m.stage: Args: names 'kk', which is no parameter",
    ]
    assert docstring_gaps("m.bare", found["bare"]) == [
        "m.bare: parameter 'run' not under Args:",
        "m.bare: returns int but has no Returns:",
    ]
    assert docstring_gaps("m.Result", found["Result"]) == ["m.Result: field 'metrics' not under Attributes:"]


def test_api_objects_are_found_through_re_exports() -> None:
    assert isinstance(find_definition("socialfeat.UserError"), ast.ClassDef)  # socialfeat/__init__ imports it
    assert isinstance(find_definition("socialfeat.recommend.Recommender.rank"), ast.FunctionDef)
    assert find_definition("socialfeat.recommend") is None
    assert find_definition("socialfeat.recommend.no_such_name") is None


# ------------------------------------------------------------------------------------------ runnable examples
@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the fence, 1-based
    lang: str  # bash or python
    code: str
    serve: bool = False  # beside `socialfeat serve runs/demo --writable`

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page}:{self.line}"


def extract(page: Path) -> list[Example]:
    """The marked blocks of one page; a marker not directly above a bash or python fence is an error."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() not in (MARK, MARK_SERVE):
            continue
        where = f"{page}:{i + 1}"
        m = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if m is None or m["lang"] not in LANGS:
            raise ValueError(f"{where}: {MARK} must stand on the line before a ```bash or ```python fence")
        indent, fence = m["indent"], m["fence"]
        body = []
        for j in range(i + 2, len(lines)):
            if lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0]):
                break
            body.append(lines[j].removeprefix(indent))
        else:
            raise ValueError(f"{where}: the marked block is never closed")
        found.append(Example(page, i + 2, LANGS[m["lang"]], "\n".join(body) + "\n", line.strip() == MARK_SERVE))
    return found


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def run_example(example: Example, cwd: Path, scratch: Path, extra_env: dict[str, str] | None = None) -> None:
    """Run one example in ``cwd`` with the venv's tools first on PATH; fail with the page, line and stderr tail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1", COLUMNS="120", **(extra_env or {}))
    if example.lang == "bash":  # the ERR trap names the command that failed, not just the block's first line
        argv = ["bash", "-Eeuo", "pipefail", "-c", f"trap 'echo \"{FAILED_AT}$BASH_COMMAND\" >&2' ERR\n{example.code}"]
    else:
        script = scratch / f"example-{example.line}.py"
        script.write_text(example.code, encoding="utf-8")
        argv = [sys.executable, str(script)]
    head = example.code.strip().splitlines()[0] if example.code.strip() else ""
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{example.where}: the {example.lang} example ran over {TIMEOUT_S} s: {head}", pytrace=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        at = [line.removeprefix(FAILED_AT) for line in lines if line.startswith(FAILED_AT)]
        head = at[-1] if at else head
        told = [line for line in lines if not line.startswith(FAILED_AT)] or done.stdout.strip().splitlines()
        tail = "\n".join(told[-15:])
        pytest.fail(
            f"{example.where}: the {example.lang} example exited {done.returncode}: {head}\n{tail}", pytrace=False
        )


def collect() -> tuple[list[Example], list[str]]:
    """Every marked example of the docs, and the markers that stand above no block (failed by a test below)."""
    examples, errors = [], []
    for page in doc_pages():
        try:
            examples += extract(page)
        except ValueError as exc:
            errors.append(str(exc))
    return examples, errors


EXAMPLES, MARK_ERRORS = collect()


@pytest.fixture(scope="module")
def demo_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``runs/demo``: the demo at test size (``socialfeat demo --small``), made once; config paths
    are relative to the folder, so a copy of it is a working demo run of its own. While writing examples, set
    SOCIALFEAT_DOCS_DEMO to a folder where ``socialfeat demo --small --out runs/demo`` ran, to reuse it."""
    given = os.environ.get("SOCIALFEAT_DOCS_DEMO")
    if given:
        assert (Path(given) / "runs" / "demo" / "report.html").is_file(), f"SOCIALFEAT_DOCS_DEMO={given}: no demo run"
        return Path(given)
    work = tmp_path_factory.mktemp("docs") / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "socialfeat", "demo", "--small", "--out", "runs/demo"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return work


@pytest.fixture
def example_dir(demo_work: Path, tmp_path: Path) -> Path:
    """A private copy of the demo folder (mtimes kept, so the run stays up to date): an example can't harm others."""
    return Path(shutil.copytree(demo_work, tmp_path / "work", symlinks=True))


@contextlib.contextmanager
def writable_server(cwd: Path, scratch: Path) -> Iterator[dict[str, str]]:
    """``socialfeat serve runs/demo --writable`` in ``cwd`` on a free port with a fresh token, until the block ends:
    {SERVER, TOKEN} for the example's environment."""
    token = secrets.token_urlsafe()
    log = scratch / "serve.log"
    with open(log, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "socialfeat", "serve", "runs/demo", "--writable", "--port", "0", "--token", token],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_plain_env(),
        )
    try:
        url = _wait_for_url(server, log)
        yield {"SERVER": url.rstrip("/"), "TOKEN": token}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _plain_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _wait_for_url(server: subprocess.Popen, log: Path) -> str:
    """The address the server prints once it listens (``socialfeat explorer: http://127.0.0.1:PORT/ ...``)."""
    deadline = time.monotonic() + SERVE_START_S
    while time.monotonic() < deadline:
        found = re.search(r"socialfeat explorer: (http://\S+?/)", log.read_text(errors="replace"))
        if found:
            return found[1]
        if server.poll() is not None:
            pytest.fail(f"socialfeat serve --writable exited {server.returncode}: {log.read_text()[-1500:]}")
        time.sleep(0.2)
    pytest.fail(f"socialfeat serve --writable did not listen within {SERVE_START_S} s: {log.read_text()[-1500:]}")


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_a_runnable_example_runs(example: Example, example_dir: Path, tmp_path: Path) -> None:
    if not example.serve:
        run_example(example, example_dir, tmp_path)
        return
    with writable_server(example_dir, tmp_path) as server:
        run_example(example, example_dir, tmp_path, server)


def test_the_docs_mark_their_examples_correctly() -> None:
    """Every marker stands above a block, and some exist."""
    assert not MARK_ERRORS, MARK_ERRORS
    assert all(e.code.strip() for e in EXAMPLES), [e.where for e in EXAMPLES if not e.code.strip()]
    assert EXAMPLES, f"no {MARK} example in README.md or docs/"


# ------------------------------------------------------------------------------- the extractor and runner
FIXTURE = f"""# A page

{MARK}
```bash
socialfeat --help | head -n 3
```

Not marked, so never run:

```bash
exit 1
```

!!! note
    {MARK}
    ```python
    import socialfeat

    print(socialfeat.__version__)
    ```

{MARK}
```bash
socialfeat --version
socialfeat similar runs/demo i00001 --top 3
```
"""


def test_marked_blocks_are_extracted_and_a_stale_one_fails_with_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(FIXTURE, encoding="utf-8")
    good_shell, good_python, stale = extract(page)
    assert (good_shell.line, good_shell.lang, good_shell.code) == (4, "bash", "socialfeat --help | head -n 3\n")
    assert good_python.lang == "python" and good_python.code.startswith("import socialfeat\n\nprint(")
    run_example(good_shell, tmp_path, tmp_path)
    run_example(good_python, tmp_path, tmp_path)
    with pytest.raises(pytest.fail.Exception) as failed:  # an option the CLI does not have (--top, not --k)
        run_example(stale, tmp_path, tmp_path)
    message = str(failed.value)
    assert message.startswith(f"{page}:{stale.line}: the bash example exited 2: socialfeat similar runs/demo"), message
    assert "No such option: --top" in message, message


def test_a_marker_without_a_block_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"{MARK}\n\n```bash\ntrue\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"page.md:1: .* must stand on the line before a ```bash or ```python"):
        extract(page)
    page.write_text(f"{MARK}\n```yaml\na: 1\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must stand on the line before"):
        extract(page)
