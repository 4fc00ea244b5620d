"""``socialfeat report``: one self-contained, escaped HTML file whose sections, tables and galleries match the run."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from run_edits import rewrite_table

from socialfeat.artifacts import fingerprints
from socialfeat.cli import main
from socialfeat.features import read_features
from socialfeat.report.sections import cell, table

SECTIONS = (
    "summary",
    "dataset",
    "factorization",
    "training",
    "evaluation",
    "hybrid",
    "transfer",
    "neighbours",
    "clusters",
    "config",
)
EVIL = "<script>alert('x')</script>"


class Page(HTMLParser):
    """The parts of the report the tests look at: sections, their text, images, links, tables."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.section: str | None = None
        self.h2: dict[str, str] = {}
        self.text: dict[str, list[str]] = {}
        self.urls: list[str] = []
        self.scripts = 0
        self.links = 0
        self.rows: list[dict] = []  # nearest-neighbour rows: source, query, neighbour ids, their src
        self.query: str | None = None
        self.clusters: list[dict] = []
        self.tables: dict[str, list[list[list[tuple[str, bool]]]]] = {}  # section → tables → rows of (text, bold)
        self._row: list[tuple[str, bool]] | None = None
        self._cell: list[str] | None = None
        self._bold = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "script":
            self.scripts += 1
        if tag == "link":
            self.links += 1
        if tag == "section":
            self.section = a["id"]
            self.text[self.section] = []
        if tag == "tr" and a.get("class") == "nn-row":
            self.rows.append({"source": a["data-source"], "query": self.query, "ids": [], "src": []})
        if tag == "img" and a.get("class") == "query":
            self.query = a["data-item"]
            self.rows[-1]["query"] = self.query
        if tag == "img" and a.get("class") == "nb":
            self.rows[-1]["ids"].append(a["data-item"])
            self.rows[-1]["src"].append(a["src"])
        if tag == "div" and a.get("class") == "cluster":
            self.clusters.append({"name": a["data-clustering"], "cluster": int(a["data-cluster"]), "ids": []})
        if tag == "img" and a.get("class") == "cl":
            self.clusters[-1]["ids"].append(a["data-item"])
        if tag == "table" and a.get("class") == "data" and self.section:
            self.tables.setdefault(self.section, []).append([])
        if tag == "tr" and self.section in self.tables:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell, self._bold = [], False
        if tag == "b":
            self._bold = True
        if tag not in ("img", "br", "meta", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(("".join(self._cell).strip(), self._bold))
            self._cell = None
        if tag == "tr" and self._row is not None and self.section in self.tables:
            self.tables[self.section][-1].append(self._row)
            self._row = None
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.section is None:
            return
        if self.stack and self.stack[-1] == "h2":
            self.h2[self.section] = data
        self.text[self.section].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def section_text(self, sid: str) -> str:
        return " ".join(" ".join(self.text.get(sid, [])).split())


def eval_metrics() -> dict:
    """A realistic eval/metrics.json as ``socialfeat evaluate`` writes it, with user text that needs escaping."""

    def cold(auc: float, valid: float) -> dict:
        return {"auc": auc, "recall@20": auc / 4, "ndcg@20": auc / 8, "users": 250, "lambda": 10.0, "valid_auc": valid}

    def probes(a: float) -> dict:
        return {
            "palette": {"all": a, "few": a - 0.1, "chance": 0.25, "classes": 4},
            "object": {"all": a - 0.05, "few": a - 0.2, "chance": 0.125, "classes": 8},
        }

    retrieval = {"overlap": 0.08, "random_overlap": 0.04, "lift": 2.0, "queries": 300}
    return {
        "k": 20,
        "split": {"train": 320, "valid": 20, "test": 60, "users_evaluated": 250},
        "rows": [
            {
                "name": "learned · pooled",
                "source": "learned",
                "column": "features",
                "mapping": "ridge",
                "dim": 64,
                "coldstart": cold(0.712, 0.70),
                "retrieval": retrieval,
                "probes": probes(0.6),
            },
            {
                "name": "learned · factors head",
                "source": "learned",
                "column": "head_factors",
                "mapping": "identity",
                "dim": 16,
                "coldstart": cold(0.69, 0.71),
                "retrieval": {**retrieval, "lift": 2.5, "cold_overlap": 0.05, "cold_lift": 1.7},
            },
            {
                "name": f"ImageNet {EVIL} $cost$",
                "source": "imagenet",
                "column": "features",
                "mapping": "ridge",
                "dim": 1280,
                "coldstart": cold(0.651, 0.64),
                "retrieval": {**retrieval, "lift": 1.4},
                "probes": probes(0.7),
            },
            {"name": "random init", "source": "random", "column": "features", "mapping": "ridge", "dim": 64}
            | {"coldstart": cold(0.55, 0.56), "probes": probes(0.3)},
            {"name": "metadata (tags)", "source": "metadata", "column": "tags", "mapping": "ridge", "dim": 30}
            | {"coldstart": cold(0.6, 0.6)},
        ],
        "references": [
            {"name": "random scores", "coldstart": {"auc": 0.5, "recall@20": 0.05, "ndcg@20": 0.02, "users": 250}},
            {
                "name": "popularity (oracle)",
                "oracle": True,
                "coldstart": {"auc": 0.8, "recall@20": 0.3, "ndcg@20": 0.15},
                "note": "sees the hidden data",
            },
        ],
        "notes": ["popularity (oracle) peeks at the cold items' hidden interaction counts"],
    }


def ok(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


@pytest.fixture
def full_run(embedded_run: Path, tmp_path: Path) -> Path:
    """A copy of embedded_run with an evaluation, and item titles that try to inject a script."""
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps(eval_metrics()))
    items = pq.read_table(run / "dataset" / "items.parquet")
    titles = pa.array([f"{EVIL} {t} & co" for t in items.column("title").to_pylist()])
    # as ingested: not newer than the factors, and recorded in stats.json
    rewrite_table(
        run / "dataset" / "items.parquet", items.set_column(items.column_names.index("title"), "title", titles)
    )
    return run


def test_full_report(full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "report.html"
    ok(
        [
            "report",
            str(full_run),
            "--out",
            str(out),
            "--set",
            "report.gallery_queries=3",
            "--set",
            "report.gallery_neighbours=4",
        ]
    )
    assert f"wrote {out} (" in capsys.readouterr().out
    assert not (full_run / "report.html").exists()
    html = out.read_text()
    page = Page(html)

    for sid in SECTIONS:
        assert sid in page.h2, f"section {sid} has no h2"
        if sid not in ("factorization", "transfer", "hybrid"):  # embedded_run: no held-out ranking, no transfer
            assert "not available" not in page.section_text(sid), sid  # sets, no content model
    assert "--evaluate to measure them" in page.section_text("factorization")
    assert f"socialfeat content {full_run}" in page.section_text("hybrid")
    # self-contained and escaped: no scripts, stylesheets or remote URLs; user text shown, never run
    assert page.scripts == 0 and page.links == 0
    assert all(u.startswith(("data:image/", "#")) for u in page.urls), [u[:40] for u in page.urls if "data:" not in u]
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert EVIL in page.section_text("evaluation")  # escaped in the source, the literal text in the page

    # headline and evaluation table: every row and reference, best AUC in bold
    metrics = eval_metrics()
    rows = page.tables["evaluation"][0]
    names = [r[0][0] for r in rows]
    for row in [*metrics["rows"], *metrics["references"]]:
        assert row["name"] in names
    header = [c for c, _ in rows[0]]
    auc_col = header.index("cold-start AUC")
    bold = [r[0][0] for r in rows[1:] if r[auc_col][1]]
    assert bold == ["learned · pooled"]  # best feature row; the oracle reference (0.80) is not a candidate
    assert "palette (chance 0.25): all" in page.section_text("evaluation")
    assert header[-1] == "cold lift" and [r[-1][0] for r in rows[1:3]] == ["–", "1.70×"]
    assert "250 users; 320 warm items, 20 cold validation items, 60 cold test items" in page.section_text("evaluation")
    assert "popularity (oracle): sees the hidden data" in page.section_text("evaluation")

    # summary: learned by validation AUC is the factors-head row; ImageNet quoted against it
    assert "Learned features: cold-start AUC 0.69 vs 0.65 for ImageNet features" in page.section_text("summary")

    # gallery: 3 queries × (learned, imagenet) rows of 4 neighbours each, as thumbnails
    assert [r["source"] for r in page.rows] == ["learned", "imagenet"] * 3
    for r in page.rows:
        assert len(r["ids"]) == 4 and all(s.startswith("data:image/jpeg;base64,") for s in r["src"])
        assert r["query"] not in r["ids"]
    split = pq.read_table(full_run / "factors" / "item_split.parquet").to_pydict()
    split_of = {str(i): s for i, s in zip(split["item_id"], split["split"], strict=True)}
    assert all(split_of[r["query"]] == "test" for r in page.rows)  # the brand-new images come first
    # learned row searches the column with the best retrieval lift; check both rows against a naive search
    for source, column in (("learned", "head_factors"), ("imagenet", "features")):
        ids, x = read_features(full_run, source, column)
        ids = [str(i) for i in ids]
        for r in (r for r in page.rows if r["source"] == source):
            q = x[ids.index(r["query"])]
            sims = [(float(q @ v / np.linalg.norm(q) / np.linalg.norm(v)), i) for i, v in zip(ids, x, strict=True)]
            naive = [i for s, i in sorted(sims, key=lambda t: -t[0]) if i != r["query"]][:4]
            assert r["ids"] == naive

    # clusters: each cluster's listed items first, then others of the same cluster, up to cluster_images
    described = json.loads((full_run / "targets" / "clusters.json").read_text())
    labels = pq.read_table(full_run / "targets" / "factor_clusters.parquet").to_pydict()
    cluster_of = {str(i): c for i, c in zip(labels["item_id"], labels["cluster"], strict=True)}
    shown = {(c["name"], c["cluster"]): c["ids"] for c in page.clusters}
    assert len(shown) == sum(len(groups) for groups in described.values())
    for g in described["factor-clusters"]:
        ids = shown["factor-clusters", g["cluster"]]
        assert len(ids) == min(8, g["size"])
        assert ids[: len(g["items"])] == [str(i) for i in g["items"]][:8]
        assert all(cluster_of[i] == g["cluster"] for i in ids)

    # training and config sections show the run's facts
    assert "socialfeat_tiny" in page.section_text("training")
    assert "name: demo" in page.section_text("config") and "torch" in page.section_text("config")


def test_factorization_heldout_table(full_run: Path) -> None:
    """With held-out metrics the factorization section has a model / popularity / random table, best in bold."""
    path = full_run / "factors" / "metrics.json"
    m = json.loads(path.read_text())

    def scores(recall: float, auc: float, coverage: float) -> dict:
        ranking = {"recall": recall, "precision": recall / 20, "ndcg": recall / 2, "map": recall / 3}
        return {**ranking, "auc": auc, "coverage": coverage, "users": 280}

    m["heldout"] = {
        "k": 20,
        "held_out_pairs": 280,
        "model": scores(0.21, 0.86, 0.24),
        "popularity": scores(0.12, 0.83, 0.04),
        "random": scores(0.01, 0.50, 1.0),
    }
    made = path.stat().st_mtime_ns
    path.write_text(json.dumps(m))
    os.utime(path, ns=(made, made))  # the same factorization, with its held-out scores: not newer than targets/
    ok(["report", str(full_run)])
    page = Page((full_run / "report.html").read_text())
    rows = page.tables["factorization"][0]
    assert [r[0][0] for r in rows[1:]] == ["ALS model", "popularity", "random"]
    header = [c for c, _ in rows[0]]
    assert header[1:] == ["recall@20", "precision@20", "NDCG@20", "MAP@20", "AUC", "catalogue coverage"]
    for col in range(1, len(header)):
        values = [float(r[col][0].rstrip("%")) for r in rows[1:]]
        assert [r[col][1] for r in rows[1:]] == [v == max(values) for v in values], header[col]
    assert sum(u.startswith("data:image/png") for u in page.urls) >= 4  # factorization, training, 2 evaluation


def test_only_dataset_says_what_to_run(embedded_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run / "dataset", run / "dataset")
    ok(["report", str(run)])
    page = Page((run / "report.html").read_text())
    assert set(page.h2) == set(SECTIONS)
    expected = {
        "factorization": f"socialfeat factorize {run}",
        "training": f"socialfeat train {run}",
        "evaluation": f"socialfeat evaluate {run}",
        "hybrid": f"socialfeat content {run}",
        "transfer": f"socialfeat transfer {run} --labels TABLE",
        "neighbours": f"socialfeat embed {run} --source learned",
        "clusters": f"socialfeat targets {run}",
        "summary": f"socialfeat evaluate {run}",
    }
    for sid, command in expected.items():
        text = page.section_text(sid)
        assert "not available" in text and command in text, (sid, text)
    assert "not available" not in page.section_text("dataset")
    assert "300" in page.section_text("dataset")
    assert "not available" not in page.section_text("config")
    assert page.rows == [] and page.clusters == []


def test_broken_input_costs_one_section(full_run: Path) -> None:
    (full_run / "eval" / "metrics.json").write_text("{not json")
    (full_run / "features" / "imagenet.parquet").unlink()
    ok(["report", str(full_run)])
    page = Page((full_run / "report.html").read_text())
    assert "could not read its inputs" in page.section_text("evaluation")
    assert "not available" in page.section_text("summary")
    # the gallery goes on with learned features alone and says how to get the ImageNet row
    assert [r["source"] for r in page.rows] == ["learned"] * 8
    assert f"socialfeat embed {full_run} --source imagenet" in page.section_text("neighbours")
    assert "not available" not in page.section_text("clusters")


def test_thumbnails_from_the_image_cache_when_the_images_moved(full_run: Path) -> None:
    stats_path = full_run / "dataset" / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["missing_images"]["image_root"] = str(full_run / "moved-away")
    made = stats_path.stat().st_mtime_ns
    stats_path.write_text(json.dumps(stats))
    os.utime(stats_path, ns=(made, made))  # images moved, not a re-ingest
    ok(["report", str(full_run), "--set", "report.gallery_queries=2"])
    page = Page((full_run / "report.html").read_text())
    assert len(page.rows) == 4 and all(len(r["src"]) == 6 for r in page.rows)


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_user_errors_are_one_line(tmp_path: Path, make: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    if make == "empty":
        run.mkdir()
    elif make == "file":
        run.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run}: ") and "\n" not in err
    assert "Traceback" not in err


def test_out_is_a_folder(full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(full_run), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --out: expected a .html or .htm file name for the report")


def test_best_cells_skip_references_and_gaps() -> None:
    rows = [
        [cell("a"), cell(0.5), cell(2.0)],
        [cell("b"), cell(0.7), cell(None)],
        [{**cell("oracle"), "reference": True}, cell(0.9), cell(1.0)],
    ]
    t = table(["", "auc", "loss"], rows, "", best={1: "max", 2: "min"})
    assert [r[1].get("best", False) for r in t["rows"]] == [False, True, False]
    assert [r[2].get("best", False) for r in t["rows"]] == [True, False, False]
    assert t["numeric"] == [False, True, True]


def test_training_section_says_when_no_epoch_beat_the_start(tmp_path: Path) -> None:
    from socialfeat.report.sections import training

    model = tmp_path / "model"
    model.mkdir()
    meta = {"backbone": "b", "selection": "valid-auc", "selected_epoch": 0, "valid_cold_auc": 0.61}
    meta |= {"valid_cold_auc_start": 0.61, "fit_items": 100}
    (model / "model.json").write_text(json.dumps(meta))
    epochs = [{"epoch": -1, "step": 0, "valid_cold_auc": 0.61}, {"epoch": 0, "train_loss": 1.0, "valid_cold_auc": 0.6}]
    (model / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    out = training(tmp_path)
    assert "No epoch beat the untrained start" in out["no_win"]
    assert out["model"]["epoch kept"].startswith("0 (0 = the untrained start)")
    assert "cold auc" in out["epochs"]["head"]  # the selection score is a column, the start its first row
    meta |= {"selected_epoch": 1, "valid_cold_auc": 0.63}
    (model / "model.json").write_text(json.dumps(meta))
    assert training(tmp_path)["no_win"] is None


# ------------------------------------------------------------------------------------------------ gallery at scale
def old_gallery(run: Path, source: str, column: str, queries: list, k: int) -> list[list[tuple[str, float]]]:
    """The gallery's search before issue 23: the whole matrix, unit rows, a full stable sort per query."""
    ids, matrix = read_features(run, source, column)
    unit = matrix.astype(np.float32) / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    out = []
    for q in queries:
        r = ids.index(q)
        sims = unit @ unit[r]
        sims[r] = -np.inf
        out.append([(str(ids[j]), float(sims[j])) for j in np.argsort(-sims, kind="stable")[:k]])
    return out


@pytest.mark.parametrize("indexed", [True, False])
def test_gallery_equals_the_full_sort_and_reads_only_the_query_rows(
    full_run: Path, indexed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the run's (current, flat) indexes, or with none and feature files of many row groups: the same
    neighbours as the old full sort, and no feature matrix read whole (only ids, the queries' row groups, and a
    batched pass when there is no index)."""
    from socialfeat.config import load_config
    from socialfeat.index import build_index
    from socialfeat.report.gallery import Thumbnails, neighbour_gallery

    config = load_config(None, ["report.gallery_queries=5", "report.gallery_neighbours=6"])
    sources = [("learned", "head_factors", "learned"), ("imagenet", "features", "ImageNet")]
    for path in full_run.glob("features/*.faiss*"):
        path.unlink()
    if indexed:
        for source, column, _ in sources:
            assert build_index(config, full_run, source, column).meta["kind"] == "flat"
    else:
        for source, _, _ in sources:
            path = full_run / "features" / f"{source}.parquet"
            pq.write_table(pq.read_table(path), path, row_group_size=40)
            summary = path.with_suffix(".json")  # rewritten as embed writes it: with its new fingerprint
            summary.write_text(json.dumps({**json.loads(summary.read_text()), **fingerprints(path.parent, path.name)}))
    row_groups: list[int] = []
    whole: list[str] = []
    real_group, real_table = pq.ParquetFile.read_row_group, pq.read_table

    def read_row_group(self: pq.ParquetFile, i: int, *args: object, **kwargs: object) -> object:
        row_groups.append(i)
        return real_group(self, i, *args, **kwargs)

    def read_table(path: object, *args: object, columns: list | None = None, **kwargs: object) -> object:
        if "features" in Path(str(path)).parts and columns != ["item_id"]:
            whole.append(str(path))
        return real_table(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", read_row_group)
    monkeypatch.setattr(pq, "read_table", read_table)
    gallery = neighbour_gallery(config, full_run, Thumbnails(full_run, 32), sources)
    monkeypatch.undo()
    assert not whole and len(row_groups) <= 2 * 5
    queries = [b["id"] for b in gallery["queries"]]
    assert len(queries) == 5
    for n, (source, column, _) in enumerate(sources):
        want = old_gallery(full_run, source, column, queries, 6)
        for block, expected in zip(gallery["queries"], want, strict=True):
            got = block["rows"][n]["neighbours"]
            assert [g["id"] for g in got] == [i for i, _ in expected], (source, block["id"])
            np.testing.assert_allclose([g["score"] for g in got], [s for _, s in expected], atol=1e-5)
