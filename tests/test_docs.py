"""The manual cannot drift from the program: the CLI reference is what the app generates, and every example the
docs mark as runnable (``<!-- runnable -->`` on the line before a ```bash or ```python fence, in README.md or
docs/**/*.md) runs on a small demo run at ``runs/demo`` and exits 0. An example marked ``<!-- runnable: serve
--writable -->`` runs beside ``socialfeat serve runs/demo --writable`` on a free port, with ``SERVER`` (its address)
and ``TOKEN`` (the token writes must send) in its environment: the API's curl examples."""

from __future__ import annotations

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


def api_members() -> dict[str, tuple[str, list[str]]]:
    """docs/api page → (module, the members its ``:::`` block lists)."""
    found = {}
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        m = re.search(r"^::: ([\w.]+)$", text, re.M)
        if m:
            found[page.name] = (m[1], re.findall(r"^ {8}- (\w+)$", text, re.M))
    return found


def test_the_api_pages_document_every_stage_function_and_only_what_exists() -> None:
    import ast

    from socialfeat.pipeline import STAGES

    pages = api_members()
    assert set(STAGES) == set(STAGE_FUNCTIONS)
    documented = {member for _, members in pages.values() for member in members}
    assert not set(STAGE_FUNCTIONS.values()) - documented, set(STAGE_FUNCTIONS.values()) - documented
    for page, (module, members) in pages.items():
        path = ROOT / "src" / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(source.read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        assert members and not set(members) - defined, (page, module, set(members) - defined)


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
