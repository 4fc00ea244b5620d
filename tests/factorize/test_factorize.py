"""Behaviour of ``factorize``, written once and run against every backend (local implicit, Spark MLlib)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from environment import need, need_module
from run_edits import rewrite_table

from socialfeat.config import load_config
from socialfeat.factorize.stage import factorize, matrix

BACKENDS = ["local", pytest.param("spark", marks=pytest.mark.spark)]
SMALL = ["factorize.factors=16", "factorize.iterations=8", "factorize.alpha=1"]  # configs/demo.yaml, smaller


def spark_ready(backend: str) -> None:
    if backend == "spark":
        need_module("pyspark", "the spark extra is not installed")
        need(shutil.which("java"), "Spark needs Java on PATH")


def run_factorize(run: Path, backend: str, *extra: str) -> dict:
    cfg = load_config(None, [*SMALL, f"factorize.backend={backend}", *extra])
    return factorize(cfg, run).metrics


@pytest.fixture
def run(demo_dataset: Path, tmp_path: Path) -> Path:
    shutil.copytree(demo_dataset / "dataset", tmp_path / "dataset")
    return tmp_path


@pytest.mark.parametrize("backend", BACKENDS)
def test_factor_files_schema_and_ids(run: Path, backend: str) -> None:
    spark_ready(backend)
    metrics = run_factorize(run, backend, "split.cold_fraction=0.2")
    out = run / "factors"
    assert {p.name for p in out.iterdir()} == {
        "user_factors.parquet", "item_factors.parquet", "item_split.parquet", "cold_interactions.parquet",
        "metrics.json", "manifest.json", "config.yaml", ".socialfeat.json",
    }  # fmt: skip
    users, items = pq.read_table(out / "user_factors.parquet"), pq.read_table(out / "item_factors.parquet")
    assert users.schema.field("factors").type == pa.list_(pa.float32(), 16)
    assert users.schema.field("user_id").type == pa.string() and items.schema.field("item_id").type == pa.string()
    ds_users = pq.read_table(run / "dataset" / "users.parquet").to_pydict()
    by_idx = dict(zip(ds_users["user_idx"], ds_users["user_id"], strict=True))
    assert all(by_idx[i] == u for i, u in zip(users["user_idx"].to_pylist(), users["user_id"].to_pylist(), strict=True))
    split = pq.read_table(out / "item_split.parquet").to_pydict()
    cold = {i for i, s in zip(split["item_idx"], split["split"], strict=True) if s != "train"}
    assert cold and not cold & set(items["item_idx"].to_pylist())  # cold items are never trained on
    cold_pairs = pq.read_table(out / "cold_interactions.parquet")
    assert set(cold_pairs["item_idx"].to_pylist()) <= cold and cold_pairs.num_rows == metrics["pairs"]["cold"]
    assert json.loads((out / "metrics.json").read_text())["backend"] == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_planted_taste_structure(run: Path, backend: str) -> None:
    spark_ready(backend)
    h = run_factorize(run, backend)["heldout"]
    assert h["model"]["users"] > 100
    assert h["model"]["auc"] > h["popularity"]["auc"] + 0.03, h
    assert h["model"]["recall"] > 1.2 * h["popularity"]["recall"], h
    assert h["random"]["auc"] == pytest.approx(0.5, abs=0.05)


def test_local_is_reproducible_under_a_fixed_seed(run: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("again")
    shutil.copytree(run / "dataset", other / "dataset")
    run_factorize(run, "local", "seed=3")
    run_factorize(other, "local", "seed=3")
    a = pq.read_table(run / "factors" / "item_factors.parquet")
    b = pq.read_table(other / "factors" / "item_factors.parquet")
    assert a.equals(b)


def test_sweep_picks_the_best_setting_and_uses_it(run: Path) -> None:
    metrics = run_factorize(run, "local", "factorize.sweep={factors: [4, 16], alpha: [5]}")
    assert len(metrics["sweep"]) == 2
    best = max(metrics["sweep"], key=lambda r: (r["ndcg"], r["recall"]))
    assert metrics["params"]["factors"] == best["factors"] == metrics["sweep_best"]["factors"]
    width = pq.read_schema(run / "factors" / "item_factors.parquet").field("factors").type.list_size
    assert width == best["factors"]


def test_log_confidence_and_no_evaluation(run: Path) -> None:
    metrics = run_factorize(run, "local", "factorize.confidence=log", "factorize.evaluate=false")
    assert "heldout" not in metrics and (run / "factors" / "item_factors.parquet").exists()


def test_cli_factorize_and_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from socialfeat.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["factorize", str(run), "--factors", "8", "--iterations", "3", "--sweep", "alpha=1,5", "reg=0.05"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "held-out ranking" in printed and "popularity" in printed and "sweep" in printed
    items = pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist()
    all_cold = tmp_path / "all_cold.csv"
    all_cold.write_text("item_id,split\n" + "".join(f"{i},test\n" for i in items))
    bad_split = tmp_path / "bad_split.csv"
    bad_split.write_text(f"item_id,split\n{items[0]},holdout\n")
    cases = [
        (["factorize", str(tmp_path / "nowhere")], "no dataset/interactions.parquet"),
        (["factorize", str(run), "--sweep", "colour=1,2"], "--sweep colour=1,2: expected NAME=V1,V2"),
        (["factorize", str(run), "alpha=1,2"], "sweep terms follow --sweep"),
        (["factorize", str(run), "--cold-items", str(all_cold)], "items warm (trained on); factorize needs at least 2"),
        (["factorize", str(run), "--cold-items", str(bad_split)], "row 1: split 'holdout'"),
        (["factorize", str(run), "--confidence", "cubic"], "--confidence"),
        (["factorize", str(run), "--sweep", "alpha=1,2", "--no-evaluate"], "which --no-evaluate turns off"),
    ]
    for argv, fragment in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


@pytest.fixture(scope="module")
def movielens_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import MOVIELENS

    from socialfeat.data.ingest import ingest

    need((MOVIELENS / "interactions.csv").exists(), f"no MovieLens sample at {MOVIELENS} (../shared/data)")
    run = tmp_path_factory.mktemp("ml")
    cfg = load_config(None, [], {"ingest.interactions": ("t", MOVIELENS / "interactions.csv")})
    ingest(cfg, run / "dataset")
    return run


def movielens_metrics(run: Path, backend: str) -> dict:
    from conftest import MOVIELENS

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        root / "configs" / "movielens.yaml",
        [f"factorize.backend={backend}", "factorize.evaluate=true"],
        {"split.cold_items": ("t", MOVIELENS / "coldstart_split.csv")},
    )
    return factorize(cfg, run).metrics["heldout"]


@pytest.mark.slow
def test_movielens_local_beats_popularity(movielens_run: Path) -> None:
    h = movielens_metrics(movielens_run, "local")
    assert h["model"]["recall"] > 1.8 * h["popularity"]["recall"], h
    assert h["model"]["auc"] > h["popularity"]["auc"] + 0.03, h


@pytest.mark.slow
@pytest.mark.spark
def test_movielens_spark_parity(movielens_run: Path, tmp_path: Path) -> None:
    spark_ready("spark")
    local = movielens_metrics(movielens_run, "local")
    shutil.copytree(movielens_run / "dataset", tmp_path / "dataset")
    spark = movielens_metrics(tmp_path, "spark")
    ratio = spark["model"]["recall"] / local["model"]["recall"]
    assert abs(ratio - 1) <= 0.10, (local["model"], spark["model"])
    assert spark["model"]["recall"] > 1.8 * spark["popularity"]["recall"]


def test_matrix_from_sorted_and_unsorted_pairs_agree() -> None:
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 40 * 30, 300))
    users, items, values = keys // 30, keys % 30, rng.random(len(keys)).astype(np.float32)
    direct = matrix(users, items, values, (40, 30))
    perm = rng.permutation(len(keys))
    via_coo = matrix(users[perm], items[perm], values[perm], (40, 30))
    assert (direct != via_coo).nnz == 0 and direct.has_sorted_indices
    np.testing.assert_array_equal(direct.toarray()[users, items], values)


def _set_weight(run: Path, row: int, value: float) -> Path:
    """Rewrite one weight of the run's dataset, as a dataset made before ingest refused such values might hold."""
    path = run / "dataset" / "interactions.parquet"
    table = pq.read_table(path)
    weight = table.column("weight").to_numpy().copy()
    weight[row] = value
    rewrite_table(path, table.set_column(table.column_names.index("weight"), "weight", pa.array(weight)))
    return path


@pytest.mark.parametrize(
    ("value", "extra", "fragment"),
    [
        (float("nan"), [], "row 6, column 'weight': not a finite number (nan); ALS needs finite weights"),
        (float("inf"), [], "row 6, column 'weight': not a finite number (inf)"),
        (3e38, [], "1 weights give a confidence that is not finite (weight 3e+38 → inf"),
        (-5.0, ["--confidence", "log"], "1 weights give a confidence that is not finite (weight -5 → nan"),
    ],
)
def test_non_finite_weights_and_confidences_stop_before_the_fit(
    run: Path, value: float, extra: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_helpers import fails

    path = _set_weight(run, 5, value)
    line = fails(["factorize", str(run), "--factors", "4", "--iterations", "2", *extra], capsys)
    assert line.startswith(f"error: {path}: ") and fragment in line, line
    assert not (run / "factors").exists()


def test_a_diverging_fit_names_the_dataset(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ALS on huge (finite) confidences can end in NaN factors: one line naming the dataset, not a traceback."""
    from cli_helpers import fails

    from socialfeat.factorize import stage
    from socialfeat.factorize.base import Factorizer, Factors, check_factors

    class Diverging(Factorizer):
        def fit(self, confidence, callback=None):  # noqa: ANN001, ANN202
            nan = np.full((confidence.shape[0], 2), np.nan, np.float32)
            return check_factors(Factors(users=nan, items=np.zeros((confidence.shape[1], 2), np.float32)))

    monkeypatch.setattr(stage, "create_factorizer", lambda cfg, seed: Diverging(cfg, seed))
    line = fails(["factorize", str(run), "--factors", "4"], capsys)
    path = run / "dataset" / "interactions.parquet"
    assert line.startswith(f"error: {path}: ALS diverged (NaN factors) on confidences up to "), line
    assert "factorize.confidence=log" in line and not (run / "factors").exists()


def test_local_backend_refuses_non_finite_confidences_and_reports_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.recommender_base import ModelFitError

    from socialfeat.config import FactorizeConfig
    from socialfeat.factorize.base import FitDiverged
    from socialfeat.factorize.local import LocalALS

    conf = sp.csr_matrix(np.array([[1.0, np.nan], [2.0, 1.0]], np.float32))
    als = LocalALS(FactorizeConfig(factors=2, iterations=1, use_gpu=False, threads=1), 0)
    with pytest.raises(ValueError, match="1 of 4 confidences are not finite"):
        als.fit(conf)

    def diverge(*_args: object, **_kw: object) -> None:
        raise ModelFitError("NaN encountered in factors")

    monkeypatch.setattr(AlternatingLeastSquares, "fit", diverge)
    with pytest.raises(FitDiverged):
        als.fit(sp.csr_matrix(np.ones((2, 2), np.float32)))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--sweep", "alpha=0,1"], "error: factorize.sweep: alpha=0.0: input should be greater than 0"),
        (["--sweep", "factors=inf"], "error: --sweep factors=inf: values must be finite numbers"),
        (["--sweep", "alpha=nan"], "factorize.sweep.alpha.0: input should be a finite number"),
        (["--set", "factorize.sweep={colour: [1, 2]}"], "error: factorize.sweep: unknown key 'colour'"),
    ],
)
def test_bad_sweep_values_are_one_line_before_any_fit(
    run: Path, argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_helpers import fails

    line = fails(["factorize", str(run), "--factors", "4", "--iterations", "2", *argv], capsys)
    assert fragment in line, line
    assert not (run / "factors").exists()
