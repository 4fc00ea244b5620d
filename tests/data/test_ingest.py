"""ingest: formats, column mapping, ids kept as given, weights, tables and stats — on small logs,
the simulated platform and the real MovieLens data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from socialfeat.config import load_config
from socialfeat.data.ingest import ingest
from socialfeat.errors import UserError

NO_FILTER = ["filter.min_user_interactions=1", "filter.min_item_interactions=1", "filter.drop_top_users=0"]

LOG = """user_id,item_id,event,timestamp,value
u1,a,view,2024-01-01T10:00:00,1
u1,a,like,2024-01-01T10:01:00,1
u1,b,view,2024-01-02T10:00:00,2
u2,a,view,2024-01-03T10:00:00,1
u2,b,view,2024-01-04T10:00:00,1
u2,b,share,2024-01-04T10:05:00,1
u3,c,view,2024-01-05T10:00:00,3
"""


def run(out: Path, **ingest_keys: object) -> tuple[dict, dict[str, pa.Table]]:
    flags = {f"ingest.{k}": ("test", v) for k, v in ingest_keys.items()}
    cfg = load_config(None, NO_FILTER, flags)
    stats = ingest(cfg, out).stats
    tables = {p.stem: pq.read_table(p) for p in out.glob("*.parquet")}
    return stats, tables


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_small_log_pairs_counts_weights_times(tmp_path: Path) -> None:
    stats, t = run(tmp_path / "ds", interactions=write(tmp_path / "log.csv", LOG))
    users = t["users"].to_pylist()
    items = t["items"].to_pylist()
    assert [u["user_id"] for u in users] == ["u1", "u2", "u3"] and [i["item_id"] for i in items] == ["a", "b", "c"]
    rows = {
        (users[r["user_idx"]]["user_id"], items[r["item_idx"]]["item_id"]): r for r in t["interactions"].to_pylist()
    }
    assert set(rows) == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "c")}
    r = rows[("u1", "a")]
    assert (r["n_view"], r["n_like"], r["n_share"]) == (1, 1, 0)
    assert r["weight"] == pytest.approx(1 * 1 + 4 * 1)  # default weights view=1, like=4, value 1 each
    assert rows[("u1", "b")]["weight"] == pytest.approx(2.0)  # value 2 counts twice
    assert rows[("u2", "b")]["weight"] == pytest.approx(1 + 8)
    assert (
        str(rows[("u2", "b")]["first_ts"]) == "2024-01-04 10:00:00"
        and str(rows[("u2", "b")]["last_ts"]) == "2024-01-04 10:05:00"
    )
    assert stats["before"]["interactions"] == 7 and stats["before"]["pairs"] == 5
    assert stats["before"]["events"] == {"view": 5, "like": 1, "share": 1}
    assert stats["after"]["events"] == stats["before"]["events"]
    assert stats["before"]["density"] == pytest.approx(5 / 9)
    assert stats["id_types"] == {"user": "string", "item": "string"}
    out = tmp_path / "ds"
    assert {p.name for p in out.iterdir()} == {
        ".socialfeat.json",  # the marker that lets a later ingest --out replace it
        "interactions.parquet",
        "users.parquet",
        "items.parquet",
        "stats.json",
        "manifest.json",
        "config.yaml",
    }
    assert json.loads((out / "manifest.json").read_text())["stage"] == "ingest"


def test_event_weights_are_configurable(tmp_path: Path) -> None:
    _, t = run(tmp_path / "ds", interactions=write(tmp_path / "log.csv", LOG), event_weights={"view": 0.5, "like": 10})
    w = t["interactions"].column("weight").to_pylist()
    # given weights merge over the defaults: share keeps its default 8
    assert sorted(w) == pytest.approx(sorted([0.5 + 10, 0.5 * 2, 0.5, 0.5 + 8, 0.5 * 3]))
    _, t = run(tmp_path / "ds2", interactions=write(tmp_path / "log2.csv", LOG.replace("share", "repost")))
    row = [r for r in t["interactions"].to_pylist() if r["n_repost"]][0]
    assert row["weight"] == pytest.approx(1 + 1)  # view + an unlisted kind, which weighs 1


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "jsonl", "csv.gz"])
def test_every_format_gives_the_same_dataset(tmp_path: Path, kind: str) -> None:
    table = pacsv.read_csv(
        pa.py_buffer(LOG.encode()), convert_options=pacsv.ConvertOptions(column_types={"timestamp": pa.string()})
    )
    path = tmp_path / f"log.{kind}"
    if kind == "csv":
        path.write_text(LOG)
    elif kind == "csv.gz":
        path.write_bytes(gzip.compress(LOG.encode()))
    elif kind == "tsv":
        path.write_text(LOG.replace(",", "\t"))
    elif kind == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    _, got = run(tmp_path / "ds", interactions=path)
    _, ref = run(tmp_path / "ref", interactions=write(tmp_path / "ref.csv", LOG))
    assert got["interactions"].equals(ref["interactions"]) and got["users"].equals(ref["users"])


def test_ids_are_kept_exactly_as_given(tmp_path: Path) -> None:
    # integers in CSV stay integers; one zero-padded id keeps the whole column as strings
    _, t = run(tmp_path / "a", interactions=write(tmp_path / "a.csv", "user_id,item_id\n10,7\n9,7\n10,8\n"))
    assert t["users"].column("user_id").to_pylist() == [9, 10]  # numeric order, int64
    assert pa.types.is_int64(t["items"].schema.field("item_id").type)
    _, t = run(tmp_path / "b", interactions=write(tmp_path / "b.csv", "user_id,item_id\n10,007\n9,7\n"))
    assert sorted(t["items"].column("item_id").to_pylist()) == ["007", "7"]
    # strings in a typed format stay strings even when they look like numbers
    pq.write_table(pa.table({"user_id": ["1", "2"], "item_id": [5, 6]}), tmp_path / "c.parquet")
    _, t = run(tmp_path / "c", interactions=tmp_path / "c.parquet")
    assert t["users"].column("user_id").to_pylist() == ["1", "2"] and t["items"].column("item_id").to_pylist() == [5, 6]


def test_column_mapping_and_default_event(tmp_path: Path) -> None:
    log = write(
        tmp_path / "ratings.csv", "userId,movieId,rating,ts\n1,10,4.5,978300760\n1,11,3,978300761\n2,10,5,978300762\n"
    )
    flags = {
        "columns": {"user": "userId", "item": "movieId", "value": "rating", "time": "ts"},
        "default_event": "rating",
    }
    stats, t = run(tmp_path / "ds", interactions=log, **flags)
    assert stats["before"]["events"] == {"rating": 3}
    assert t["interactions"].column("value").to_pylist() == [4.5, 3.0, 5.0]
    assert str(t["interactions"].column("first_ts")[0]) == "2000-12-31 22:12:40"  # epoch seconds, UTC


def test_items_images_and_comments(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    items = write(
        tmp_path / "items.csv", "item_id,image,title,genre\na,a.png,A,x|y\nb,b.png,B,y\nc,c.png,C,z\na,a.png,A,x|y\n"
    )
    comments = write(tmp_path / "comments.csv", "item_id,user_id,text\na,u2,lovely\nb,u1,\nc,u3,gone\n")
    stats, t = run(
        tmp_path / "ds",
        interactions=write(tmp_path / "log.csv", LOG),
        items=items,
        comments=comments,
        image_root=tmp_path / "img",
    )
    assert t["items"].column("item_id").to_pylist() == ["a", "b"]  # c has no image file
    assert t["items"].column("genre").to_pylist() == ["x|y", "y"]  # unmapped columns pass through
    assert stats["missing_images"]["count"] == 1 and stats["missing_images"]["examples"] == ["c.png"]
    assert stats["dropped"]["duplicate_item_rows"] == 1
    assert t["comments"].to_pylist() == [
        {"item_id": "a", "item_idx": 0, "user_id": "u2", "user_idx": 1, "text": "lovely"}
    ]
    assert stats["comments"] == {"rows": 3, "empty_text": 1, "kept": 1, "of_dropped_items": 1}


def test_an_items_column_named_like_an_internal_one_keeps_its_name(tmp_path: Path) -> None:
    """The row number ingest keeps to name a bad row never collides with (and renames) a column of the file."""
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    items = write(tmp_path / "items.csv", "item_id,image,rn,_row\na,a.png,5,x\nb,b.png,6,y\n")
    _, t = run(tmp_path / "ds", interactions=write(tmp_path / "log.csv", LOG), items=items, image_root=tmp_path / "img")
    assert t["items"].column("rn").to_pylist() == ["5", "6"] and t["items"].column("_row").to_pylist() == ["x", "y"]
    assert not {"rn_1", "__row"} & set(t["items"].column_names)


def test_popularity_filter_is_applied_and_reported(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        ["filter.min_user_interactions=2", "filter.min_item_interactions=1", "filter.drop_top_users=0"],
        {"ingest.interactions": ("t", write(tmp_path / "log.csv", LOG))},
    )
    stats = ingest(cfg, tmp_path / "ds").stats
    assert stats["after"]["users"] == 2 and stats["dropped"]["low_users"] == 1  # u3 has a single item
    assert stats["after"]["items"] == 2 and stats["after"]["interactions"] == 6


def test_simulated_platform_ingests_unchanged(platform: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [],
        {
            "ingest.interactions": ("t", platform / "interactions.csv"),
            "ingest.items": ("t", platform / "items.csv"),
            "ingest.comments": ("t", platform / "comments.csv"),
        },
    )
    stats = ingest(cfg, tmp_path / "ds").stats
    assert set(stats["before"]["events"]) == {"view", "like", "comment", "share"}
    assert stats["missing_images"]["count"] == 0 and stats["after"]["users"] > 0.5 * stats["before"]["users"]
    ints = pq.read_table(tmp_path / "ds" / "interactions.parquet")
    assert ints.num_rows == stats["after"]["pairs"]
    assert (
        sum(pa.compute.sum(ints.column(f"n_{e}")).as_py() for e in stats["after"]["events"])
        == stats["after"]["interactions"]
    )
    comments = pq.read_table(tmp_path / "ds" / "comments.parquet")
    assert comments.num_rows > 0 and stats["id_types"]["item"] == "string"


def test_movielens_true_counts(movielens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from socialfeat.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "ingest",
                "--interactions",
                str(movielens / "interactions.csv"),
                "--items",
                str(movielens / "items.csv"),
                "--image-root",
                str(movielens),
                "--out",
                str(tmp_path / "ds"),
            ]
        )
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    for figure in ("919,961", "6,018", "2,970"):
        assert figure in printed
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert (stats["before"]["interactions"], stats["before"]["users"], stats["before"]["items"]) == (919961, 6018, 2970)
    assert stats["missing_images"]["count"] == 0 and stats["id_types"] == {"user": "integer", "item": "integer"}
    items = pq.read_table(tmp_path / "ds" / "items.parquet")
    assert items.column("title")[0].as_py() == "Toy Story (1995)"


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600K rows, ~590K pairs: the aggregation's hash table (~100 B a pair) outgrows 48 MB."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 600_000
    log = pa.table(
        {
            "user_id": pa.array([f"user-{k}" for k in rng.integers(0, 60_000, n)]),
            "item_id": rng.integers(0, 40_000, n),
            "event": rng.choice(["view", "like", "share"], n),
            "timestamp": rng.integers(1_600_000_000, 1_700_000_000, n),
            "code": rng.random(n),  # named like a column of the id-code tables: an extra column, ignored
        }
    )
    path = tmp_path_factory.mktemp("big") / "log.parquet"
    pq.write_table(log, path)
    return path


def test_a_log_that_spills_gives_the_same_dataset_as_one_that_fits(big_log: Path, tmp_path: Path) -> None:
    """Under a small ``memory_limit`` DuckDB spills the aggregation to disk: the dataset must come out byte for
    byte the same as with room to spare."""
    small = run(tmp_path / "small", interactions=big_log, memory_limit="48MB")
    roomy = run(tmp_path / "roomy", interactions=big_log, memory_limit="4GB")
    assert small[0] == roomy[0] and small[0]["before"]["pairs"] > 550_000
    for name in ("interactions", "users", "items"):
        assert (tmp_path / "small" / f"{name}.parquet").read_bytes() == (
            tmp_path / "roomy" / f"{name}.parquet"
        ).read_bytes()


def test_a_memory_limit_too_small_for_the_log_names_the_setting_not_the_file(big_log: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        run(tmp_path / "ds", interactions=big_log, memory_limit="16MB")
    assert err.value.where == "ingest.memory_limit" and "'16MB' is too little memory" in err.value.message
    assert "--set ingest.memory_limit=32MB" in err.value.message and not (tmp_path / "ds").exists()  # twice as much


def test_the_automatic_memory_limit_is_a_quarter_of_memory_and_at_least_1gb(monkeypatch: pytest.MonkeyPatch) -> None:
    from socialfeat.config import IngestConfig
    from socialfeat.data import ingest as ingest_module

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 24 * 2**30 // 4096}  # a 24 GiB machine
    monkeypatch.setattr(ingest_module.os, "sysconf", lambda name: pages[name])
    assert ingest_module.memory_limit(IngestConfig()) == "6144MB"  # the default is auto
    assert ingest_module.memory_limit(IngestConfig(memory_limit="AUTO")) == "6144MB"
    assert ingest_module.memory_limit(IngestConfig(memory_limit="512MB")) == "512MB"  # a size is kept as given
    pages["SC_PHYS_PAGES"] = 2 * 2**30 // 4096  # 2 GiB: a quarter would starve DuckDB
    assert ingest_module.memory_limit(IngestConfig()) == "1024MB"
    assert ingest_module._doubled("1.5GB") == "3GB" and ingest_module._doubled("lots") == "2GB"
