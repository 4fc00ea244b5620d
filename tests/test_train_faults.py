"""train's faults: a full disk or a file-size limit during a checkpoint or the model write is one line that keeps the
earlier checkpoint (issue 31, case 7); a split whose valid cold items cannot be scored falls back to the last epoch
with a warning, and no JSON file holds a bare NaN (case 8)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from filesystems import tmpfs

from socialfeat.config import load_config
from socialfeat.factorize.stage import factorize
from socialfeat.targets.stage import targets

TINY = [
    "--backbone", "socialfeat_tiny", "--weights", "random", "--image-size", "32", "--workers", "0",
    "--batch-size", "32", "--set", "train.threads=1",
]  # fmt: skip
SRC = Path(__file__).resolve().parents[1] / "src"


def fresh(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("model", "features", ".train"))
    return dest


def strict_json(text: str) -> object:
    """json.loads that refuses NaN, Infinity and -Infinity, as JSON itself does."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------- case 7: write faults
LIMITED = textwrap.dedent(
    """
    import errno, json, resource, sys
    from pathlib import Path
    import torch
    from socialfeat.config import load_config
    from socialfeat.errors import UserError
    from socialfeat.models.backbones import create_backbone
    from socialfeat.models.heads import FeatureModel
    from socialfeat.models.store import state_tensors
    from socialfeat.tensor_io import write_safetensors, write_torch
    from socialfeat.train import _rng_state, save_checkpoint

    work = Path(sys.argv[1])
    model = FeatureModel(create_backbone("socialfeat_tiny", "random"), {"factors": 8})
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    config = load_config(None, [])
    args = (work, model, opt, sched, {"epoch": 1, "step_in_epoch": 0, "step": 5}, [_rng_state()], config)
    save_checkpoint(*args, best=state_tensors(model))  # the earlier checkpoint, written without a limit
    before = {p.name: p.read_bytes() for p in (work / "checkpoint").iterdir()}
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    out = {}
    try:
        save_checkpoint(*args[:4], {"epoch": 2, "step_in_epoch": 0, "step": 9}, *args[5:], best=state_tensors(model))
    except UserError as e:
        out["checkpoint"] = [e.where, e.message]
    for name, write in (("safetensors", lambda p: write_safetensors(p, state_tensors(model))),
                        ("torch", lambda p: write_torch(p, state_tensors(model)))):
        try:
            write(work / f"x.{name}")
        except OSError as e:
            out[name] = e.errno
    out["intact"] = before == {p.name: p.read_bytes() for p in (work / "checkpoint").iterdir()}
    print(json.dumps(out))
    """
)


def test_a_file_size_limit_during_a_checkpoint_is_one_line_and_keeps_the_earlier_one(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (SIGXFSZ is ignored by Python): safetensors and torch.save fail with EFBIG as an OSError, and
    the checkpoint that fails leaves the earlier one byte for byte, with no temporary beside it."""
    work = tmp_path / "run" / ".train"
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, str(work)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["safetensors"] == errno.EFBIG and out["torch"] == errno.EFBIG and out["intact"]
    where, message = out["checkpoint"]
    assert where == str(work / "checkpoint")
    assert message.startswith("file too large; nothing half-written was kept")
    assert f"the checkpoint at epoch 2, step 5 was kept in {work}" in message
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint", "x.safetensors", "x.torch"]
    import torch
    from safetensors.torch import load_file

    assert torch.load(work / "checkpoint" / "state.pt", weights_only=True)["step"] == 5
    assert load_file(str(work / "checkpoint" / "weights.safetensors"))


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line_and_the_checkpoint_survives(warm_run: Path, tmp_path: Path) -> None:
    """A tmpfs with room for one checkpoint but not for a second beside it: the second checkpoint (or the model
    write) fails with one line, exit 2, and the first checkpoint is whole and resumable."""
    built = fresh(warm_run, tmp_path / "built")
    ok(["train", str(built), *TINY, "--epochs", "1"])  # the image cache, and the size of the weights
    weights = (built / "model" / "weights.safetensors").stat().st_size
    shutil.rmtree(built / "model")
    base = sum(p.stat().st_size + 4096 for p in built.rglob("*") if p.is_file())
    # a checkpoint is about 4 × the weights (weights, best, AdamW's two moments); room for 6
    with tmpfs(tmp_path / "small", f"{(base + 6 * weights) // 1024}k") as small:
        run = Path(shutil.copytree(built, small / "run"))
        done = subprocess.run(  # a process of its own: nothing of it holds the tmpfs open afterwards
            [sys.executable, "-m", "socialfeat", "train", str(run), *TINY, "--epochs", "3"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "400"},
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert sum(x.startswith("error: ") for x in lines) == 1 and "Traceback" not in done.stderr
        line = lines[-1]  # progress lines come first
        assert line.startswith(f"error: {run / '.train' / 'checkpoint'}: "), line
        assert "no space left on device; nothing half-written was kept" in line, line
        assert f"was kept in {run / '.train'}; continue with: socialfeat train {run}" in line, line
        kept = run / ".train" / "checkpoint"
        assert json.loads((kept / "position.json").read_text())["epoch"] >= 1
        assert sorted(p.name for p in (run / ".train").iterdir()) == ["checkpoint", "metrics.jsonl"]
        assert not (run / "model").exists()
        for line in (run / ".train" / "metrics.jsonl").read_text().splitlines():
            strict_json(line)


# ------------------------------------------------------------------------------------------- case 8: NaN
@pytest.fixture(scope="module")
def one_valid_run(demo_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small platform split by a file with exactly one cold valid item (and 59 cold test items)."""
    run = tmp_path_factory.mktemp("one-valid") / "run"
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    ids = pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist()
    split = run.parent / "split.csv"
    rows = [f"{ids[0]},valid", *(f"{i},test" for i in ids[1:60]), *(f"{i},train" for i in ids[60:])]
    split.write_text("item_id,split\n" + "\n".join(rows) + "\n")
    overrides = ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false", "targets.clusters=6"]
    cfg = load_config(None, [*overrides, f"split.cold_items={split}"])
    factorize(cfg, run)
    targets(cfg, run)
    return run


def test_one_cold_valid_item_falls_back_to_the_last_epoch_with_a_warning(
    one_valid_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fresh(one_valid_run, tmp_path / "run")
    capsys.readouterr()
    ok(["train", str(run), *TINY, "--epochs", "1"])
    err = capsys.readouterr().err
    assert "warning: no user has both a positive and a negative among the 1 valid cold item(s)" in err
    assert "keeping the last epoch" in err
    model = strict_json((run / "model" / "model.json").read_text())
    assert model["selection"] == "last" and model["selected_epoch"] == 1
    # asked for by name, it is one line that says why
    line = fails(["train", str(fresh(one_valid_run, tmp_path / "r2")), *TINY, "--epochs", "1",
                  "--set", "train.select=valid-auc"], capsys)  # fmt: skip
    assert (
        line.startswith("error: train.select: no user has both a positive and a negative")
        and "use select: last" in line
    )


def test_every_score_nan_keeps_the_last_epoch(caplog: pytest.LogCaptureFixture) -> None:
    """Scores that are all NaN (features a ridge cannot use) are no best epoch: the last one is kept, with a
    warning, instead of an AssertionError."""
    import torch

    from socialfeat.selection import keep_best

    model = torch.nn.Linear(2, 2)
    history = [{"epoch": -1, "valid_cold_auc": float("nan")}, {"epoch": 0, "valid_cold_auc": float("nan")}]
    summary = keep_best(model, object(), {k: v.clone() for k, v in model.state_dict().items()}, history)  # type: ignore[arg-type]
    assert summary == {"selection": "last", "selected_epoch": 1}
    assert "no epoch could be scored" in caplog.text


def test_json_writers_write_null_for_nan_and_refuse_what_slips_past(tmp_path: Path) -> None:
    import numpy as np

    from socialfeat.atomic import write_json
    from socialfeat.jsonio import dumps, json_lines

    record = {"auc": float("nan"), "x": [np.float32("inf"), -float("inf"), 0.5], "n": np.int64(3), "t": (1, 2)}
    write_json(tmp_path / "m.json", record)
    assert strict_json((tmp_path / "m.json").read_text()) == {"auc": None, "x": [None, None, 0.5], "n": 3,
                                                              "t": [1, 2]}  # fmt: skip
    assert [strict_json(x) for x in json_lines([record, {"a": 1}]).splitlines()][1] == {"a": 1}
    assert dumps({"p": Path("/x")}) == '{"p": "/x"}'


def test_every_json_file_of_a_run_is_strict_json(embedded_run: Path, one_valid_run: Path, tmp_path: Path) -> None:
    """Every .json and .jsonl file a run holds parses with a parser that refuses NaN and Infinity."""
    run = fresh(one_valid_run, tmp_path / "run")
    ok(["train", str(run), *TINY, "--epochs", "1"])
    files = [p for r in (embedded_run, run) for p in r.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        values = text.splitlines() if path.suffix == ".jsonl" else [text]
        for value in values:
            try:
                strict_json(value)
            except ValueError as e:
                pytest.fail(f"{path}: {e}")
