"""Fuzzed adds, events and removals through ``socialfeat add``, ``log`` and ``remove``, the way a user runs them,
against two live runs: one with text ids, one with integer ids. Malformed images (truncated, zero bytes, headers
claiming huge sizes, text, a folder, a missing or outside path, a NUL in the path), odd ids (empty, NUL, very long,
not an integer for the integer run, in the batch already, repeated with another image), odd fields (huge text, NUL)
and odd events (unknown, removed or live items, negative, NaN, infinite or huge values, bad times, missing columns,
empty files, the wrong format) in every table format.

Judged by the fuzz checker (no traceback; exit 0, or 2 with exactly one ``error:`` line) and by the store's own
promise, nothing half-added: a refused call leaves the store's items, vectors, removals, events and version as they
were, and after any call every item the store holds has its vectors and its image, with no temporary left in the
image folder. Cases share the two runs, so the store grows as the fuzz goes.

Shared by ``tests/test_fuzz.py`` (a sample) and ``bench/fuzz.py`` (the ``add``, ``log`` and ``remove`` parts).
"""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fuzzing import Case, Outcome, image_file, render, run_cli, table_file
from hypothesis import strategies as st

RUNS = ("text", "integer")  # which run a case goes to: its ids are text, or integers
SEED_ITEM = {"text": "seed-item", "integer": "900001"}  # added at set-up: events and --replace have a live item
REMOVED = {"text": "i00002", "integer": "2"}  # removed at set-up: events on it are refused
NEW_USER = {"text": "fuzz-user", "integer": "800001"}
FEW = st.sampled_from([0, 0, 0, 1, 1, 2])  # table faults: mostly none, so the cells' own faults show


def batch_id(run: str, k: int, prefix: str = "i") -> str:
    """The k-th item (or user, ``prefix`` u) of the simulated platform as the run spells it."""
    return str(k) if run == "integer" else f"{prefix}{k:05d}" if prefix == "i" else f"{prefix}{k:04d}"


@dataclass
class LiveCase:
    """One generated call: the CLI case (``{run}`` is the run below) and which run it goes to."""

    run: str
    case: Case


# ------------------------------------------------------------------------------------------------ ids and cells
def _item_id(draw: st.DrawFn, run: str, fresh: int) -> tuple[str, str]:
    """(id, how it is odd) for an added item."""
    how = draw(st.sampled_from(["fresh"] * 14 + ["empty", "blank", "nul", "very long", "long", "batch", "seed",
                                                "unicode", "newline", "markup", "not an integer"]))  # fmt: skip
    fresh_id = str(700_000 + fresh) if run == "integer" else f"fz{fresh}"
    return {
        "fresh": fresh_id,
        "empty": "",
        "blank": "  ",
        "nul": f"a\x00{fresh}",
        "very long": "x" * 1500,
        "long": f"{fresh}" + "7" * 990 if run == "integer" else f"fz{fresh}" + "y" * 990,
        "batch": batch_id(run, draw(st.integers(0, 9))),
        "seed": SEED_ITEM[run],
        "unicode": f"日本🙂{fresh}",
        "newline": f"a\nb{fresh}",
        "markup": f"[red]x{fresh}[/]",
        "not an integer": draw(st.sampled_from(["abc", "1.5", "007", "1e3", "99999999999999999999", "-0", " 12"])),
    }[how], how


ODD_FIELDS = ["", "a title", "日本🙂", "x" * 100_001, "a\x00b", "[bold]t[/]", "line\nbreak", " "]


@st.composite
def add_cases(draw: st.DrawFn) -> LiveCase:
    """``add RUN --items TABLE``: one to three items with drawn ids, images and fields, in any table format."""
    run = draw(st.sampled_from(RUNS))
    fresh = draw(st.integers(0, 10**6))
    files: dict[str, bytes] = {}
    rows, notes = [], []
    for k in range(draw(st.integers(1, 3))):
        item, how = _item_id(draw, run, fresh + k)
        shape = draw(st.sampled_from(["good"] * 8 + ["fuzzed"] * 4 + ["folder", "missing", "outside",
                                      "nul path", "repeat"]))  # fmt: skip
        path = f"img/{k}.png"
        if shape == "good":
            files[path] = render("RGB", (24, 24), "PNG", 1, draw(st.integers(0, 255)))
        elif shape == "fuzzed":
            data, suffix, desc = draw(image_file())
            path = f"img/{k}{suffix}"
            files[path] = data
            shape = desc
        elif shape == "folder":
            files[f"img/dir{k}/keep.txt"] = b""
            path = f"img/dir{k}"
        elif shape == "missing":
            path = "img/gone.png"
        elif shape == "outside":
            path = draw(st.sampled_from(["../outside.png", "/etc/hostname", "img/../../x.png"]))
        elif shape == "nul path":
            path = "img/a\x00b.png"
        elif shape == "repeat" and rows:  # an id of an earlier row, with another image
            files[path] = render("L", (20, 20), "PNG", 1, k)
            item, how = rows[0][0], "repeated id"
        else:
            files[path] = render("RGB", (20, 20), "JPEG", 1, k)
        fields = [draw(st.sampled_from(ODD_FIELDS)) if draw(st.integers(0, 7)) == 0 else f"f{k}" for _ in range(3)]
        rows.append([item, path, *fields, draw(st.sampled_from([1, 2.5, None, "x", float("nan")]))])
        notes.append(f"{how} id {item[:20]!r}, image {shape} {path[:30]!r}, fields {[f[:10] for f in fields]}")
    name, data, desc, flag = draw(
        table_file(["item_id", "image", "title", "text", "tags", "price"], rows, "items", FEW)
    )
    files[name] = data
    argv = ["add", "{run}", "--items", f"{{w}}/{name}"]
    if flag:
        argv += ["--set", f"ingest.format={flag}"]
    if draw(st.integers(0, 3)) == 0:
        argv.append("--replace")
    root = draw(st.sampled_from([None] * 6 + ["{w}", "{w}/img", "{w}/nowhere", f"{{w}}/{name}"]))
    if root:
        argv += ["--image-root", root]
    return LiveCase(run, Case("add", f"{run} run; items: {desc}; " + "; ".join(notes), files, argv))


def _event_cell(draw: st.DrawFn, run: str, column: str) -> object:
    if column == "user_id":
        return draw(st.sampled_from([batch_id(run, draw(st.integers(0, 20)), "u"), NEW_USER[run], "", "a\x00b",
                                     "u" * 1500, "abc" if run == "integer" else "42", "9" * 25]))  # fmt: skip
    if column == "item_id":
        return draw(st.sampled_from([batch_id(run, draw(st.integers(0, 20))), batch_id(run, 3), SEED_ITEM[run],
                                     REMOVED[run], "no-such-item", "", "a\x00b", "1.5", "x" * 1500]))  # fmt: skip
    if column == "event":
        return draw(st.sampled_from(["view", "like", "share", None, "", "a\x00b", "e" * 200, "日本", "zap"]))
    if column == "value":
        return draw(st.sampled_from([None, 1, 2.5, 0, -1, float("nan"), float("inf"), "abc", 1e31, 1e30, "1e400"]))
    return draw(st.sampled_from([None, "2025-01-02T03:04:05", "2025-01-02", "2024-13-45", "yesterday", 1.7e9, 5e12,
                                 -1e12, 3e11, float("nan"), "1700000000", "", True]))  # fmt: skip


@st.composite
def log_cases(draw: st.DrawFn) -> LiveCase:
    """``log RUN EVENTS``: one to four events with drawn cells, columns dropped or renamed, in any table format,
    sometimes an empty file or a table in another format than its name says."""
    run = draw(st.sampled_from(RUNS))
    columns = ["user_id", "item_id", "event", "value", "timestamp"]
    rows = [[_event_cell(draw, run, c) for c in columns] for _ in range(draw(st.integers(1, 4)))]
    name, data, desc, flag = draw(table_file(columns, rows, "events", FEW))
    argv = ["log", "{run}", f"{{w}}/{name}"]
    if flag:
        argv += ["--set", f"ingest.format={flag}"]
    shown = "; ".join(", ".join(repr(v)[:20] for v in row) for row in rows)
    return LiveCase(run, Case("log", f"{run} run; events: {desc}; rows: {shown}", {name: data}, argv))


@st.composite
def remove_cases(draw: st.DrawFn) -> LiveCase:
    """``remove RUN ID...``: known, live, removed, unknown and malformed ids, repeated, mixed."""
    run = draw(st.sampled_from(RUNS))
    pool = [batch_id(run, 20 + draw(st.integers(0, 150))), SEED_ITEM[run], REMOVED[run], "no-such-item", "", "a\x00b",
            "x" * 1500, "[red]x[/]", "-1", f"fz{draw(st.integers(0, 10**6))}"]  # fmt: skip
    ids = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    return LiveCase(run, Case("remove", f"{run} run; ids {[i[:20] for i in ids]}", {}, ["remove", "{run}", *ids]))


LIVE_STRATEGIES = {"add": add_cases, "log": log_cases, "remove": remove_cases}


# ------------------------------------------------------------------------------------------------ the runs
def int_platform(platform: Path, dest: Path) -> dict[str, tuple[str, Path]]:
    """The simulated platform's log and items with integer ids (``u0012`` → 12, ``i00012`` → 12), its images
    where they are: ingest flags for it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("interactions", "items"):
        with open(platform / f"{name}.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        head = rows[0]
        for row in rows[1:]:
            for c, col in enumerate(head):
                if col in ("user_id", "item_id"):
                    row[c] = str(int(row[c][1:]))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (dest / f"{name}.csv").write_text(buf.getvalue())
    return {
        "ingest.interactions": ("fuzz", dest / "interactions.csv"),
        "ingest.items": ("fuzz", dest / "items.csv"),
        "ingest.image_root": ("fuzz", platform),
    }


def trained_run(flags: dict[str, tuple[str, Path]], run: Path) -> Path:
    """ingest → factorize → targets → train (tiny net, one epoch) → embed learned: what ``add`` and ``log`` need."""
    from socialfeat.config import load_config
    from socialfeat.data.ingest import ingest
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    overrides = ["factorize.factors=8", "factorize.evaluate=false", "split.cold_fraction=0.2", "targets.clusters=4",
                 "train.backbone=socialfeat_tiny", "train.weights=random", "train.image_size=32", "train.epochs=1",
                 "train.batch_size=32", "train.threads=1", "train.targets=[factors]"]  # fmt: skip
    cfg = load_config(None, overrides, flags)
    ingest(cfg, run / "dataset")
    factorize(cfg, run)
    targets(cfg, run)
    train(cfg, run)
    embed(cfg, run, "learned")
    return run


@dataclass
class LiveBench:
    """The two runs the cases go to, each with a removed batch item and a live item added at set-up."""

    runs: dict[str, Path]

    @classmethod
    def prepare(cls, text_run: Path, platform: Path, work: Path) -> LiveBench:
        """A copy of ``text_run`` (a trained run of the simulated platform) and an integer-id run of the same
        platform, trained here."""
        from socialfeat.config import load_config
        from socialfeat.live.catalogue import Live, Upload
        from socialfeat.live.tables import NewItem

        runs = {"text": Path(shutil.copytree(text_run, work / "live-text" / "run")),
                "integer": trained_run(int_platform(platform, work / "live-int" / "platform"), work / "live-int" / "run")}  # fmt: skip
        for kind, run in runs.items():
            live = Live(load_config(None, []), run, create=True)
            live.remove([REMOVED[kind]])
            live.add([Upload(NewItem(SEED_ITEM[kind], "seed.png", title="seed"), render("RGB", (24, 24), "PNG", 1, 9))])
        return cls(runs)


def store_state(run: Path) -> dict[str, int]:
    """The store's row counts and version, read-only."""
    db = sqlite3.connect(f"file:{run / 'live' / 'live.db'}?mode=ro", uri=True)
    try:
        one = lambda sql: int(db.execute(sql).fetchone()[0])  # noqa: E731
        return {
            "items": one("SELECT count(*) FROM items"),
            "vectors": one("SELECT count(*) FROM vectors"),
            "removals": one("SELECT count(*) FROM removals"),
            "events": one("SELECT count(*) FROM events"),
            "version": one("SELECT value FROM meta WHERE key = 'version'"),
            "without vectors": one(
                "SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.item_id = i.item_id)"
            ),  # fmt: skip
        }
    finally:
        db.close()


def _missing_images(run: Path) -> list[str]:
    db = sqlite3.connect(f"file:{run / 'live' / 'live.db'}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT image FROM items")]
    finally:
        db.close()
    return [n for n in names if not (run / "live" / "images" / n).is_file()]


def run_live_case(case: LiveCase, base: Path, bench: LiveBench) -> Outcome:
    """Run one case through the CLI and judge it: the fuzz checker, then the store (unchanged when refused; whole
    after any call)."""
    run = bench.runs[case.run]
    before = store_state(run)
    outcome = run_cli(case.case, base, run)
    after = store_state(run)
    if outcome.code != 0 and after != before:
        outcome.problems.append(f"half-added: a refused call changed the store ({before} → {after})")
    if after["without vectors"]:
        outcome.problems.append(f"half-added: {after['without vectors']} item(s) without vectors")
    missing = _missing_images(run)
    if missing:
        outcome.problems.append(f"half-added: item images missing from live/images: {missing[:3]}")
    temporaries = [p.name for p in (run / "live" / "images").glob(".*")]
    if temporaries:
        outcome.problems.append(f"temporary leftovers in live/images: {temporaries[:3]}")
    return outcome
