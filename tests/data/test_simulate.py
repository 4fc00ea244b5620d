"""The simulated demo platform: data contract, determinism, hidden taste signal, atomicity."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socialfeat.config import SimulateConfig
from socialfeat.data import simulate as sim
from socialfeat.errors import UserError

SMALL = SimulateConfig(n_users=200, n_items=300, image_size=32)


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim") / "demo"
    return out, sim.simulate(out, SMALL, seed=3)


def test_files_and_columns(small: tuple[Path, dict]) -> None:
    out, _ = small
    assert read(out / "items.csv")[0] == ["item_id", "image", "title", "tags"]
    assert read(out / "interactions.csv")[0] == ["user_id", "item_id", "event", "timestamp"]
    assert read(out / "comments.csv")[0] == ["item_id", "user_id", "text", "timestamp"]
    assert read(out / "labels.csv")[0] == ["item_id", "palette", "texture", "composition", "object", "popularity"]
    assert "seed 3" in (out / "README.md").read_text().lower()
    _, items = read(out / "items.csv")
    assert len(items) == SMALL.n_items
    for row in items:
        assert re.fullmatch(r"i\d{5}", row["item_id"])
        assert row["image"] == f"images/{row['item_id']}.png"
        assert row["title"]
        assert 2 <= len(row["tags"].split("|")) <= 4
        with Image.open(out / row["image"]) as img:
            assert img.mode == "RGB" and img.size == (32, 32)
    assert len(list((out / "images").iterdir())) == SMALL.n_items


def test_interactions_contract(small: tuple[Path, dict]) -> None:
    out, _ = small
    _, rows = read(out / "interactions.csv")
    assert {r["event"] for r in rows} == {"view", "like", "comment", "share"}
    assert all(re.fullmatch(r"u\d{4}", r["user_id"]) for r in rows)
    stamps = [r["timestamp"] for r in rows]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", t) for t in stamps)
    assert stamps == sorted(stamps)
    assert stamps[0] >= "2024-03-01T00:00:00" and stamps[-1] < "2024-05-31T00:00:00"
    viewed: set[tuple[str, str]] = set()
    for r in rows:
        key = (r["user_id"], r["item_id"])
        if r["event"] == "view":
            viewed.add(key)
        else:
            assert key in viewed, f"{r['event']} before view: {r}"
    views = Counter(r["item_id"] for r in rows if r["event"] == "view")
    assert len(views) == SMALL.n_items and min(views.values()) >= sim.MIN_VIEWS
    pairs = [(r["user_id"], r["item_id"]) for r in rows if r["event"] == "view"]
    assert len(pairs) == len(set(pairs))  # a user views an item once
    assert abs(sum(views.values()) / SMALL.n_users - SMALL.views_per_user) < 0.15 * SMALL.views_per_user


def test_comments_match_comment_events(small: tuple[Path, dict]) -> None:
    out, _ = small
    _, rows = read(out / "interactions.csv")
    _, comments = read(out / "comments.csv")
    events = [(r["item_id"], r["user_id"], r["timestamp"]) for r in rows if r["event"] == "comment"]
    assert [(c["item_id"], c["user_id"], c["timestamp"]) for c in comments] == events
    assert all(3 <= len(c["text"].split()) <= 10 for c in comments)


def test_summary_counts_match_files(small: tuple[Path, dict]) -> None:
    out, summary = small
    _, rows = read(out / "interactions.csv")
    assert summary["files"]["interactions.csv"] == len(rows)
    assert summary["events"] == dict(Counter(r["event"] for r in rows))
    assert summary["files"]["comments.csv"] == len(read(out / "comments.csv")[1])
    assert summary["files"]["items.csv"] == len(read(out / "items.csv")[1]) == SMALL.n_items
    assert summary["files"]["labels.csv"] == len(read(out / "labels.csv")[1])
    assert summary["files"]["images"] == SMALL.n_items
    assert summary["seed"] == 3 and summary["n_users"] == 200 and summary["image_size"] == 32


def like_lift(out: Path, attr: str) -> float:
    return sim.taste_lift(out, attr, "like")


def test_taste_signal_is_real_and_object_is_ignored(small: tuple[Path, dict]) -> None:
    out, _ = small
    assert like_lift(out, "palette") > 2.0
    assert like_lift(out, "texture") > 1.4
    assert 0.7 < like_lift(out, "object") < 1.3


def test_views_follow_taste(small: tuple[Path, dict]) -> None:
    out, _ = small
    assert sim.taste_lift(out, "palette", "view") > 1.5
    assert sim.taste_lift(out, "texture", "view") > 1.2
    assert 0.8 < sim.taste_lift(out, "object", "view") < 1.2


def test_comments_mention_taste_words(small: tuple[Path, dict]) -> None:
    out, _ = small
    labels = {r["item_id"]: r for r in read(out / "labels.csv")[1]}
    comments = read(out / "comments.csv")[1]
    assert len(comments) > 50

    def mentions(c: dict[str, str]) -> bool:
        words = {w for a in sim.TASTE_WEIGHT for w in sim.VOCAB[a][labels[c["item_id"]][a]]}
        return any(w in c["text"].rstrip("!").split() for w in words)

    assert sum(map(mentions, comments)) >= 0.95 * len(comments)


def test_bots_view_at_random_and_like_at_their_rate(tmp_path: Path) -> None:
    cfg = SimulateConfig(n_users=3000, n_items=400, views_per_user=10)
    users = sim.sample_users(cfg.n_users, cfg.n_items, cfg.views_per_user, np.random.default_rng(0))
    items = sim.sample_items(cfg.n_items, np.random.default_rng(1))
    u, i = sim.sample_views(users, items, np.random.default_rng(2))
    bots = np.nonzero(users.is_bot)[0]
    assert len(bots) == 3
    views = np.bincount(u, minlength=cfg.n_users)
    assert (views[bots] == min(cfg.n_items // 2, 25 * 10)).all()  # the cap
    # bots ignore popularity: their items are as popular as the catalogue's average, humans' are more popular
    pop = items["popularity"]
    bot_pop = pop[i[np.isin(u, bots)]].mean()
    assert abs(bot_pop - pop.mean()) < 0.25 * pop.mean() < pop[i[~np.isin(u, bots)]].mean() - pop.mean()
    ev = sim.sample_events(users, items, u, i, cfg, np.random.default_rng(3))
    bot_views = np.isin(ev["user"], bots) & (ev["event"] == 0)
    bot_likes = np.isin(ev["user"], bots) & (ev["event"] == 1)
    assert bot_likes.sum() / bot_views.sum() == pytest.approx(sim.BOT_LIKE_P, abs=0.05)


def test_class_draw_matches_the_per_item_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    # one taste repeated: each user's single view is a draw from popularity × (0.8·affinity³/Σ + 0.2/Σ popularity)
    n_users, n_items = 40_000, 60
    items = sim.sample_items(n_items, np.random.default_rng(0))
    taste = {a: np.repeat(np.random.default_rng(1).dirichlet([0.5] * len(sim.ATTR_VALUES[a]), 1), n_users, 0)
             for a in sim.TASTE_WEIGHT}  # fmt: skip
    users = sim.Users(taste, np.ones(n_users, np.int64), np.zeros(n_users, bool))
    monkeypatch.setattr(sim, "MIN_VIEWS", 0)  # the draw alone, without the new-posts feed
    u, i = sim.sample_views(users, items, np.random.default_rng(2))
    assert len(u) == n_users
    aff = sim.class_affinity(taste, slice(0, 1))[0][sim.taste_class(items)].astype(np.float64)
    pop = items["popularity"]
    weighted = aff**sim.TASTE_SHARPNESS * pop
    q = (1 - sim.EXPLORE) * weighted / weighted.sum() + sim.EXPLORE * pop / pop.sum()
    seen = np.bincount(i, minlength=n_items) / n_users
    assert 0.5 * np.abs(seen - q).sum() < 0.03  # total variation; sampling noise alone is about 0.01


# the second: users want half of a tiny catalogue (the cap), so some rounds of draws bring nothing new
@pytest.mark.parametrize("n_users,n_items,views", [(500, 200, 30), (20, 20, 60)])
def test_every_user_gets_their_views_distinct(n_users: int, n_items: int, views: int) -> None:
    cfg = SimulateConfig(n_users=n_users, n_items=n_items, views_per_user=views)
    users = sim.sample_users(cfg.n_users, cfg.n_items, cfg.views_per_user, sim._rng(0, sim.S_USERS))
    items = sim.sample_items(cfg.n_items, sim._rng(0, sim.S_ITEMS))
    u, i = sim.sample_views(users, items, sim._rng(0, sim.S_VIEWS))
    assert len(np.unique(u * cfg.n_items + i)) == len(u)
    views_of = np.bincount(u, minlength=cfg.n_users)
    assert (views_of >= users.n_views).all()  # each its count (heavy users up to half the catalogue), then the feed
    assert np.bincount(i, minlength=cfg.n_items).min() >= sim.MIN_VIEWS


def test_worker_count_does_not_change_the_images(tmp_path: Path) -> None:
    cfg = SimulateConfig(n_users=20, n_items=300, image_size=32, views_per_user=5)
    sim.simulate(tmp_path / "one", cfg, seed=2, workers=1)
    sim.simulate(tmp_path / "two", cfg, seed=2, workers=2)
    for name in ("items.csv", "interactions.csv", "comments.csv", "labels.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    one = sorted((tmp_path / "one" / "images").iterdir())
    assert len(one) == 300
    for path in one:
        assert path.read_bytes() == (tmp_path / "two" / "images" / path.name).read_bytes(), path.name


def test_popularity_skew(tmp_path: Path) -> None:
    # sparser than SMALL: there every user sees a fifth of all items, which caps the top items
    out = tmp_path / "pop"
    sim.simulate(out, SimulateConfig(n_users=300, n_items=600, image_size=32, views_per_user=20), seed=1)
    views = Counter(r["item_id"] for r in read(out / "interactions.csv")[1] if r["event"] == "view")
    counts = np.sort(np.array(list(views.values())))[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()


def test_deterministic(small: tuple[Path, dict], tmp_path: Path) -> None:
    out, summary = small
    again = sim.simulate(tmp_path / "again", SMALL, seed=3)
    assert again["events"] == summary["events"]
    for name in ("items.csv", "interactions.csv", "comments.csv", "labels.csv"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for item in ("i00000", "i00007", "i00299"):
        image = f"images/{item}.png"
        assert (out / image).read_bytes() == (tmp_path / "again" / image).read_bytes()
    sim.simulate(tmp_path / "other", SMALL, seed=4)
    assert (out / "interactions.csv").read_bytes() != (tmp_path / "other" / "interactions.csv").read_bytes()
    assert (out / "images" / "i00000.png").read_bytes() != (tmp_path / "other" / "images" / "i00000.png").read_bytes()


def test_the_log_written_in_parts_is_the_log_written_whole(
    small: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is turned into text a part at a time (memory); parts that split it anywhere change no byte."""
    out, summary = small
    monkeypatch.setattr(sim, "ROWS_PER_PART", 97)  # many parts, none aligned with a user or an event kind
    assert sum(summary["events"].values()) > 10 * 97
    sim.simulate(tmp_path / "parts", SMALL, seed=3)
    for name in ("interactions.csv", "comments.csv"):
        assert (out / name).read_bytes() == (tmp_path / "parts" / name).read_bytes(), name


def test_draw_image_every_attribute_value() -> None:
    rng = np.random.default_rng(0)
    for attr, values in sim.ATTR_VALUES.items():
        for value in values:
            attrs = {"palette": "warm", "texture": "stripes", "composition": "centered", "object": "star", attr: value}
            img = sim.draw_image(attrs, 48, rng)
            assert img.mode == "RGB" and img.size == (48, 48)
            assert np.asarray(img).std() > 5  # not a blank image


def test_progress_reports_images(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    cfg = SimulateConfig(n_users=20, n_items=150, image_size=32, views_per_user=10)
    sim.simulate(tmp_path / "p", cfg, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert ("images", 150, 150) in calls
    assert len(calls) < 20


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sim.draw_image
    drawn: list[int] = []

    def flaky(attrs: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
        drawn.append(1)
        if len(drawn) > 5:
            raise RuntimeError("boom")
        return real(attrs, size, rng)

    monkeypatch.setattr(sim, "draw_image", flaky)
    cfg = SimulateConfig(n_users=20, n_items=300, image_size=32, views_per_user=10)
    with pytest.raises(RuntimeError, match="boom"):
        sim.simulate(tmp_path / "nested" / "out", cfg, workers=1)
    assert list(tmp_path.iterdir()) == []
    assert len(drawn) < 300  # stopped early rather than drawing the rest first
    with pytest.raises(RuntimeError, match="boom"):  # and from a worker process, which counts its own draws
        sim.simulate(tmp_path / "nested" / "out", cfg, workers=2)
    assert list(tmp_path.iterdir()) == []

    # a previous output survives a failed overwrite
    monkeypatch.setattr(sim, "draw_image", real)
    sim.simulate(tmp_path / "out", cfg)
    before = (tmp_path / "out" / "interactions.csv").read_bytes()
    drawn.clear()
    monkeypatch.setattr(sim, "draw_image", flaky)
    with pytest.raises(RuntimeError):
        sim.simulate(tmp_path / "out", cfg, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "interactions.csv").read_bytes() == before


def test_out_folder_checks(tmp_path: Path) -> None:
    cfg = SimulateConfig(n_users=20, n_items=30, image_size=32, views_per_user=5)
    unrelated = tmp_path / "mine"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("precious")
    with pytest.raises(UserError) as err:
        sim.simulate(unrelated, cfg)
    assert err.value.where == "--out"
    assert (unrelated / "thesis.tex").read_text() == "precious"
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(UserError):
        sim.simulate(afile, cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    sim.simulate(empty, cfg)  # an empty folder is fine
    sim.simulate(empty, cfg, seed=1)  # and so is overwriting a previous output
    assert (empty / "items.csv").is_file()
    with pytest.raises(UserError):
        sim.simulate(tmp_path / "neg", cfg, seed=-1)


@pytest.mark.slow
def test_default_size_smoke(tmp_path: Path) -> None:
    summary = sim.simulate(tmp_path / "demo", SimulateConfig(), seed=0)
    rows = summary["files"]["interactions.csv"]
    assert 100_000 <= rows <= 300_000
    assert summary["events"]["view"] / summary["n_users"] == pytest.approx(60, rel=0.1)
    assert all(summary["events"][e] > 0 for e in ("like", "comment", "share"))
    with Image.open(tmp_path / "demo" / "images" / "i02999.png") as img:
        assert img.size == (96, 96)
