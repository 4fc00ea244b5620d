"""Every option of every command, introspected from the typer app, given hostile values — while the other required
arguments hold valid values from a tiny run, so the hostile value is the one under test — and judged by one check:
exit 0, 2 or 130, never a traceback, with exit 2 exactly one ``error: `` line, every file that existed before the
case byte-identical (foreign folders holding the data contract's names, symlinks, inputs), nothing half-written.

Shared by ``tests/test_fuzz.py`` (a bounded sample) and ``bench/fuzz.py`` (the whole grid). Commands that run long
are bounded like a user would bound them: after ``TIMEOUTS[command]`` seconds the case gets a Ctrl-C (SIGALRM →
KeyboardInterrupt), so it must end with exit 130 and leave nothing half-written. ``serve`` runs for real up to the
server loop (config, bind, run load, ready line); ``uvicorn.Server.run`` is replaced by a return, so no server
starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from fuzzing import SHOWN_WARNINGS, Outcome, judge_exit

# ------------------------------------------------------------------------------------------------ hostile values
NUMBERS = ["nan", "inf", "-inf", "1e400", "-1", "0", str(10**30)]
TEXTS = ["", "[/]", "[bold red]x", "\x1b[31mred", "a\nb", "a\rb", "\x1b"]  # NUL cannot be in argv
PATHS = ["{w}/file.txt", "{w}/empty", "{w}/missing", "{w}/link-file", "{w}/link-dir", "{w}/link-dangling", "{w}/proj"]
HOSTILE = NUMBERS + TEXTS + PATHS
# an output path aimed at a foreign folder, or inside it, or through a link to it, or at one of its files
INTO_FOREIGN = ["{w}/proj", "{w}/link-proj", "{w}/proj/[/]", "{w}/proj/nan", "{w}/proj/a\nb", "{w}/proj/photos",
                "{w}/proj/interactions.csv", "{w}/proj/README.md", "{w}/proj/"]  # fmt: skip
FOREIGN = {  # a user's project folder: the data contract's file names, and files nothing may touch
    "interactions.csv": b"user_id,item_id\nalice,p1\n",
    "items.csv": b"item_id,image\np1,photos/p1.jpg\n",
    "README.md": b"# my project\n",
    "notes.txt": b"irreplaceable\n",
    "photos/p1.jpg": b"x\n",
}
TINY_YAML = """\
factorize: {factors: 8, iterations: 3, alpha: 1, evaluate: false}
split: {cold_fraction: 0.2}
targets: {clusters: 4}
train: {backbone: socialfeat_tiny, weights: random, image_size: 32, epochs: 1, batch_size: 32, threads: 1}
evaluate: {bootstrap: 0, users: 200, valid_users: 100, max_queries: 50}
transfer: {folds: 2, inner_folds: 2, few_shot: [1], draws: 1}
content: {lightfm: false}
"""
# the valid arguments each command gets (``{run}`` a private copy of the tiny run, ``{P}`` its platform, ``{in}``
# the case's input folder); a hostile value replaces one of them, or joins them
BASE: dict[str, dict[str, str | None]] = {
    "ingest": {"--interactions": "{P}/interactions.csv", "--items": "{P}/items.csv", "--out": "{w}/out/dataset"},
    "simulate": {"--out": "{w}/sim", "--users": "20", "--items": "20", "--image-size": "32", "--views-per-user": "5"},
    "factorize": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "targets": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "train": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "embed": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "evaluate": {"RUN": "{run}", "--config": "{in}/tiny.yaml", "--source": "learned"},
    "transfer": {"RUN": "{run}", "--config": "{in}/tiny.yaml", "--labels": "{in}/labels.csv", "--source": "learned"},
    "run": {"CONFIG": "{in}/pipeline.yaml", "--run": "{w}/prun", "--dry-run": None},
    "demo": {"--out": "{w}/demo", "--small": None},
    "report": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "index": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "similar": {"RUN": "{run}", "ITEM_ID": "{item}", "--config": "{in}/tiny.yaml"},
    "recommend": {"RUN": "{run}", "--user": "{user}", "--config": "{in}/tiny.yaml"},
    "serve": {"RUN": "{run}", "--port": "0", "--config": "{in}/tiny.yaml"},
    "export": {"RUN": "{run}", "--config": "{in}/tiny.yaml"},
    "content": {"RUN": "{run}", "--sources": "learned", "--config": "{in}/tiny.yaml"},
    "add": {"RUN": "{run}", "--items": "{in}/new_items.csv", "--image-root": "{P}", "--config": "{in}/tiny.yaml"},
    "remove": {"RUN": "{run}", "IDS": "{item}", "--config": "{in}/tiny.yaml"},
    "log": {"RUN": "{run}", "EVENTS": "{in}/events.csv", "--config": "{in}/tiny.yaml"},
}
# options that only apply with others, or exclude others: what the base gains or loses when one is under test
WITH: dict[tuple[str, str], dict[str, str | None]] = {
    ("embed", "--images"): {"--out": "{w}/emb/features.parquet"},
    ("embed", "--out"): {"--images": "{in}/images.csv"},
    ("embed", "--image-root"): {"--images": "{in}/images.csv", "--out": "{w}/emb/features.parquet"},
    ("embed", "--image-column"): {"--images": "{in}/images.csv", "--out": "{w}/emb/features.parquet"},
    ("ingest", "--image-root"): {"--items": "{P}/items.csv"},
}
WITHOUT: dict[tuple[str, str], tuple[str, ...]] = {
    ("similar", "--image"): ("ITEM_ID",),
    ("recommend", "--image"): ("--user",),
    ("recommend", "--title"): ("--user",),
    ("recommend", "--text"): ("--user",),
    ("recommend", "--tags"): ("--user",),
    ("recommend", "--include-seen"): (),
    ("run", "--run"): ("--dry-run",),  # the run folder under test gets a real (bounded) run
    ("run", "--from"): ("--dry-run",),
    ("run", "--force"): ("--dry-run",),
}
# where commands write: a foreign folder there, with a hostile value in another option, must stay untouched
OUTPUTS = {"ingest": "--out", "simulate": "--out", "demo": "--out", "run": "--run", "embed": "--out",
           "export": "--out", "report": "--out", "factorize": "RUN", "targets": "RUN", "train": "RUN",
           "index": "RUN", "content": "RUN", "evaluate": "RUN", "transfer": "RUN"}  # fmt: skip
TIMEOUTS = {"demo": 5.0, "run": 5.0, "train": 30.0, "export": 30.0}  # seconds before the Ctrl-C; others DEFAULT
DEFAULT_TIMEOUT = 20.0
AGAIN = 5.0  # seconds between further Ctrl-Cs when the first did not end the case


@dataclass
class Param:
    """One parameter of one command as click sees it: its name on the command line, and how it takes values."""

    name: str  # --out, or RUN for an argument
    kind: str  # option, flag, argument
    type: str  # click's type name: integer, float, path, text, boolean, …
    multiple: bool = False
    secondary: str | None = None  # --no-evaluate of --evaluate/--no-evaluate


def _type_name(p: Any) -> str:
    """click's type name (older typer), or the annotation typer 0.2x keeps in its own click copy."""
    if getattr(p, "type", None) is not None:
        return str(p.type.name)
    return str(getattr(getattr(p, "type_descriptor", None), "annotation", "?")).replace("typing.", "")


def commands() -> dict[str, list[Param]]:
    """Every command of the app with every parameter, from ``typer.main.get_command`` (so a new option is fuzzed
    the day it is added)."""
    import typer

    from socialfeat.cli import app

    group = typer.main.get_command(app)
    found: dict[str, list[Param]] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        params = []
        for p in command.params:
            if p.param_type_name == "argument":
                params.append(Param((p.name or "arg").upper(), "argument", _type_name(p), p.nargs == -1))
                continue
            longs = [o for o in p.opts if o.startswith("--")] or list(p.opts)
            if p.name == "help" or not longs:
                continue
            if getattr(p, "is_flag", False):
                second = next(iter(p.secondary_opts), None)
                params.append(Param(longs[0], "flag", "boolean", False, second))
            else:
                params.append(Param(longs[0], "option", _type_name(p), bool(p.multiple)))
        found[name] = params
    return found


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class OptionCase:
    """One command line: ``{w}`` is the case's work folder (the current folder while it runs), ``{in}`` its inputs,
    ``{run}`` a private copy of the tiny run, ``{P}`` the tiny run's platform (read-only)."""

    command: str
    param: str
    value: str
    argv: list[str]
    note: str = ""
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return f"{self.param}={self.value!r}{f' ({self.note})' if self.note else ''}"


def _argv(command: str, args: dict[str, str | None], params: list[Param]) -> list[str]:
    """The command line of ``args`` (name → value, None for a flag): arguments in the order click declares them."""
    argv = [command]
    for p in params:
        if p.kind == "argument" and p.name in args:
            argv.append(str(args[p.name]))
    for key, value in args.items():
        if key.startswith("ARG:"):  # an extra positional (a hostile value for a second argument)
            argv.append(str(value))
        elif key.startswith("-"):
            base = key.split("#")[0]
            argv += [base] if value is None else [base, value]
    return argv


def _base(command: str, under_test: str) -> dict[str, str | None]:
    args = dict(BASE[command])
    for drop in WITHOUT.get((command, under_test), ()):
        args.pop(drop, None)
    args.update(WITH.get((command, under_test), {}))
    return args


def option_cases(seed: int = 31) -> list[OptionCase]:
    """The whole grid, shuffled by ``seed``: every parameter × every hostile value; every flag given and given
    twice; every output aimed into a foreign folder; and a foreign output beside a hostile value elsewhere."""
    cmds = commands()
    rng = random.Random(seed)
    cases: list[OptionCase] = []
    for command, params in cmds.items():
        for p in params:
            if p.kind == "flag":
                for forms in ([p.name], [p.name, p.name], *([[p.secondary]] if p.secondary else [])):
                    args = _base(command, p.name)
                    for k, form in enumerate(forms):
                        args[f"{form}#{k}"] = None
                    cases.append(OptionCase(command, p.name, " ".join(forms), _argv(command, args, params)))
                continue
            values = HOSTILE + (INTO_FOREIGN if OUTPUTS.get(command) == p.name else [])
            for value in values:
                args = _base(command, p.name)
                if p.kind == "argument" and p.name not in BASE[command] and p.name not in args:
                    args[f"ARG:{p.name}"] = value  # an optional argument no base gives (factorize GRID)
                else:
                    args[p.name] = value
                cases.append(OptionCase(command, p.name, value, _argv(command, args, params)))
        out = OUTPUTS.get(command)
        if out is None:
            continue
        for p in params:  # the output a foreign folder, one other parameter hostile
            if p.name == out or p.kind == "flag":
                continue
            for value in rng.sample(HOSTILE, 3):
                args = _base(command, p.name)
                args.update({out: rng.choice(["{w}/proj", "{w}/link-proj"]), p.name: value})
                note = f"{out} {args[out]}"
                cases.append(OptionCase(command, p.name, value, _argv(command, args, params), note))
    rng.shuffle(cases)
    return cases


# ------------------------------------------------------------------------------------------------ fixtures of a case
@dataclass
class Bench:
    """What every case shares: a trained tiny run (copied per case, never written) and its platform."""

    run: Path
    platform: Path
    item: str
    user: str

    @classmethod
    def of(cls, run: Path, platform: Path) -> Bench:
        import pyarrow.parquet as pq

        item = str(pq.read_table(run / "dataset" / "items.parquet").column("item_id")[0].as_py())
        user = str(pq.read_table(run / "dataset" / "users.parquet").column("user_id")[0].as_py())
        return cls(run, platform, item, user)


def _inputs(w: Path, bench: Bench) -> None:
    """The case's folder: a file, an empty folder, a foreign project, three kinds of symlink, and the inputs."""
    (w / "file.txt").write_bytes(b"irreplaceable\n")
    (w / "empty").mkdir()
    for rel, data in FOREIGN.items():
        (w / "proj" / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / "proj" / rel).write_bytes(data)
    (w / "link-file").symlink_to(w / "file.txt")
    (w / "link-dir").symlink_to(w / "empty")
    (w / "link-dangling").symlink_to(w / "gone")
    (w / "link-proj").symlink_to(w / "proj")
    inp = w / "in"
    inp.mkdir()
    (inp / "tiny.yaml").write_text(TINY_YAML)
    p = bench.platform
    pipeline = f"name: fuzz\ningest: {{interactions: {p}/interactions.csv, items: {p}/items.csv}}\n"
    (inp / "pipeline.yaml").write_text(TINY_YAML + pipeline)
    images = sorted((p / "images").glob("*"))[:8] if (p / "images").is_dir() else []
    rows = [f"{img},{'ab'[k % 2]}" for k, img in enumerate(images)]
    (inp / "images.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    (inp / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    first = images[0].relative_to(p) if images else "images/none.png"
    (inp / "new_items.csv").write_text(f"item_id,image,title\nfuzz-new,{first},A new item\n")
    (inp / "events.csv").write_text(f"user_id,item_id,event\n{bench.user},{bench.item},like\n")


def snapshot(*folders: Path) -> dict[str, str]:
    """Every entry under the folders, links not followed: a file by its hash, a link by its target, a folder."""
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                p = Path(root) / name
                if p.is_symlink():
                    found[str(p)] = f"link → {os.readlink(p)}"
                elif p.is_dir():
                    found[str(p)] = "folder"
                elif p.is_file():
                    found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _half_written(*folders: Path) -> list[str]:
    left = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            left += [str(Path(root) / n) for n in dirs + files if n.startswith(".") and (".tmp-" in n or ".old-" in n)]
    return left


class _Deadline(KeyboardInterrupt):
    """The per-case bound: a Ctrl-C the fuzzer sends, told apart from the person running it."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[dict[str, int]]:
    """A Ctrl-C after ``seconds``, then another every ``AGAIN`` seconds, as a user presses it again when the first
    seems lost (one raised inside a callback that C code calls is printed as "ignored" and dropped)."""
    fired = {"rings": 0}

    def ring(signum: int, frame: object) -> None:
        fired["rings"] += 1
        raise _Deadline()

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds, AGAIN)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _no_server(self: Any, sockets: Any = None) -> None:
    """``uvicorn.Server.run`` for the fuzz: everything before serving ran; serving itself is not under test."""


def run_option_case(case: OptionCase, base: Path, bench: Bench, timeout: float | None = None) -> Outcome:
    """Run one case in-process in a fresh folder (the current folder meanwhile) and judge it. The folder is removed
    afterwards unless the case failed: then it holds what reproduces it."""
    from socialfeat.cli import main

    w = Path(tempfile.mkdtemp(prefix=f"opt-{case.command}-", dir=base))
    _inputs(w, bench)
    needs_run = any("{run}" in a for a in case.argv)
    if needs_run:
        shutil.copytree(bench.run, w / "run", symlinks=True)
    subst = {"{w}": str(w), "{in}": str(w / "in"), "{run}": str(w / "run"), "{P}": str(bench.platform),
             "{item}": bench.item, "{user}": bench.user}  # fmt: skip
    argv = []
    for a in case.argv:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    watched = [w / n for n in ("file.txt", "empty", "proj", "link-file", "link-dir", "link-dangling", "link-proj")]
    watched += [w / "in"] + ([bench.platform] if any(str(bench.platform) in a for a in argv) else [])
    before = snapshot(*watched)
    for link in ("link-file", "link-dir", "link-dangling", "link-proj"):
        before[str(w / link)] = f"link → {os.readlink(w / link)}"
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = None
    problems: list[str] = []
    timed_out = False
    cwd = Path.cwd()
    seconds = timeout if timeout is not None else TIMEOUTS.get(case.command, DEFAULT_TIMEOUT)
    patch = mock.patch("uvicorn.Server.run", _no_server) if case.command == "serve" else contextlib.nullcontext()
    try:
        os.chdir(w)
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(record=True) as caught,
            patch,
            _deadline(seconds) as fired,
        ):
            warnings.simplefilter("default")
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except _Deadline:
                problems.append(f"the bound's Ctrl-C escaped main after {seconds:g} s (no 'interrupted:' line)")
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - anything escaping main is what the fuzz looks for
                tb = traceback.format_exception(e)
                where = next((line.strip() for line in reversed(tb) if "File " in line), "")
                problems.append(f"traceback: {tb[-1].strip()} [{where[:160]}]")
            timed_out = fired["rings"] > 0
            if fired["rings"] > 1:
                problems.append(f"a Ctrl-C was lost: the case ended after {fired['rings']} of them")
    finally:
        os.chdir(cwd)
    err = stderr.getvalue()
    if code == 130:
        if "Traceback (most recent call last)" in err:
            problems.append("a traceback was printed on stderr")
        if not timed_out:
            problems.append(f"exit 130 without a Ctrl-C: {err.strip()[-200:]!r}")
        last = err.strip().split("\n")[-1] if err.strip() else ""
        if not last.startswith("interrupted: ") or any(ord(ch) < 32 and ch != "\t" for ch in last):
            problems.append(f"exit 130 without one clean 'interrupted: ' line: {last[:200]!r}")
    elif code is not None:
        problems += judge_exit(code, err)
    problems += [f"a Python warning reaches the terminal: {x.category.__name__}: {x.message} ({Path(x.filename).name})"
                 for x in caught if issubclass(x.category, SHOWN_WARNINGS)]  # fmt: skip
    after = snapshot(*watched)
    for link in ("link-file", "link-dir", "link-dangling", "link-proj"):
        p = w / link
        after[str(p)] = f"link → {os.readlink(p)}" if p.is_symlink() else ("folder" if p.is_dir() else "not a link")
    changed = [k.replace(str(w), "{w}") for k, v in before.items() if after.get(k) != v]
    if changed:
        problems.append(f"foreign files changed or removed: {changed[:4]}")
    left = _half_written(w, bench.platform)
    if left:
        problems.append(f"temporary leftovers (half-written): {[x.replace(str(w), '{w}') for x in left[:3]]}")
    detail = err.strip().split("\n")[-1] if err.strip() else ""
    if timed_out:
        detail = f"(bounded: Ctrl-C after {seconds:g} s) {detail}"
    if problems:
        problems.append(f"(inputs kept in {w})")
    else:
        shutil.rmtree(w, ignore_errors=True)
    return Outcome(case, code, problems, detail)  # type: ignore[arg-type]


def sample(cases: list[OptionCase], n: int, seed: int = 31) -> list[OptionCase]:
    """``n`` cases spread over the commands (round robin over a seeded shuffle), for the suite's bounded run."""
    rng = random.Random(seed)
    by: dict[str, list[OptionCase]] = {}
    for c in cases:
        by.setdefault(c.command, []).append(c)
    for group in by.values():
        rng.shuffle(group)
    picked: list[OptionCase] = []
    while len(picked) < n and any(by.values()):
        for group in by.values():
            if group and len(picked) < n:
                picked.append(group.pop())
    return picked
