"""``serve --writable``: the explorer's write endpoints (POST/DELETE /api/items, POST /api/events), their guards (403
read-only, 401 without the token, no start on a public address without one), and every read answering from the
live store: what this process wrote at once, what another process wrote after a sync. Answers are checked against
the library's readers over the same store (``socialfeat.live.readers``: a fresh replay, as a new process makes)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import fails, ok
from environment import need_module
from PIL import Image

import socialfeat
from socialfeat.config import load_config

need_module("fastapi", "the serve extra is not installed")

TOKEN = "t0ken-for-the-tests-0123456789"


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 36)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def detail(response: Any) -> str:
    body = response.json()
    assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body["detail"]


@pytest.fixture(scope="module")
def live_run(served_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the served run: these tests write its live store."""
    run = tmp_path_factory.mktemp("live-served") / "run"
    shutil.copytree(served_run, run, ignore=shutil.ignore_patterns("live"))
    return run


@pytest.fixture(scope="module")
def writer(live_run: Path) -> Any:
    from socialfeat.serve.explorer import Explorer

    return Explorer(load_config(None, ["serve.writable=true"]), live_run)


@pytest.fixture(scope="module")
def wclient(writer: Any) -> Any:
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    with TestClient(create_app(writer)) as c:
        yield c


def image_of(run: Path, item_id: str) -> bytes:
    """The bytes of a batch item's image, from the run's image root."""
    from socialfeat.report.gallery import Thumbnails

    thumbs = Thumbnails(run, 32)
    return (thumbs.root / thumbs.images[item_id]).read_bytes()


def add(client: Any, item_id: str, data: bytes, **fields: Any) -> Any:
    return client.post("/api/items", data={"item_id": item_id, **fields}, files={"image": ("x.png", data, "image/png")})


def listed(client: Any, **params: Any) -> list[str]:
    return [i["id"] for i in client.get("/api/items", params={"limit": 600, **params}).json()["items"]]


def recommended(client: Any, user: str, k: int = 20, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/recommendations", params={"user": user, "k": k, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def stored_images(run: Path) -> list[str]:
    folder = run / "live" / "images"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def counts(run: Path) -> dict[str, int]:
    from socialfeat.live.readers import counts as store_counts

    return store_counts(run)


# ------------------------------------------------------------------------------------------------ reads see writes
def test_an_added_item_is_listed_searchable_similar_and_recommended_at_once(wclient: Any, live_run: Path) -> None:
    from socialfeat.live.readers import for_user
    from socialfeat.live.readers import similar as live_similar

    cfg = load_config()
    # a user with a cold item among their recommendations: that item's image, added again, gets the same
    # predicted factors (the same head on the same pixels), so it must rank beside it
    users = wclient.get("/api/users", params={"limit": 100}).json()["users"]
    user, cold = next(
        (u, r) for u in users for r in recommended(wclient, u, 30) if r["factors"] == "predicted" and not r["seen"]
    )
    total = wclient.get("/api/items", params={"limit": 1}).json()["total"]
    response = add(wclient, "fresh-1", image_of(live_run, cold["id"]), title="A Fresh Arrival", tags="new, Bright|x")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["item_id"] == "fresh-1" and body["status"] == "added" and body["predicted_by"] == "image"
    assert len(body["audience"]) == 10 and [u["rank"] for u in body["audience"]] == list(range(1, 11))

    # listing and search
    assert wclient.get("/api/items", params={"limit": 1}).json()["total"] == total + 1
    assert listed(wclient)[0] == "fresh-1"  # live items first, newest first
    assert listed(wclient, split="live") == ["fresh-1"]
    assert listed(wclient, q="fresh arr") == ["fresh-1"]
    assert "fresh-1" not in listed(wclient, split="cold") + listed(wclient, split="warm")
    page = wclient.get("/api/items/fresh-1", params={"k": 5}).json()
    assert page["split"] == "live" and page["title"] == "A Fresh Arrival" and page["tags"] == ["new", "Bright", "x"]
    assert [u["user_id"] for u in page["predicted_audience"]] == [u["user_id"] for u in body["audience"][:5]]
    thumb = wclient.get("/api/items/fresh-1/thumbnail", params={"size": 64})
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (64, 64)

    # similar: the batch item with the same image is the nearest, both ways; the library agrees
    for source in ("learned", "imagenet"):
        got = wclient.get("/api/items/fresh-1/similar", params={"k": 6, "source": source}).json()["similar"]
        assert got[0]["id"] == cold["id"] and got[0]["score"] == pytest.approx(1.0, abs=1e-3)
        want = live_similar(cfg, live_run, item_id="fresh-1", source=source, k=6)
        assert [r["id"] for r in got] == [str(r["item_id"]) for r in want]
        back = wclient.get(f"/api/items/{cold['id']}/similar", params={"k": 3, "source": source}).json()["similar"]
        assert back[0]["id"] == "fresh-1" and back[0]["split"] == "live"

    # recommendations: beside its twin, scored alike, as a fresh replay of the store ranks them
    rows = recommended(wclient, user, cold["rank"] + 1)
    ranks = {r["id"]: r for r in rows}
    assert "fresh-1" in ranks and ranks["fresh-1"]["live"] and ranks["fresh-1"]["factors"] == "predicted"
    assert ranks["fresh-1"]["score"] == pytest.approx(ranks[cold["id"]]["score"], abs=1e-3)
    assert [r["id"] for r in rows] == [str(r["item_id"]) for r in for_user(cfg, live_run, user, len(rows))]


def test_a_write_by_another_process_is_seen_after_a_sync(
    wclient: Any, writer: Any, live_run: Path, tmp_path: Path
) -> None:
    from socialfeat.live.operations import add_items

    Image.new("RGB", (30, 30), (10, 200, 30)).save(tmp_path / "green.png")
    (tmp_path / "items.csv").write_text("item_id,image,title\nother-1,green.png,Green From Cron\n")
    version = writer.live.version
    add_items(load_config(), live_run, tmp_path / "items.csv")  # its own Live and store connection
    assert writer.live.version == version  # nothing pushed: the next request syncs
    assert listed(wclient, q="green from cron") == ["other-1"]
    assert writer.live.version > version
    got = wclient.get("/api/items/other-1/similar", params={"k": 4}).json()["similar"]
    assert len(got) == 4 and "other-1" not in [r["id"] for r in got]
    assert wclient.get("/api/items/other-1").json()["split"] == "live"


def test_events_change_a_users_recommendations(wclient: Any, live_run: Path) -> None:
    from socialfeat.live.readers import for_user

    users = wclient.get("/api/users", params={"limit": 100}).json()["users"]
    user = users[7]
    before = recommended(wclient, user)
    top = before[0]["id"]
    response = wclient.post("/api/events", json={"events": [{"user_id": user, "item_id": top, "event": "appreciate"}]})
    assert response.status_code == 200, response.text
    assert response.json()["events"] == 1 and response.json()["users"] == 1 and response.json()["new_users"] == 0
    after = recommended(wclient, user)
    assert top not in [r["id"] for r in after]  # now seen
    assert [r["id"] for r in after] == [str(r["item_id"]) for r in for_user(load_config(), live_run, user, 20)]
    scores = {r["id"]: r["score"] for r in after}
    assert any(abs(scores[r["id"]] - r["score"]) > 1e-6 for r in before if r["id"] in scores)  # folded in again
    seen = {r["id"]: r for r in recommended(wclient, user, 100, include_seen=True)}
    assert seen[top]["seen"] is True


def test_a_user_first_seen_in_events_gets_recommendations(wclient: Any) -> None:
    item = listed(wclient, split="warm")[0]
    events = [{"user_id": "newcomer-7", "item_id": item, "event": "view", "value": 2, "time": "2026-01-02T03:04:05"}]
    assert wclient.post("/api/events", json={"events": events}).json()["new_users"] == 1
    assert wclient.get("/api/users", params={"q": "NEWCOMER"}).json()["users"] == ["newcomer-7"]
    rows = recommended(wclient, "newcomer-7", 5)
    assert len(rows) == 5 and item not in [r["id"] for r in rows]
    assert wclient.get("/api/recommendations", params={"user": "nobody-ever"}).status_code == 404


def test_removed_items_disappear_from_every_answer(wclient: Any, live_run: Path) -> None:
    assert add(wclient, "doomed", png((250, 250, 10))).status_code == 200
    holder = wclient.get("/api/users", params={"limit": 4}).json()["users"][3]
    batch = next(r["id"] for r in recommended(wclient, holder) if not r["live"])
    near = wclient.get(f"/api/items/{batch}/similar", params={"k": 1}).json()["similar"][0]["id"]

    def by_image(data: bytes) -> list[str]:  # the upload search: the item with these very bytes comes first
        got = wclient.post("/api/upload", params={"k": 5}, files={"image": ("x.png", data, "image/png")}).json()
        return [r["id"] for r in got["similar"]["learned"]]

    assert by_image(image_of(live_run, batch))[0] == batch and by_image(png((250, 250, 10)))[0] == "doomed"
    total = wclient.get("/api/items", params={"limit": 1}).json()["total"]
    for item in ("doomed", batch):
        response = wclient.delete(f"/api/items/{item}")
        assert response.status_code == 200 and response.json()["removed"] == item
        assert wclient.delete(f"/api/items/{item}").status_code == 404  # already removed
        assert wclient.get(f"/api/items/{item}").status_code == 404
        assert wclient.get(f"/api/items/{item}/similar").status_code == 404
        assert wclient.get(f"/api/items/{item}/thumbnail").status_code == 404
    assert wclient.get("/api/items", params={"limit": 1}).json()["total"] == total - 2
    every = listed(wclient) + listed(wclient, q=batch)
    assert "doomed" not in every and batch not in every
    for source in ("learned", "imagenet"):
        got = [
            r["id"]
            for r in wclient.get(f"/api/items/{near}/similar", params={"k": 50, "source": source}).json()["similar"]
        ]
        assert len(got) == 50 and batch not in got and "doomed" not in got
    assert batch not in [r["id"] for r in recommended(wclient, holder, 100, include_seen=True)]
    assert batch not in by_image(image_of(live_run, batch)) and "doomed" not in by_image(png((250, 250, 10)))
    assert detail(wclient.delete("/api/items/never-was")) == "unknown item 'never-was'"
    assert counts(live_run)["removed"] >= 2


# ------------------------------------------------------------------------------------------------ idempotence and refusals
def test_same_bytes_are_unchanged_other_bytes_409_unless_replace(wclient: Any, live_run: Path) -> None:
    red, blue = png((220, 20, 20)), png((20, 20, 220))
    assert add(wclient, "twice", red).json()["status"] == "added"
    version = counts(live_run)["version"]
    again = add(wclient, "twice", red)
    assert again.status_code == 200 and again.json()["status"] == "unchanged" and len(again.json()["audience"]) == 10
    assert counts(live_run)["version"] == version  # nothing written
    refused = add(wclient, "twice", blue)
    assert refused.status_code == 409 and "replace=true" in detail(refused)
    assert counts(live_run)["version"] == version
    before = wclient.get("/api/items/twice/similar", params={"k": 5}).json()["similar"]
    replaced = add(wclient, "twice", blue, replace="true")
    assert replaced.status_code == 200 and replaced.json()["status"] == "replaced"
    assert wclient.get("/api/items/twice/similar", params={"k": 5}).json()["similar"] != before
    assert add(wclient, "twice", blue).json()["status"] == "unchanged"
    assert add(wclient, "new-with-replace", red, replace="true").json()["status"] == "added"  # nothing to replace
    batch = listed(wclient, split="cold")[0]
    taken = add(wclient, batch, red)
    assert taken.status_code == 409 and "batch catalogue" in detail(taken)


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (b"not an image at all", "not an image"),
        (png((1, 2, 3))[:60], "truncated"),
        (b"", "empty upload"),
    ],
)
def test_a_bad_image_is_400_and_the_store_is_unchanged(wclient: Any, live_run: Path, data: bytes, word: str) -> None:
    before, images = counts(live_run), stored_images(live_run)
    response = add(wclient, "broken", data)
    assert response.status_code == 400 and word in detail(response)
    assert counts(live_run) == before and stored_images(live_run) == images
    assert wclient.get("/api/items/broken").status_code == 404


def test_a_bad_image_over_the_pixel_cap_is_400(writer: Any, live_run: Path) -> None:
    import copy

    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    small = copy.copy(writer)
    small.config = writer.config.model_copy(
        update={"serve": writer.config.serve.model_copy(update={"max_pixels": 100})}
    )
    before = counts(live_run)
    with TestClient(create_app(small)) as c:
        response = add(c, "huge", png((5, 5, 5), (50, 50)))
    assert response.status_code == 400 and "too large" in detail(response)
    assert counts(live_run) == before


@pytest.mark.parametrize(
    ("events", "status", "word"),
    [
        ([], 422, "at least 1"),
        ([{"user_id": "u1", "item_id": "nope-item"}], 400, "unknown item"),
        ([{"user_id": "u1", "item_id": "ITEM", "value": -1}], 400, "value"),
        ([{"user_id": "u1", "item_id": "ITEM", "time": "yesterday"}], 400, "not a time"),
        ([{"user_id": "", "item_id": "ITEM"}], 400, "empty id"),
        ([{"user": "u1", "item_id": "ITEM"}], 422, "user_id"),
        ([{"user_id": True, "item_id": "ITEM"}], 422, "user_id"),
    ],
)
def test_bad_events_are_one_line_4xx_and_none_is_stored(
    wclient: Any, live_run: Path, events: list[dict], status: int, word: str
) -> None:
    item = listed(wclient, split="warm")[0]
    good = {"user_id": "someone", "item_id": item}
    bad = [{**e, "item_id": item} if e.get("item_id") == "ITEM" else e for e in events]
    body = {"events": [good, *bad] if bad else []}
    before = counts(live_run)
    response = wclient.post("/api/events", json=body)
    assert response.status_code == status and word in detail(response), response.text
    assert counts(live_run) == before  # the good event went nowhere either


def test_bad_item_fields_are_400(wclient: Any) -> None:
    assert wclient.post("/api/items", files={"image": ("x.png", png((9, 9, 9)), "image/png")}).status_code == 422
    response = add(wclient, "nul", png((9, 9, 9)), title="a\x00b")
    assert response.status_code == 400 and "title" in detail(response)
    twice = wclient.post(
        "/api/items", data={"item_id": ["a", "b"]}, files={"image": ("x.png", png((9, 9, 9)), "image/png")}
    )
    assert twice.status_code == 400 and "item_id" in detail(twice)


def test_a_sync_never_counts_an_event_twice(live_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process commits between a sync's read of the version and its read of the events: the sync reads one
    snapshot, so those events wait for the next sync instead of being counted now and again then."""
    from socialfeat.live.catalogue import Live
    from socialfeat.live.tables import NewEvent

    cfg = load_config()
    reader, other = Live(cfg, live_run), Live(cfg, live_run, recommender=None)
    item = next(i for i in reader.item_row if reader.known_item(i))
    other.log([NewEvent("twice-user", item, "view")])
    real = reader.store.version
    calls: list[int] = []

    def version_then_a_commit() -> int:
        found = real()
        if not calls:
            calls.append(found)
            other.log([NewEvent("twice-user", item, "view")])  # lands after the version was read
        return found

    monkeypatch.setattr(reader.store, "version", version_then_a_commit)
    reader.sync()
    monkeypatch.undo()
    reader.sync()
    assert reader.item_counts[item] == len(reader.store.events(item=item)) and calls


# ------------------------------------------------------------------------------------------------ guards
def test_writes_are_403_on_a_read_only_explorer(client: Any, served_run: Path) -> None:
    for response in (
        add(client, "x", png((1, 1, 1))),
        client.delete("/api/items/anything"),
        client.post("/api/events", json={"events": [{"user_id": "a", "item_id": "b"}]}),
    ):
        assert response.status_code == 403
        assert detail(response) == "the explorer is read-only; start it with --writable"
    assert not (served_run / "live").exists()
    assert client.get("/api/health").json()["live"]["writable"] is False


def test_writes_need_the_token_when_one_is_set(writer: Any) -> None:
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    body = {"events": [{"user_id": "token-user", "item_id": str(writer.keys[0])}]}
    with TestClient(create_app(writer, token=TOKEN)) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
            response = c.post("/api/events", json=body, headers=headers)
            assert response.status_code == 401 and "Authorization: Bearer" in detail(response)
            assert response.headers["www-authenticate"] == "Bearer" and TOKEN not in response.text
        assert c.delete("/api/items/whatever", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.post("/api/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/items", params={"limit": 1}).status_code == 200  # reads need no token
        schema = c.get("/openapi.json").json()
    for path, method in (("/api/items", "post"), ("/api/items/{item_id}", "delete"), ("/api/events", "post")):
        assert schema["paths"][path][method]["summary"] and schema["paths"][path][method]["security"]


def test_a_writable_explorer_refuses_a_public_address_without_a_token(
    served_run: Path, live_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import socialfeat.serve.explorer as explorer_module

    monkeypatch.delenv("SOCIALFEAT_TOKEN", raising=False)
    started: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append(self.config.app))
    loads: list[int] = []
    real = explorer_module.Explorer.__init__
    monkeypatch.setattr(
        explorer_module.Explorer, "__init__", lambda self, *a, **kw: loads.append(1) or real(self, *a, **kw)
    )

    line = fails(["serve", str(served_run), "--writable", "--host", "0.0.0.0", "--port", "0"], capsys)
    assert line.startswith("error: --host 0.0.0.0: a writable explorer reachable from other machines needs a token")
    assert not started and not loads  # refused before the run was loaded
    short = fails(["serve", str(served_run), "--writable", "--host", "0.0.0.0", "--token", "abc"], capsys)
    assert "at least 16" in short and "abc" not in short
    # read-only on a public address, and writable on loopback, start as before
    ok(["serve", str(served_run), "--host", "0.0.0.0", "--port", "0"])
    ok(["serve", str(live_run), "--writable", "--port", "0"])
    assert len(started) == 2 and len(loads) == 2 and not (served_run / "live").exists()


def test_a_token_from_the_environment_opens_a_public_address(
    live_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: apps.append(self.config.app))
    monkeypatch.setenv("SOCIALFEAT_TOKEN", TOKEN)
    capsys.readouterr()
    ok(["serve", str(live_run), "--writable", "--host", "0.0.0.0", "--port", "0"])
    printed = capsys.readouterr()
    assert TOKEN not in printed.out + printed.err and "writes need the token" in printed.err
    with TestClient(apps[0]) as c:
        assert c.delete("/api/items/x").status_code == 401
        assert c.delete("/api/items/never-was", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


# ------------------------------------------------------------------------------------------------ two processes
@pytest.mark.slow
def test_serve_and_the_add_command_write_one_run_at_once(
    wclient: Any, writer: Any, live_run: Path, tmp_path: Path
) -> None:
    """The app holds the store open (and writes) while ``socialfeat add`` runs as a real process on the same run:
    SQLite in WAL mode takes both; each sees the other's item."""
    wclient.get("/api/health")
    assert writer.live.live is not None and writer.live.live.store.exists  # the app's connection is open
    rows = ["item_id,image,title"]
    for n in range(6):
        Image.new("RGB", (24, 24), (40 * n, 90, 200 - 30 * n)).save(tmp_path / f"c{n}.png")
        rows.append(f"cli-{n},c{n}.png,From The Command {n}")
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    src = str(Path(socialfeat.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "socialfeat", "add", str(live_run), "--items", str(tmp_path / "items.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    results: list[int] = []
    during: list[bool] = []  # whether the command was still running when each API add was acknowledged

    def post_while_it_runs() -> None:
        n = 0
        while (proc.poll() is None and n < 40) or n < 3:
            results.append(add(wclient, f"api-{n}", png((n * 7 % 256, 30, 60))).status_code)
            during.append(proc.poll() is None)
            n += 1
            time.sleep(0.2)

    poster = threading.Thread(target=post_while_it_runs)
    poster.start()
    out, err = proc.communicate(timeout=300)
    poster.join(timeout=300)
    assert proc.returncode == 0, err
    assert all(f"cli-{n}" in out for n in range(6)) and "added" in out
    assert results and set(results) == {200} and any(during), (results, during)
    live = set(listed(wclient, split="live"))
    assert {f"cli-{n}" for n in range(6)} <= live and {f"api-{n}" for n in range(len(results))} <= live
