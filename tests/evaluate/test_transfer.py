"""``transfer``: linear probes of every feature source on labelled images the model never saw — checked against
naive references on synthetic features, on a held-out simulated collection, and for every bad table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import fails, ok
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from socialfeat.data.simulate import simulate_collection
from socialfeat.errors import UserError
from socialfeat.evaluate.transfer import check_labels, few_shot_probe, kfold_probe, l2_normalize, probe_source

TINY = ["--set", "train.backbone=socialfeat_tiny", "--set", "train.image_size=32"]
CS = [0.1, 1, 10, 100, 1000, 10000]


# ------------------------------------------------------------------------------------------------ pure probes
def _blobs(n_per: int, k: int, d: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + spread * rng.normal(size=(len(y), d)), np.array([f"c{v}" for v in y])


def test_separable_features_are_read_perfectly_and_noise_is_chance() -> None:
    x, y = _blobs(30, 4, 20, 0.3, 0)
    assert kfold_probe(x, y, 5, [0.1, 10, 1000], 3, 0)["mean"] == 1.0
    assert few_shot_probe(x, y, 1, 3, 10.0, 0)["mean"] == 1.0
    noise = np.random.default_rng(1).normal(size=x.shape)
    r = kfold_probe(noise, y, 5, [0.1, 10, 1000], 3, 0)
    assert abs(r["mean"] - 0.25) < 0.15  # four balanced classes: chance is 0.25


def test_kfold_matches_a_manual_stratified_loop() -> None:
    """The same folds, each fitted by plain sklearn on the full-width features at the C the probe chose."""
    x, y = _blobs(25, 3, 200, 20.0, 2)  # overlapping classes in more dimensions than examples: the span trick matters
    r = kfold_probe(x, y, 5, [0.1, 10, 1000], 3, 7)
    xn = l2_normalize(x)
    manual = []
    for (tr, te), c in zip(StratifiedKFold(5, shuffle=True, random_state=7).split(xn, y), r["C"], strict=True):
        model = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(xn[tr], y[tr])
        manual.append(float(np.mean(model.predict(xn[te]) == y[te])))
    assert len(r["folds"]) == 5 and 0.4 < r["mean"] < 1.0
    assert np.allclose(r["folds"], manual, atol=1 / 15 + 1e-9)  # at most one of 15 test images flips
    assert r["mean"] == pytest.approx(np.mean(r["folds"])) and r["std"] == pytest.approx(np.std(r["folds"]))


def test_few_shot_skips_points_a_class_cannot_fill_and_checks_labels() -> None:
    x, y = _blobs(6, 3, 5, 0.3, 3)
    r = probe_source(x, y, 3, [1, 5, 6, 20], 2, CS, 3, 0)
    assert r["few_shot"]["1"]["mean"] == 1.0 and len(r["few_shot"]["1"]["draws"]) == 2
    assert "5" in r["few_shot"] and "mean" in r["few_shot"]["5"]
    assert r["few_shot"]["6"]["skipped"] == "class 'c0' has 6 examples, not more than 6"
    with pytest.raises(UserError, match="only one class"):
        check_labels(np.array(["a"] * 9), 3, "t.csv")
    with pytest.raises(UserError, match="class 'b' has 2 usable images, fewer than the 5 folds"):
        check_labels(np.array(["a"] * 9 + ["b"] * 2), 5, "t.csv")


# ------------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled collection from the platform's attribute space that shares no image with it."""
    out = tmp_path_factory.mktemp("heldout") / "h"
    simulate_collection(out, 480, 32, seed=11)
    return out


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_run, tmp_path / "run"))


def test_the_collection_is_disjoint_from_the_platform(heldout: Path, platform: Path) -> None:
    rows = list(csv.DictReader(open(heldout / "labels.csv", encoding="utf-8")))
    assert len(rows) == 480 and set(rows[0]) == {"image", "palette", "texture", "composition", "object"}
    mine = {(heldout / r["image"]).read_bytes() for r in rows}
    theirs = {p.read_bytes() for p in (platform / "images").glob("*.png")}
    assert len(mine) == 480 and not mine & theirs


@pytest.mark.slow
def test_learned_features_beat_random_init_on_the_held_out_palette(
    run: Path, heldout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = heldout / "labels.csv"
    ok(["transfer", str(run), "--labels", str(labels), "--label-column", "palette", "--name", "held", *TINY])
    text = capsys.readouterr().out
    result = json.loads((run / "eval" / "transfer-held.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == [
        "learned · pooled",
        "learned · factors head",
        "learned · factor clusters head",
        "imagenet",
        "random init",
    ]
    assert result["images"]["usable"] == 480 and result["chance"] == pytest.approx(80 / 480)
    learned, random = rows["learned · pooled"], rows["random init"]
    # the few-shot curve is where behaviour-trained features pay off (margins 0.03–0.12 across collection seeds)
    margins = [learned["few_shot"][n]["mean"] - random["few_shot"][n]["mean"] for n in ("1", "5", "10", "20")]
    assert all(m > 0 for m in margins) and np.mean(margins) > 0.03, margins
    assert learned["kfold"]["mean"] > 0.8 and len(learned["kfold"]["folds"]) == 5
    imagenet = rows["imagenet"]  # reported side by side (at 32 px it is no match for either)
    assert imagenet["dim"] == 1280 and 1 / 6 < imagenet["kfold"]["mean"] < 1
    for name, r in rows.items():
        assert f"{r['kfold']['mean']:.3f}±{r['kfold']['std']:.3f}" in text, name
    assert "chance (majority class)" in text and f"wrote {run / 'eval' / 'transfer-held.json'}" in text
    # the report shows the table and the curve
    ok(["report", str(run)])
    html = (run / "report.html").read_text()
    section = html[html.index('<section id="transfer">') : html.index("</section>", html.index('id="transfer"'))]
    assert "held" in section and f"{learned['kfold']['mean']:.3f} ± {learned['kfold']['std']:.3f}" in section
    assert "data:image/png;base64," in section and "not available" not in section


def test_sets_from_the_config_share_their_images(run: Path, heldout: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    with open(heldout / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:90]
    with open(small / "t.csv", "w", encoding="utf-8") as fh:
        fh.write("path,palette,texture\n" + "".join(f"{r['image']},{r['palette']},{r['texture']}\n" for r in rows))
    base = {"labels": str(small / "t.csv"), "image_root": str(heldout), "image_column": "path"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps(
            {
                "transfer": {
                    "sets": [
                        {**base, "name": "p", "label_column": "palette"},
                        {**base, "name": "t", "label_column": "texture"},
                    ],
                    "folds": 3,
                    "few_shot": [1, 2],
                    "draws": 2,
                }
            }
        )
    )
    ok(["transfer", str(run), "-c", str(cfg), "--source", "learned", *TINY])
    p, t = (json.loads((run / "eval" / f"transfer-{n}.json").read_text()) for n in ("p", "t"))
    assert p["label_column"] == "palette" and t["label_column"] == "texture"
    assert sorted(p["classes"]) == ["cool", "earth", "mono", "neon", "pastel", "warm"]
    assert p["rows"][0]["embed"] == t["rows"][0]["embed"]  # embedded once for both sets
    assert len(p["rows"][0]["kfold"]["folds"]) == 3 and set(p["rows"][0]["few_shot"]) == {"1", "2"}


def _table(path: Path, rows: list[str], header: str = "image,label") -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_bad_tables_are_one_line_errors(
    run: Path, heldout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = [f"images/h{k:05d}.png" for k in range(12)]
    root = ["--image-root", str(heldout), "--source", "learned", *TINY]

    def go(table: Path, *extra: str) -> str:
        return fails(["transfer", str(run), "--labels", str(table), *root, *extra], capsys)

    t = _table(tmp_path / "a.csv", [f"{p},x" for p in imgs], "img,label")
    line = go(t)
    assert str(t) in line and "no image column 'image' (found: img, label)" in line and "--image-column" in line
    line = go(t, "--image-column", "img", "--label-column", "style")
    assert str(t) in line and "no label column 'style'" in line and "--label-column" in line
    t = _table(tmp_path / "b.csv", [f"nothere/{k}.png,x{k % 2}" for k in range(12)])
    assert "none of the 12 images could be used (12 missing)" in go(t)
    t = _table(tmp_path / "c.csv", [f"{p},x" for p in imgs])
    line = go(t)
    assert str(t) in line and "column 'label'" in line and "only one class ('x')" in line
    t = _table(tmp_path / "d.csv", [f"{p},{'a' if k < 9 else 'b'}" for k, p in enumerate(imgs)])
    line = go(t)
    assert str(t) in line and "class 'b' has 3 usable images, fewer than the 5 folds" in line
    assert "no labelled set" in fails(["transfer", str(run), *TINY], capsys)
    assert fails(["transfer", str(run), "--name", "x"], capsys).startswith("error: --name: only applies with --labels")
    line = go(_table(tmp_path / "e.csv", [f"{p},{k % 2}" for k, p in enumerate(imgs)]), "--name", "a b")
    assert "transfer set 'a b'" in line
    assert "table not found" in go(tmp_path / "missing.csv")


def test_a_folder_of_class_folders_is_a_labelled_set(run: Path, heldout: Path, tmp_path: Path) -> None:
    with open(heldout / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:60]
    folder = tmp_path / "styles"
    for r in rows:
        (folder / r["palette"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(heldout / r["image"], folder / r["palette"] / Path(r["image"]).name)
    ok(["transfer", str(run), "--labels", str(folder), "--source", "learned", "--folds", "2", *TINY])
    result = json.loads((run / "eval" / "transfer-styles.json").read_text())
    assert result["images"]["usable"] == 60 and sum(result["classes"].values()) == 60
    assert result["classes"] == {p: sum(r["palette"] == p for r in rows) for p in result["classes"]}


def test_the_meta_class_baseline_is_probed_beside_the_others(run: Path, heldout: Path, tmp_path: Path) -> None:
    """Once a run has the meta-class model, transfer probes it by default, pooled and its tags head."""
    from socialfeat.config import load_config
    from socialfeat.targets.stage import targets
    from socialfeat.train import train, train_meta_class

    shutil.rmtree(run / "targets")
    targets(load_config(None, ["targets.clusters=6", "targets.targets=[factors,tags]", "targets.min_tag_items=3"]), run)
    overrides = ["train.backbone=socialfeat_tiny", "train.weights=random", "train.image_size=32", "train.epochs=1"]
    config = load_config(None, [*overrides, "train.threads=1", "train.select=last", "train.targets=[factors]"])
    train(config, run)  # the learned model again, on the rebuilt targets: transfer refuses one older than them
    train_meta_class(config, run)
    with open(heldout / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:90]
    table = _table(tmp_path / "t.csv", [f"{r['image']},{r['palette']}" for r in rows])
    ok(["transfer", str(run), "--labels", str(table), "--image-root", str(heldout), "--name", "m", *TINY])
    names = [r["name"] for r in json.loads((run / "eval" / "transfer-m.json").read_text())["rows"]]
    assert {"learned · pooled", "imagenet", "random init", "meta-class · pooled", "meta-class · tags head"} <= set(
        names
    )
