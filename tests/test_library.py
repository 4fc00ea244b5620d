"""socialfeat.open_run: each method of Run against the files and the CLI on the same run; errors; the documented
example, run on a fixture run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import ok
from PIL import Image

import socialfeat
from socialfeat import UserError, open_run
from socialfeat.library import Audience, Features, Item, Recommendation, Results, Run, User

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the embedded run: similar may build its index into it."""
    dest = tmp_path_factory.mktemp("library") / "run"
    shutil.copytree(embedded_run, dest)
    return dest


@pytest.fixture(scope="module")
def opened(run: Path) -> Run:
    return open_run(run)


def image_of(run: Path, item_id: str) -> Path:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image"]).to_pylist()
    return root / next(r["image"] for r in items if r["item_id"] == item_id)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def printed_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables the CLI printed, as lists of cell texts."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0].isdigit():
            rows.append(cells)
    return rows


# --------------------------------------------------------------------------------------------- opening
def test_the_package_exports_the_front_door_lazily() -> None:
    assert socialfeat.open_run is open_run and socialfeat.Run is Run
    assert {"open_run", "Run"} <= set(socialfeat.__all__) and "open_run" in dir(socialfeat)
    with pytest.raises(AttributeError):
        _ = socialfeat.no_such_name
    done = subprocess.run(  # importing the package loads neither the library nor numpy
        [
            sys.executable,
            "-c",
            "import sys, socialfeat; print('socialfeat.library' in sys.modules, 'numpy' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["False", "False"]


def test_opening_and_reading_write_nothing_into_the_run(embedded_run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    before = snapshot(copy)
    opened = open_run(copy)
    opened.features("learned")
    opened.recommend("u0007", k=3)
    assert snapshot(copy) == before
    assert not (copy / "live").exists()


def test_a_missing_run_or_a_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        open_run(tmp_path / "nope")
    assert exc.value.where == str(tmp_path / "nope") and "run folder not found" in exc.value.message
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file; expected a run folder"):
        open_run(tmp_path / "file")
    with pytest.raises(UserError, match="config file not found"):
        open_run(tmp_path, config=tmp_path / "missing.yaml")


def test_a_config_is_the_clis_config(run: Path, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("index:\n  k: 3\n")
    assert len(open_run(run, config=tmp_path / "c.yaml").similar("i00003")) == 3
    assert len(open_run(run).similar("i00003")) == 10


# --------------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("source", ["learned", "imagenet"])
def test_features_are_the_feature_file(opened: Run, run: Path, source: str) -> None:
    table = pq.read_table(run / "features" / f"{source}.parquet").to_pydict()
    found = opened.features(source)
    assert isinstance(found, Features) and found.ids == table["item_id"] and len(found) == len(table["item_id"])
    assert found.matrix.dtype == np.float32 and found.matrix.shape == (len(table["item_id"]), len(table["features"][0]))
    np.testing.assert_array_equal(found.matrix, np.array(table["features"], np.float32))
    assert f"{source}/features" in repr(found)


def test_a_head_column_is_a_feature_column(opened: Run) -> None:
    heads = opened.features("learned", "head_factors")
    assert heads.matrix.shape[1] == 16 and heads.ids == opened.features("learned").ids


def test_an_unknown_source_or_column_is_one_line(opened: Run) -> None:
    with pytest.raises(UserError, match="no features/nope.parquet, and sources are"):
        opened.features("nope")
    with pytest.raises(UserError, match="has no column 'nope'"):
        opened.features("learned", "nope")


# --------------------------------------------------------------------------------------------- embed, model
def test_embed_puts_an_items_image_where_embed_put_the_item(opened: Run, run: Path) -> None:
    stored = opened.features("learned")
    items = ["i00001", "i00002", "i00010"]
    got = opened.embed([image_of(run, i) for i in items])
    want = stored.matrix[[stored.ids.index(i) for i in items]]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    one = opened.embed(str(image_of(run, "i00001")))  # one path, as a str: still a matrix
    pil = opened.embed([Image.open(image_of(run, "i00001"))])
    np.testing.assert_allclose(one, got[:1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pil, got[:1], rtol=0, atol=1e-6)
    assert opened.embed([]).shape == (0, got.shape[1])
    heads = opened.embed([image_of(run, "i00001")], column="head_factors")
    assert heads.shape == (1, 16)


def test_embed_refuses_a_bad_image_in_one_line(opened: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError) as exc:
        opened.embed([bad])
    assert exc.value.where == str(bad) and "cannot use this image" in exc.value.message
    with pytest.raises(UserError, match="is a folder"):
        opened.embed(tmp_path)
    with pytest.raises(UserError, match="expected a path or a PIL image"):
        opened.embed([42])


def test_model_gives_embeds_features_from_its_own_transform(opened: Run, run: Path) -> None:
    import torch

    model, preprocess = opened.model()
    assert not model.training
    paths = [image_of(run, "i00001"), image_of(run, "i00004")]
    batch = torch.stack([preprocess(p) for p in paths])
    assert batch.dtype == torch.uint8 and batch.shape[-1] == 3
    with torch.no_grad():
        pooled, heads = model(batch)
    want = opened.embed(paths)
    assert np.abs(pooled.numpy() - want).max() <= 1e-4 * np.abs(want).max()
    assert set(heads) == {"factors", "factor-clusters"}
    with pytest.raises(UserError):
        opened.model("nope")


# --------------------------------------------------------------------------------------------- similar
def test_similar_is_what_the_cli_prints(opened: Run, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = opened.similar("i00003", k=5)
    assert isinstance(found, Results) and all(isinstance(r, Item) for r in found)
    assert [r.rank for r in found] == [1, 2, 3, 4, 5] and "i00003" not in found.ids
    assert list(found.scores) == sorted(found.scores, reverse=True)
    capsys.readouterr()
    ok(["similar", str(run), "i00003", "--k", "5"])
    rows = printed_rows(capsys.readouterr().out)
    assert [r[1] for r in rows] == found.ids
    assert [r[2] for r in rows] == [f"{r.score:.4f}" for r in found]
    text = str(found)
    assert text.splitlines()[0].split() == ["rank", "item", "id", "score", "title"] and len(text.splitlines()) == 6


def test_similar_to_an_image_finds_that_item_first(opened: Run, run: Path, capsys: pytest.CaptureFixture) -> None:
    path = image_of(run, "i00007")
    for query in (path, Image.open(path)):
        found = opened.similar(query, k=3)
        assert found[0].item_id == "i00007" and found[0].score == pytest.approx(1.0, abs=1e-4)
    vector = opened.embed([path])[0]  # a vector query: the same search
    assert opened.similar(vector, k=3).ids == opened.similar(path, k=3).ids
    capsys.readouterr()
    ok(["similar", str(run), "--image", str(path), "--k", "3"])
    assert [r[1] for r in printed_rows(capsys.readouterr().out)] == opened.similar(path, k=3).ids


def test_similar_errors_are_one_line(opened: Run, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown item"):
        opened.similar("no-such-item")
    with pytest.raises(UserError, match="expected an item id"):
        opened.similar("")
    with pytest.raises(UserError, match="expected a vector of"):
        opened.similar(np.zeros(3, np.float32))
    with pytest.raises(UserError, match="expected a whole number from 1 to 1000"):
        opened.similar("i00003", k=0)
    with pytest.raises(UserError, match="--source"):
        opened.similar("i00003", source="nope")
    with pytest.raises(UserError, match="cannot use this image"):
        opened.similar(tmp_path / "gone.png")


# --------------------------------------------------------------------------------------------- audience, recommend
def test_audience_is_what_recommend_image_prints(opened: Run, run: Path, capsys: pytest.CaptureFixture) -> None:
    path = image_of(run, "i00005")
    found = opened.audience(path, k=4)
    assert isinstance(found, Audience) and all(isinstance(u, User) for u in found.users) and len(found.users) == 4
    assert found.similar[0].item_id == "i00005" and found.factors.shape == (16,)
    from socialfeat.recommend import user_factors

    ids, users = user_factors(run)  # reference: the users with the largest u·v̂
    assert found.users.ids == [ids[i] for i in np.argsort(-(users @ found.factors), kind="stable")[:4]]
    capsys.readouterr()
    ok(["recommend", str(run), "--image", str(path), "--k", "4"])
    rows = printed_rows(capsys.readouterr().out)
    assert [r[1] for r in rows[:4]] == found.users.ids and [r[1] for r in rows[4:]] == found.similar.ids
    from_pil = opened.audience(Image.open(path), k=4)
    assert from_pil.users.ids == found.users.ids
    assert str(found).splitlines()[0].split() == ["rank", "user", "id", "score"]
    with pytest.raises(UserError, match="give a new image"):
        opened.audience()


def test_a_title_needs_the_content_model(opened: Run) -> None:
    with pytest.raises(UserError) as exc:
        opened.audience(title="A red thing")
    assert "content" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.slow
def test_audience_with_title_and_tags_is_what_recommend_prints(
    content_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = image_of(content_run, "i00005")
    found = open_run(content_run).audience(path, title="Quiet ring", tags=["mono", "thirds"], k=5)
    assert len(found.users) == 5
    capsys.readouterr()
    argv = ["recommend", str(content_run), "--image", str(path), "--title", "Quiet ring", "--tags", "mono,thirds"]
    ok([*argv, "--k", "5"])
    rows = printed_rows(capsys.readouterr().out)
    assert [r[1] for r in rows[:5]] == found.users.ids and [r[2] for r in rows[:5]] == [
        f"{u.score:.4f}" for u in found.users
    ]
    plain = open_run(content_run).audience(path, k=5)  # the image alone: the factors head, not the content model
    assert not np.allclose(plain.factors, found.factors, atol=1e-3)


def test_recommend_is_what_the_cli_prints(opened: Run, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = opened.recommend("u0007", k=5)
    assert all(isinstance(r, Recommendation) for r in found) and not any(r.seen for r in found)
    assert all(r.factors in ("true", "predicted") for r in found)
    capsys.readouterr()
    ok(["recommend", str(run), "--user", "u0007", "--k", "5"])
    assert [r[1] for r in printed_rows(capsys.readouterr().out)] == found.ids
    seen = opened.recommend("u0007", k=400, include_seen=True)
    assert any(r.seen for r in seen) and len(seen) > len(opened.recommend("u0007", k=400))
    rows = found.rows()
    assert rows[0]["item_id"] == found[0].item_id and set(rows[0]) >= {"rank", "score", "warm", "split"}


def test_recommend_errors_are_one_line(opened: Run) -> None:
    with pytest.raises(UserError, match="nobody"):
        opened.recommend("nobody")
    with pytest.raises(UserError, match="expected a user id"):
        opened.recommend("")


# --------------------------------------------------------------------------------------------- live catalogue
def test_add_log_and_remove_reach_similar_and_recommend(embedded_run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    opened = open_run(copy)
    photo = tmp_path / "new.png"
    shutil.copy(image_of(copy, "i00011"), photo)
    (tmp_path / "items.csv").write_text("item_id,image,title\nnew1,new.png,A new thing\n")
    added = opened.add(tmp_path / "items.csv")
    assert [a.item_id for a in added] == ["new1"] and added[0].status == "added"
    near = opened.similar(photo, k=2)
    assert set(near.ids) == {"new1", "i00011"} and any(r.live for r in near)
    from socialfeat.live.readers import similar

    assert [r["item_id"] for r in similar(opened.config, copy, image=photo, k=2)] == near.ids
    assert "new1" in opened.similar("i00011", k=1).ids
    (tmp_path / "events.csv").write_text("user_id,item_id,event\nu0007,new1,like\n")
    logged = opened.log(tmp_path / "events.csv")
    assert logged.events == 1 and logged.users == 1
    assert opened.remove("new1") == ["new1"]
    assert "new1" not in opened.similar(photo, k=5).ids
    with pytest.raises(UserError, match="removed from the catalogue"):
        opened.similar("new1")


def test_the_live_catalogue_needs_a_finished_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="not a finished run"):
        open_run(tmp_path / "run").log(tmp_path / "events.csv")


# --------------------------------------------------------------------------------------------- the documented example
def example(page: Path) -> str:
    """The first ```python block after ``<!-- library example -->`` on a page."""
    text = page.read_text(encoding="utf-8")
    found = re.search(r"<!-- library example -->\n(?:<!-- runnable -->\n)?```python\n(.*?)\n```", text, re.S)
    assert found, f"{page}: no python block marked <!-- library example -->"
    return found[1]


@pytest.mark.parametrize("page", ["README.md", "docs/api/library.md"])
def test_the_documented_example_runs(
    page: str, embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = Path(shutil.copytree(embedded_run, tmp_path / "runs" / "demo"))
    code = example(ROOT / page)
    assert '"runs/demo"' in code and all(len(line) <= 88 for line in code.splitlines())
    exec(compile(code.replace('"runs/demo"', repr(str(copy))), page, "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "rank" in out and "score" in out and "Features(learned/features" in out
