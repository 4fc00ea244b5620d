"""User text is never markup (issue 31, case 3): a run whose titles, tags, item ids, user ids and event names hold
Rich markup (``[/]``, ``[bold red]x``, ``Sunset [b/w]``), ANSI escapes and control characters goes through every
command that prints them; each exits 0 and prints the text as written, control characters made visible. The same
run's user and item ids with a newline are addressable in the explorer's API."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from environment import need_module

from socialfeat.cli import out
from socialfeat.cli.options import one_line, shown

# the item and user ids (and titles) the tiny run is built with: markup, ANSI escapes, control characters, newlines
ITEMS = ["[/]", "[bold red]x", "Sunset [b/w]", "\x1b[31mred\x1b[0m", "two\nlines\x07", "123456789012345678901234567890"]
TITLES = ["[/]", "[bold red]x", "Sunset [b/w]", "\x1b[1mbold\x1b[0m", "tab\there\rand\x00nul", "back\\[i]slash\\"]
USERS = ["[/]u", "[bold red]u", "Sunset [b/w] u", "\x1b[31mu", "us\ner"]
BIG_USER = "98765432109876543210987654321"  # a JSON integer beyond int64: kept as its digits, as text
EVENT = "[bold]like"
GHOST = "[red]ghost\x1b[0m"  # an item of the log missing from the items table: named in a warning


def printed(value: str) -> str:
    """How a value must appear: as written, with control characters visible (``\\x1b``, ``\\n``)."""
    return one_line(value)


def test_shown_escapes_markup_and_makes_control_characters_visible() -> None:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for text in [*ITEMS, *TITLES, *USERS, EVENT, GHOST, "a\\", "\\[b]"]:
        console.print(f"[bold]<{shown(text)}>[/bold]", highlight=False)
        assert console.export_text().rstrip("\n") == f"<{printed(text)}>", text
    console.file.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny platform with its busiest items and users renamed to hostile ids and titles, as JSON Lines (which
    carries any string); ingested through the CLI, then factorized, trained (one epoch) and embedded."""
    from socialfeat.config import SimulateConfig, load_config
    from socialfeat.data.simulate import simulate
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    base = tmp_path_factory.mktemp("hostile")
    platform = base / "platform"
    simulate(platform, SimulateConfig(n_users=120, n_items=80, image_size=32, views_per_user=30), seed=3)
    with open(platform / "interactions.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    with open(platform / "items.csv", newline="") as fh:
        items = list(csv.DictReader(fh))
    busy_items = [i for i, _ in Counter(r["item_id"] for r in log).most_common(len(ITEMS))]
    busy_users = [u for u, _ in Counter(r["user_id"] for r in log).most_common(len(USERS) + 1)]
    item_id = dict(zip(busy_items, ITEMS, strict=True))
    user_id: dict[str, object] = dict(zip(busy_users, [*USERS, int(BIG_USER)], strict=True))
    title = dict(zip(busy_items, TITLES, strict=True))
    with open(base / "log.jsonl", "w") as fh:
        for r in log:
            event = EVENT if r["event"] == "like" else r["event"]
            row = {
                "user_id": user_id.get(r["user_id"], r["user_id"]),
                "item_id": item_id.get(r["item_id"], r["item_id"]),
            }
            fh.write(json.dumps({**row, "event": event, "timestamp": r["timestamp"]}) + "\n")
        fh.write(json.dumps({"user_id": USERS[0], "item_id": GHOST, "event": "view"}) + "\n")
    with open(base / "items.jsonl", "w") as fh:
        for r in items:
            tags = "[b]tag|\x1b[1mt" if r["item_id"] in title else r["tags"]
            row = {"item_id": item_id.get(r["item_id"], r["item_id"]), "image": r["image"], "tags": tags}
            fh.write(json.dumps({**row, "title": title.get(r["item_id"], r["title"])}) + "\n")
    run = base / "run"
    argv = ["ingest", "--interactions", str(base / "log.jsonl"), "--items", str(base / "items.jsonl")]
    argv += ["--image-root", str(platform), "--out", str(run / "dataset")]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        ok(argv)  # the ingest summary, printed through the CLI's consoles
    cfg = load_config(
        None,
        [
            "factorize.factors=8",
            "factorize.alpha=1",
            "factorize.evaluate=false",
            "split.cold_fraction=0.2",
            "targets.clusters=4",
            "train.backbone=socialfeat_tiny",
            "train.weights=random",
            "train.image_size=32",
            "train.epochs=1",
            "train.batch_size=64",
            "train.finetune=all",
            "train.threads=1",
            "train.targets=[factors,factor-clusters]",
        ],
    )
    factorize(cfg, run)
    targets(cfg, run)
    train(cfg, run)
    embed(cfg, run, "learned")
    new_image = base / "[b]new \x1b[31m.png"
    shutil.copy(platform / items[0]["image"], new_image)
    return {"run": run, "image": new_image, "ingest_out": stdout.getvalue(), "ingest_err": stderr.getvalue()}


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console: no table cell is wrapped, so each value is found on one line."""
    monkeypatch.setattr(out, "_width", 2000)


def _items(run: Path) -> list[object]:
    return pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist()


def test_ingest_keeps_the_ids_and_prints_the_event_and_warning_literally(hostile: dict) -> None:
    assert printed(EVENT) in hostile["ingest_out"], hostile["ingest_out"]
    assert f"(e.g. {printed(GHOST)})" in hostile["ingest_err"], hostile["ingest_err"]
    assert "\x1b" not in hostile["ingest_out"] + hostile["ingest_err"]
    assert set(ITEMS) <= set(_items(hostile["run"]))  # ids as given, the 30-digit one as its digits
    users = pq.read_table(hostile["run"] / "dataset" / "users.parquet").column("user_id").to_pylist()
    assert BIG_USER in users and set(USERS) <= set(users)


def test_targets_prints_words_and_items_literally(
    hostile: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = shutil.copytree(hostile["run"], tmp_path / "run", ignore=shutil.ignore_patterns("model", "features"))
    ok(["targets", str(run), "--clusters", "4", "--set", "targets.targets=[factors,factor-clusters]"])
    assert "\x1b" not in capsys.readouterr().out


def test_similar_prints_ids_and_titles_literally(hostile: dict, capsys: pytest.CaptureFixture[str]) -> None:
    run = hostile["run"]
    everything = str(len(_items(run)))
    capsys.readouterr()
    for item in ITEMS:  # all of an item's neighbours: every other hostile id and title is printed
        ok(["similar", str(run), item, "--k", everything])
        text = capsys.readouterr().out
        assert f"similar to item {printed(item)} (learned/" in text
        assert all(printed(t) in text for t in TITLES if t != TITLES[ITEMS.index(item)])
        assert all(printed(i) in text for i in ITEMS if i != item)
        assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    ok(["similar", str(run), "--image", str(hostile["image"]), "--k", everything])
    text = capsys.readouterr().out
    assert printed(str(hostile["image"])) in text and all(printed(t) in text for t in TITLES)


def test_recommend_prints_ids_and_titles_literally(hostile: dict, capsys: pytest.CaptureFixture[str]) -> None:
    run = hostile["run"]
    everything = str(len(_items(run)))
    capsys.readouterr()
    for user in [*USERS, BIG_USER]:
        ok(["recommend", str(run), "--user", user, "--k", everything, "--include-seen"])
        text = capsys.readouterr().out
        assert f"items for user {printed(user)} (seen included)" in text
        assert all(printed(t) in text for t in TITLES) and all(printed(i) in text for i in ITEMS)
        assert "\x1b" not in text
    ok(["recommend", str(run), "--image", str(hostile["image"]), "--k", "1000"])
    text = capsys.readouterr().out
    assert f"audience of {printed(hostile['image'].name)}" in text
    assert all(printed(u) in text for u in [*USERS, BIG_USER]) and "\x1b" not in text


def test_an_empty_user_or_item_id_is_a_proper_line(hostile: dict, capsys: pytest.CaptureFixture[str]) -> None:
    run = hostile["run"]
    line = fails(["recommend", str(run), "--user", ""], capsys)
    assert line == "error: --user: expected a user id, got an empty string"
    assert fails(["similar", str(run), ""], capsys) == "error: ITEM_ID: expected an item id, got an empty string"


def test_ids_with_a_newline_are_addressable_in_the_api(hostile: dict) -> None:
    """Starlette's ``path`` parameter stops at a newline (404 before); a query parameter carries any id at all."""
    need_module("fastapi", "the serve extra is not installed")
    from fastapi.testclient import TestClient

    from socialfeat.config import load_config
    from socialfeat.serve.app import create_app
    from socialfeat.serve.explorer import Explorer

    client = TestClient(create_app(Explorer(load_config(None, []), hostile["run"])))
    for user in USERS:
        by_path = client.get(f"/api/users/{quote(user, safe='')}/recommendations", params={"k": 3})
        assert by_path.status_code == 200 and by_path.json()["user"] == user, (user, by_path.text)
        by_query = client.get("/api/recommendations", params={"user": user, "k": 3})
        assert by_query.status_code == 200 and by_query.json() == by_path.json()
    for odd in ["..", ".", "a/b", "x\n"]:
        answer = client.get("/api/recommendations", params={"user": odd})
        assert answer.status_code == 404 and answer.json()["detail"] == f"unknown user '{odd}'"
    item = ITEMS[4]  # a newline and a bell
    answer = client.get(f"/api/items/{quote(item, safe='')}")
    assert answer.status_code == 200 and answer.json()["id"] == item
    assert client.get(f"/api/items/{quote(item, safe='')}/similar", params={"k": 3}).status_code == 200
