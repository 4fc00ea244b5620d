"""Stale inputs: a stage called by hand refuses to read a product older than what that was made from (a re-ingested
dataset under old factors, a retrained model under old features), in one line naming the stage to rerun; what does
not depend on the changed product still runs; rerunning the named stages in turn makes the run whole again."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails

from socialfeat import freshness
from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.freshness import check_current, check_inputs, made_from, upstream

USER = "u0004"
DROPPED = 5  # of the user's items, removed from the logs before the re-ingest
# the settings conftest's embedded_run was made with (the stages rerun by hand below use them too)
SETTINGS = [
    "factorize.factors=16",
    "factorize.alpha=1",
    "factorize.evaluate=false",
    "split.cold_fraction=0.2",
    "targets.clusters=6",
    "train.backbone=socialfeat_tiny",
    "train.weights=random",
    "train.image_size=32",
    "train.epochs=1",
    "train.batch_size=32",
    "train.lr=0.005",
    "train.finetune=all",
    "train.threads=1",
    "train.targets=[factors,factor-clusters]",
]


def engaged(run: Path, user: str) -> set:
    """Reference: the items the run's dataset says the user interacted with."""
    users = pq.read_table(run / "dataset" / "users.parquet").to_pydict()
    items = pq.read_table(run / "dataset" / "items.parquet").to_pydict()
    inter = pq.read_table(run / "dataset" / "interactions.parquet").to_pydict()
    u = users["user_idx"][users["user_id"].index(user)]
    item_of = dict(zip(items["item_idx"], items["item_id"], strict=True))
    return {item_of[i] for uu, i in zip(inter["user_idx"], inter["item_idx"], strict=True) if uu == u}


def reingest(run: Path, platform: Path, logs: Path, removed: list[str]) -> None:
    """Ingest the platform again into ``run/dataset`` without ``removed`` items, as a user would after editing
    the logs: ``socialfeat ingest --out RUN/dataset``."""
    from socialfeat.data.ingest import ingest

    logs.mkdir()
    for name in ("interactions.csv", "items.csv", "comments.csv"):
        with open(platform / name, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        with open(logs / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["item_id"] not in removed)
    flags = {f"ingest.{n}": ("t", logs / f"{n}.csv") for n in ("interactions", "items", "comments")}
    ingest(load_config(None, [], {**flags, "ingest.image_root": ("t", platform)}), run / "dataset")


@pytest.fixture(scope="module")
def reingested(embedded_run: Path, platform: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A copy of the embedded run whose dataset was ingested again without some of USER's items; every other
    product is as the embedded run made it (mtimes kept by the copy). Tests copy it before writing into it."""
    base = tmp_path_factory.mktemp("reingested")
    run = base / "run"
    shutil.copytree(embedded_run, run)
    removed = sorted(engaged(run, USER))[:DROPPED]
    reingest(run, platform, base / "logs", removed)
    assert not set(removed) & set(pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist())
    return run, removed


def touch(run: Path, folder: str, later: int = 60) -> None:
    """Make every file of a product newer than anything in the run: as if its stage had just been rerun."""
    newest = max(p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file())
    for p in [run / folder] if (run / folder).is_file() else (run / folder).rglob("*"):
        if p.is_file():
            os.utime(p, ns=(newest + later * 10**9,) * 2)


# ---------------------------------------------------------------------------------------------------- the graph
def test_upstream_lists_what_a_product_is_made_from_earliest_first() -> None:
    assert upstream(["features/learned"]) == ["dataset", "factors", "targets", "model", "features/learned"]
    assert upstream(["features/imagenet"]) == ["dataset", "features/imagenet"]
    assert made_from("features/random") == ("dataset",) and made_from("features/meta-class")[0] == "meta-class"
    assert {"features/learned", "features/imagenet", "factors"} <= set(made_from("eval"))


def test_a_missing_or_fresh_product_is_not_stale(tmp_path: Path) -> None:
    check_current(tmp_path, ["eval"])  # nothing there: nothing stale (the stage's own error names what is missing)
    for folder in ("dataset", "factors"):
        (tmp_path / folder).mkdir()
        pq.write_table(pa.table({"x": [1]}), tmp_path / folder / "x.parquet")  # intact: newer, not damaged
    os.utime(tmp_path / "dataset" / "x.parquet", ns=(10**18,) * 2)
    os.utime(tmp_path / "factors" / "x.parquet", ns=(10**18 + 1,) * 2)
    check_current(tmp_path, ["factors"])
    os.utime(tmp_path / "dataset" / "x.parquet", ns=(10**18 + 2,) * 2)
    with pytest.raises(UserError, match=r"made from an older dataset/ \(re-ingested since\)") as e:
        check_current(tmp_path, ["factors"])
    assert e.value.where == str(tmp_path / "factors") and "socialfeat factorize" in e.value.message


# ---------------------------------------------------------------------------------------------------- re-ingest
def test_after_a_reingest_every_stage_downstream_refuses_and_names_factorize(
    reingested: tuple[Path, list], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = reingested
    line = (
        f"error: {run / 'factors'}: made from an older dataset/ (re-ingested since); rerun: socialfeat factorize {run}"
    )
    commands = [
        ["targets", str(run)],
        ["train", str(run)],
        ["embed", str(run), "--source", "learned"],
        ["index", str(run)],
        ["similar", str(run), "i00001"],
        ["recommend", str(run), "--user", USER],
        ["evaluate", str(run)],
        ["report", str(run)],
    ]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    for argv in commands:
        assert fails(argv, capsys).startswith(line), argv
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # nothing was written
    # features made from the dataset alone name their own rerun: the item set changed under them
    with pytest.raises(UserError, match="socialfeat embed .* --source imagenet") as e:
        check_current(run, ["features/imagenet"])
    assert e.value.where == str(run / "features" / "imagenet.parquet")
    check_inputs(run, "features/imagenet")  # ... and embedding imagenet again, which reads only the dataset, may run


def test_rerunning_the_named_stages_in_turn_makes_the_run_whole(
    reingested: tuple[Path, list], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.recommend import for_user
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    run = Path(shutil.copytree(reingested[0], tmp_path / "run"))
    removed = reingested[1]
    cfg = load_config(None, SETTINGS)
    factorize(cfg, run)
    # each refusal names the earliest stale product: now the targets
    assert "targets: made from an older factors/" in fails(["train", str(run)], capsys)
    assert f"rerun: socialfeat targets {run}" in fails(["recommend", str(run), "--user", USER], capsys)
    targets(cfg, run)
    assert f"model: made from an older targets/ (rebuilt since); rerun: socialfeat train {run}" in fails(
        ["similar", str(run), "i00001"], capsys
    )
    train(cfg, run)
    assert f"socialfeat embed {run} --source learned" in fails(["similar", str(run), "i00001"], capsys)
    embed(cfg, run, "learned")
    rows = for_user(cfg, run, USER, k=1000)
    offered = {r["item_id"] for r in rows}
    current = set(pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist())
    assert offered and offered <= current and not offered & set(removed)
    assert not offered & engaged(run, USER)  # the dataset as it is now says who engaged with what
    assert len(offered) == len(current) - len(engaged(run, USER))


# ---------------------------------------------------------------------------------------------------- granularity
def test_a_retrained_model_stales_the_learned_features_only(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from socialfeat.index import similar

    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    touch(run, "model")
    want = (
        f"{run / 'features' / 'learned.parquet'}: made from an older model/ (retrained since); rerun: socialfeat embed"
    )
    assert want in fails(["similar", str(run), "i00001"], capsys)
    assert want in fails(["recommend", str(run), "--user", USER], capsys)  # cold items by the stale factors head
    assert want in fails(["evaluate", str(run), "--source", "learned"], capsys)
    assert similar(load_config(), run, "i00001", source="imagenet", k=3)  # no model behind imagenet features
    check_inputs(run, "features/learned")  # embedding learned again is what fixes it
    check_inputs(run, "model")  # and so is training again


def test_rebuilt_targets_stale_the_model_and_name_train(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    touch(run, "targets")
    line = fails(["embed", str(run), "--source", "learned"], capsys)
    assert line.startswith(
        f"error: {run / 'model'}: made from an older targets/ (rebuilt since); rerun: socialfeat train"
    )
    check_inputs(run, "model")  # train itself reads the new targets: it may run
    check_inputs(run, "features/random")


def test_an_evaluation_older_than_its_features_is_not_reported(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    evaluated = max(p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()) + 10**9
    for path in freshness.product_paths(run, "eval"):
        path.parent.mkdir(exist_ok=True)
        path.write_text("{}")
        os.utime(path, ns=(evaluated,) * 2)
    check_current(run, ["eval"])
    os.utime(run / "features" / "random.parquet", ns=(evaluated + 10**9,) * 2)  # embedded again after evaluating
    assert (
        f"{run / 'eval'}: made from an older features/random.parquet (re-embedded since); rerun: socialfeat "
        in fails(["report", str(run)], capsys)
    )
