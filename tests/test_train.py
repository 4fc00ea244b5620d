"""train: the end-to-end loop on the simulated platform (tiny backbone, CPU), exact resume after kill -9,
DDP parity under torchrun, bad images, and the learning-rate schedule."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from socialfeat.cli import main
from socialfeat.config import load_config
from socialfeat.targets.stage import targets
from socialfeat.train import KILL_ENV, lr_lambda

TINY = [
    "--backbone", "socialfeat_tiny", "--weights", "random", "--image-size", "32", "--workers", "0",
    "--batch-size", "32", "--set", "train.threads=1",
]  # fmt: skip


def fresh(run: Path, dest: Path) -> Path:
    """A private copy of a run without model/ or features/."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("model", "features", ".train"))
    return dest


def ok(argv: list[str]) -> None:
    """Run the CLI in-process and expect success."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "weights.safetensors"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process (what a user, or a crash, sees)."""
    return subprocess.run(
        [sys.executable, "-m", "socialfeat", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_train_and_embed_end_to_end(warm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fresh(warm_run, tmp_path / "run")
    ok(["train", str(run), *TINY, "--epochs", "2", "--targets", "factors,factor-clusters"])
    model = json.loads((run / "model" / "model.json").read_text())
    assert model["heads"] == {"factors": 16, "factor-clusters": 6} and model["backbone"] == "socialfeat_tiny"
    history = [json.loads(x) for x in (run / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [-1, 0, 1]  # the untrained start, scored for selection, then 2 epochs
    assert all(0.0 <= h["valid_cold_auc"] <= 1.0 for h in history)
    assert {"train_loss", "valid_factors_cosine", "valid_factor_clusters_top1", "images_per_s"} <= set(history[1])
    assert history[2]["train_loss"] < history[1]["train_loss"]  # it learns
    assert model["selection"] == "valid-auc" and 0 <= model["selected_epoch"] <= 2
    assert not (run / ".train").exists()  # the work folder is gone once model/ is complete
    assert "wrote" in capsys.readouterr().out
    items = pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist()
    split = pq.read_table(run / "factors" / "item_split.parquet").to_pydict()
    cold = {i for i, s in zip(split["item_id"], split["split"], strict=True) if s != "train"}
    assert cold and cold <= set(items)  # the run has cold items, and every item below must get features
    for source, dim in (("learned", 64), ("random", 64)):
        ok(["embed", str(run), "--source", source, "--workers", "0", "--set", "train.backbone=socialfeat_tiny"])
        table = pq.read_table(run / "features" / f"{source}.parquet")
        assert sorted(table.column("item_id").to_pylist()) == sorted(items)  # cold items included
        assert table.schema.field("features").type.list_size == dim
    learned = pq.read_table(run / "features" / "learned.parquet")
    assert learned.schema.field("head_factors").type.list_size == 16
    assert learned.schema.field("head_factor_clusters").type.list_size == 6


@pytest.fixture(scope="module")
def engaged_run(warm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """warm_run plus the VisE engagement target (comment embeddings + engagement statistics)."""
    run = fresh(warm_run, tmp_path_factory.mktemp("engaged") / "run")
    overrides = [
        "targets.clusters=6",
        "targets.engagement_clusters=5",
        "targets.targets=[factors,factor-clusters,engagement]",
    ]
    targets(load_config(None, overrides), run)
    return run


@pytest.mark.parametrize("heads", ["factors", "factor-clusters", "engagement", "factors,factor-clusters,engagement"])
def test_each_target_trains_alone_and_together(engaged_run: Path, tmp_path: Path, heads: str) -> None:
    run = fresh(engaged_run, tmp_path / "run")
    ok(["train", str(run), *TINY, "--epochs", "1", "--targets", heads])
    model = json.loads((run / "model" / "model.json").read_text())
    expected = {"factors": 16, "factor-clusters": 6, "engagement": 5}
    assert model["heads"] == {t: expected[t] for t in heads.split(",")}
    record = json.loads((run / "model" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(v) for k, v in record.items() if k.startswith("train_"))
    if "engagement" in heads:
        assert 0.0 <= record["valid_engagement_top1"] <= 1.0


def test_learned_head_predicts_factors_of_unseen_items(warm_run: Path, tmp_path: Path) -> None:
    """After a short training the factor head points the way of the true factors on held-out warm items."""
    run = fresh(warm_run, tmp_path / "run")
    ok(["train", str(run), *TINY, "--epochs", "12", "--targets", "factors", "--lr", "5e-3", "--finetune", "all"])
    history = [json.loads(x) for x in (run / "model" / "metrics.jsonl").read_text().splitlines()]
    # a constant prediction (the mean target direction) scores the mean cosine of targets to their mean
    t = pq.read_table(run / "targets" / "factors.parquet").column("target").combine_chunks()
    y = t.flatten().to_numpy().reshape(len(t), 16)
    mean = y.mean(0) / np.linalg.norm(y.mean(0))
    baseline = float((y @ mean).mean())
    assert history[-1]["valid_factors_cosine"] > baseline + 0.05, (history[-1], baseline)


def test_kill_and_resume_ends_with_the_same_weights(warm_run: Path, tmp_path: Path) -> None:
    args = [*TINY, "--epochs", "2", "--targets", "factors,factor-clusters", "--checkpoint-every", "3"]
    args += ["--set", "train.deterministic=true", "--set", "train.augment=true"]
    # and every piece of state the recipe adds: the best epoch so far, the teacher, the start weights, the ranking
    # loss's user draws
    args += ["--set", "train.distill=1", "--set", "train.l2sp=0.01", "--set", "train.rank_loss=kl"]
    straight = fresh(warm_run, tmp_path / "straight")
    done = cli("train", str(straight), *args)
    assert done.returncode == 0, done.stderr
    broken = fresh(warm_run, tmp_path / "broken")
    killed = cli("train", str(broken), *args, env={KILL_ENV: "5"})  # dies mid-epoch, 2 steps after a checkpoint
    assert killed.returncode == -signal.SIGKILL
    assert not (broken / "model").exists() and (broken / ".train" / "checkpoint" / "weights.safetensors").is_file()
    assert json.loads((broken / ".train" / "checkpoint" / "position.json").read_text())["step"] == 3
    resumed = cli("train", str(broken), *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(straight), weights(broken)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = [(straight / "model" / "metrics.jsonl").read_text(), (broken / "model" / "metrics.jsonl").read_text()]
    losses = [[json.loads(x).get("train_loss", 0.0) for x in m.splitlines()] for m in metrics]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    scores = [[json.loads(x)["valid_cold_auc"] for x in m.splitlines()] for m in metrics]
    assert len(scores[0]) == 3 and scores[0] == scores[1]  # selection's scores survive the kill too


def test_resume_refuses_other_settings_and_missing_checkpoint(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    r = cli("train", str(run), *TINY, "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr
    killed = cli("train", str(run), *TINY, "--epochs", "2", "--checkpoint-every", "2", env={KILL_ENV: "3"})
    assert killed.returncode == -signal.SIGKILL
    r = cli("train", str(run), *TINY, "--epochs", "2", "--lr", "0.5", "--resume")
    assert r.returncode == 2 and r.stderr.startswith("error: train.lr: checkpoint has 0.001")


def test_bad_images_are_skipped_and_counted_or_refused(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    images = tmp_path / "images"
    shutil.copytree(root, images)
    stats = json.loads((run / "dataset" / "stats.json").read_text())
    stats["missing_images"]["image_root"] = str(images)
    made = (run / "dataset" / "stats.json").stat()
    (run / "dataset" / "stats.json").write_text(json.dumps(stats))
    os.utime(run / "dataset" / "stats.json", ns=(made.st_atime_ns, made.st_mtime_ns))  # not a re-ingest: factors stay
    warm = pq.read_table(run / "targets" / "factors.parquet").column("item_id").to_pylist()
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image"]).to_pylist()
    paths = {r["item_id"]: images / r["image"] for r in items}
    victims = [paths[i] for i in warm[:4]]
    victims[0].unlink()  # missing
    victims[1].write_bytes(victims[1].read_bytes()[:200])  # truncated
    victims[2].write_bytes(b"this is not an image")  # not an image
    from PIL import Image

    Image.new("CMYK", (40, 30), (0, 50, 100, 0)).save(victims[3], "JPEG")  # odd mode: fine, converted
    ok(["train", str(run), *TINY, "--epochs", "1"])
    model = json.loads((run / "model" / "model.json").read_text())
    assert model["without_image"] == 3 and model["items"] == len(warm) - 3
    problems = json.loads((run / "cache" / "images-32" / "problems.json").read_text())
    assert problems["total"] == 3 and set(problems["counts"]) == {"missing", "truncated", "not an image"}
    strict = cli("train", str(run), *TINY, "--epochs", "1", "--strict-images")
    assert strict.returncode == 2 and strict.stderr.startswith("error: ") and len(strict.stderr.splitlines()) == 1


def test_train_errors_are_one_line(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    cases = [
        (["--backbone", "no_such_net"], "unknown timm model 'no_such_net'"),
        (["--weights", "imagenet", "--backbone", "resnet18"], "ImageNet weights ship only for"),
        (["--finetune", "some"], "train.finetune: expected all, head, or last-1 to last-100"),
        (["--weights", str(tmp_path / "nope.safetensors")], "weights file not found"),
        (["--targets", "engagement"], "no targets/engagement.parquet"),
    ]
    for extra, message in cases:
        r = cli("train", str(run), *TINY, *extra)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
    r = cli("train", str(tmp_path / "empty"), *TINY)
    assert r.returncode == 2 and "socialfeat ingest" in r.stderr


def test_user_weights_file_is_loaded(warm_run: Path, tmp_path: Path) -> None:
    """A safetensors file and a torch file (read with weights_only) both initialise the backbone."""
    from safetensors.torch import save_file

    from socialfeat.models.backbones import create_backbone

    source = create_backbone("socialfeat_tiny", "random")
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        loaded = create_backbone("socialfeat_tiny", str(path))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    f = lr_lambda(total=100, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def one_process_and_torchrun(warm_run: Path, tmp_path: Path, args: list[str]) -> tuple[Path, Path]:
    """The same ``train`` in one process (run ``one``) and under torchrun with 2 CPU processes (run ``two``)."""
    one = fresh(warm_run, tmp_path / "one")
    r = cli("train", str(one), *args)
    assert r.returncode == 0, r.stderr
    two = fresh(warm_run, tmp_path / "two")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    r = subprocess.run(
        [*torchrun, "-m", "socialfeat", "train", str(two), *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return one, two


@pytest.mark.distributed
def test_ddp_two_processes_match_one_process(warm_run: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) and the same global batch: same losses, same weights."""
    args = [*TINY, "--epochs", "2", "--targets", "factors,factor-clusters", "--set", "train.dropout=0"]
    args += ["--set", "train.select=last"]  # the same training, compared weight by weight: no near-tie to break
    one, two = one_process_and_torchrun(warm_run, tmp_path, args)
    losses = [
        [json.loads(x)["train_loss"] for x in (run / "model" / "metrics.jsonl").read_text().splitlines()]
        for run in (one, two)
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    model = json.loads((two / "model" / "model.json").read_text())
    assert model["world"] == 2
    a, b = weights(one), weights(two)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key


@pytest.mark.distributed
def test_ddp_ranks_share_the_selection(warm_run: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes selecting by valid AUC, the head started from the selection's ridge: every
    rank takes part in each selection (its collectives would hang if one skipped them), and the start scores what
    one process scores (tests/test_selection.py checks the shares and the gather themselves)."""
    args = [*TINY, "--epochs", "1", "--targets", "factors", "--set", "train.select=valid-auc"]
    args += ["--set", "train.head_init=ridge", "--set", "train.select_users=120", "--set", "train.dropout=0"]
    one, two = one_process_and_torchrun(warm_run, tmp_path, args)
    runs = [[json.loads(x) for x in (run / "model" / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    assert [h["epoch"] for h in runs[1]] == [-1, 0] and all(0.0 <= h["valid_cold_auc"] <= 1.0 for h in runs[1])
    assert runs[1][0]["valid_cold_auc"] == pytest.approx(runs[0][0]["valid_cold_auc"], abs=1e-6)
    assert runs[1][0]["select_lambda"] == runs[0][0]["select_lambda"]
    model = json.loads((two / "model" / "model.json").read_text())
    assert model["world"] == 2 and model["select_users"] == 120 and model["selection"] == "valid-auc"


def test_selection_keeps_the_start_when_training_only_hurts(
    warm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted case: the selection score falls with every epoch. run/model must then hold the untrained start's
    weights, say so in one line, and record every score."""
    from socialfeat.selection import Selector
    from socialfeat.train import train

    seen: list[dict[str, torch.Tensor]] = []

    def planted(self: Selector, model: torch.nn.Module, device: torch.device, d: object = None) -> dict[str, float]:
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"valid_cold_auc": 0.7 - 0.05 * len(seen), "select_lambda": 1.0, "select_seconds": 0.0}

    monkeypatch.setattr(Selector, "score", planted)
    run = fresh(warm_run, tmp_path / "run")
    overrides = [
        "train.backbone=socialfeat_tiny", "train.weights=random", "train.image_size=32", "train.workers=0",
        "train.batch_size=32", "train.threads=1", "train.epochs=3", "train.select=valid-auc",
    ]  # fmt: skip
    result = train(load_config(None, overrides), run)
    assert len(seen) == 4  # the start and three epochs
    assert result.summary["selected_epoch"] == 0 and result.summary["valid_cold_auc"] == pytest.approx(0.65)
    kept = weights(run)
    for key, start in seen[0].items():
        assert torch.equal(kept[key], start), key
    assert not torch.equal(seen[-1]["heads.factors.weight"], seen[0]["heads.factors.weight"])  # training moved it
    history = [json.loads(x) for x in (run / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [h["valid_cold_auc"] for h in history] == pytest.approx([0.65, 0.6, 0.55, 0.5])
    # the CLI says it in one line
    run2 = fresh(warm_run, tmp_path / "run2")
    ok(["train", str(run2), *TINY, "--epochs", "1", "--set", "train.select=valid-auc"])
    out = capsys.readouterr().out
    assert "no epoch beat the untrained start" in " ".join(out.split())


def test_selection_picks_the_best_epoch_and_the_earliest_of_a_tie() -> None:
    from socialfeat.selection import best_epoch

    history = [{"epoch": -1, "valid_cold_auc": 0.60}, {"epoch": 0, "valid_cold_auc": 0.64}, {"epoch": 1}]
    history.append({"epoch": 2, "valid_cold_auc": 0.64})
    assert best_epoch(history)["epoch"] == 0
    assert best_epoch([{"epoch": 0}]) is None


def test_select_valid_auc_without_cold_items_is_one_line(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    (run / "factors" / "cold_interactions.parquet").unlink()
    r = cli("train", str(run), *TINY, "--epochs", "1", "--set", "train.select=valid-auc")
    assert r.returncode == 2 and "train.select" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("train", str(run), *TINY, "--epochs", "1")  # auto: no cold items, so the last epoch is kept
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "model" / "model.json").read_text())["selection"] == "last"


def test_tags_head_trains_as_the_meta_class_target(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    targets(load_config(None, ["targets.clusters=6", "targets.targets=[factors,tags]", "targets.min_tag_items=3"]), run)
    ok(["train", str(run), *TINY, "--epochs", "2", "--targets", "factors,tags", "--set", "train.select=last"])
    model = json.loads((run / "model" / "model.json").read_text())
    k = json.loads((run / "targets" / "summary.json").read_text())["tags"]["k"]
    assert model["heads"] == {"factors": 16, "tags": k}
    history = [json.loads(x) for x in (run / "model" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_tags"] < history[0]["train_tags"]  # it learns the tags
    assert 0.0 <= history[-1]["valid_tags_top1"] <= 1.0


def test_meta_class_baseline_trains_embeds_and_gets_an_evaluate_row(warm_run: Path, tmp_path: Path) -> None:
    """The seed paper's third column: the same recipe taught by tags alone, beside learned, ImageNet and random."""
    run = fresh(warm_run, tmp_path / "run")
    r = cli("train", str(run), *TINY, "--epochs", "1", "--meta-class")
    assert r.returncode == 2 and "targets/tags.parquet" in r.stderr  # no tags target yet: one line that says how
    targets(load_config(None, ["targets.clusters=6", "targets.targets=[factors,tags]", "targets.min_tag_items=3"]), run)
    ok(["train", str(run), *TINY, "--epochs", "1", "--meta-class"])
    meta = json.loads((run / "meta-class" / "model.json").read_text())
    assert list(meta["heads"]) == ["tags"] and not (run / "model").exists()  # its own folder, not the learned model
    for source in ("meta-class", "random"):
        ok(["embed", str(run), "--source", source, "--workers", "0", "--set", "train.backbone=socialfeat_tiny"])
    from socialfeat.evaluate.stage import evaluate

    rows = evaluate(load_config(None, ["train.backbone=socialfeat_tiny"]), run).metrics["rows"]
    names = {r["name"]: r for r in rows}
    assert "meta-class" in names and 0.0 <= names["meta-class"]["coldstart"]["auc"] <= 1.0


def test_ridge_head_computes_the_selection_ridge_on_raw_features() -> None:
    """The closed-form head equals evaluate's ridge (standardise, map, add the mean) at the same λ."""
    from socialfeat.measures.metrics import ridge_path, standardizer
    from socialfeat.selection import ridge_head

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (40, 6)).astype(np.float32)
    y = x @ rng.normal(size=(6, 3)) + rng.normal(size=3)
    weight, bias = ridge_head(x, y, 5.0)
    mean, std = standardizer(x)
    w = ridge_path((x - mean) / std, y - y.mean(0), [5.0])[0]
    expected = ((x - mean) / std) @ w + y.mean(0)
    assert weight.shape == (3, 6) and np.allclose(x @ weight.T + bias, expected, atol=1e-4)


def test_head_init_ridge_trains_and_needs_selection(warm_run: Path, tmp_path: Path) -> None:
    run = fresh(warm_run, tmp_path / "run")
    args = [*TINY, "--epochs", "1", "--targets", "factors", "--set", "train.head_init=ridge"]
    r = cli("train", str(run), *args, "--set", "train.select=last")
    assert r.returncode == 2 and "train.head_init" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # raw factor targets, every warm item in the selection's ridge, a learning rate too small to move anything:
    # the factors head used directly must then rank the valid cold items exactly as the start's ridge did
    targets(load_config(None, ["targets.clusters=6", "targets.normalize=none"]), run)
    still = ["--lr", "1e-12", "--finetune", "head", "--set", "train.select=valid-auc", "--set", "train.dropout=0"]
    ok(["train", str(run), *args, *still, "--set", "train.select_items=100000"])
    model = json.loads((run / "model" / "model.json").read_text())
    start = json.loads((run / "model" / "metrics.jsonl").read_text().splitlines()[0])["valid_cold_auc"]
    ok(["embed", str(run), "--source", "learned", "--workers", "0", "--set", "train.backbone=socialfeat_tiny"])
    from socialfeat.evaluate.stage import evaluate

    rows = evaluate(load_config(None, ["train.backbone=socialfeat_tiny"]), run, sources=["learned"]).metrics["rows"]
    head = next(r for r in rows if r["column"] == "head_factors" and r["mapping"] == "head")
    assert model["fit_items"] == model["items"]  # the selection's ridge saw every warm item, as evaluate's does
    assert head["coldstart"]["valid_auc"] == pytest.approx(start, abs=1e-4)


def test_a_sample_per_epoch_bounds_the_steps(
    warm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.images_per_epoch: each epoch steps through a sample, and the schedule and model.json count it."""
    run = fresh(warm_run, tmp_path / "run")
    ok(["train", str(run), *TINY, "--epochs", "2", "--set", "train.images_per_epoch=40", "--set", "train.select=last"])
    model = json.loads((run / "model" / "model.json").read_text())
    assert model["per_epoch"] == 40 < model["train"]
    assert model["steps"] == 2 * 2  # 40 images in batches of 32, twice
    assert "a sample of 40 per epoch" in capsys.readouterr().err
