"""The explorer at scale (issue 23): what a request does is answered from structures built once at start-up, and
each answer equals the one the plain per-request scan gave before — title search with paging, case and splits,
user suggestions, recommendations from the log indexed once, and neighbours by id from an IVF-PQ index that keeps
no float matrix beside it."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from socialfeat.config import load_config
from socialfeat.serve.search import SubstringIndex


def old_items(explorer: Any, query: str, split: str, offset: int, limit: int) -> dict[str, Any]:
    """The scan /api/items made per request before: every haystack, in Python."""
    haystack = [f"{k}\n{t}".lower() for k, t in zip(explorer.keys, explorer.titles, strict=True)]
    q = query.strip().lower()
    rows = range(len(explorer.keys))
    if q:
        rows = [r for r in rows if q in haystack[r]]
    if split in ("warm", "cold"):
        rows = [r for r in rows if explorer.split[r] == split]
    rows = list(rows)
    return {"total": len(rows), "offset": offset, "items": [explorer.item(r) for r in rows[offset : offset + limit]]}


def old_users(explorer: Any, query: str, limit: int) -> list[str]:
    q = query.strip().lower()
    return [str(u) for u in explorer.recommender.user_ids if q in str(u).lower()][:limit]


# ------------------------------------------------------------------------------------------------ the index
def test_substring_index_answers_as_python_in() -> None:
    """Random strings over an alphabet with multi-byte characters, the separator byte, a lone surrogate and case
    pairs; queries cut from them and a few that span strings or match nothing."""
    rng = random.Random(5)
    alphabet = "abcAB é\n\0ΣσςİıXY01#\ud800"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)] + ["", "a"]
    index = SubstringIndex(texts)
    queries = {"", "a", "\0", "ab", "a\0", "zz", "\ud800", "é", "#0", texts[0] + texts[1]}
    for t in texts[:400]:
        if t:
            start = rng.randrange(len(t))
            queries.add(t[start : start + rng.randint(1, 6)])
    for q in queries:
        assert index.find(q).tolist() == [r for r, t in enumerate(texts) if q in t], repr(q)
    empty = SubstringIndex([])
    assert empty.find("a").tolist() == empty.find("ab").tolist() == empty.find("").tolist() == []


# ------------------------------------------------------------------------------------------------ title search
def title_queries(explorer: Any) -> list[str]:
    rng = random.Random(3)
    queries = ["", "   ", "zzzz-nothing", "i00", "I0001", "NO. 2", "o", "O", "e s", "\n"]
    for row in rng.sample(range(len(explorer.keys)), 25):
        title = explorer.titles[row]
        start = rng.randrange(len(title))
        queries += [title, title.upper(), title[start : start + rng.randint(1, 5)], f" {title.split()[0]} "]
        queries.append(f"{explorer.keys[row][-2:]}\n{title[:3]}")  # across the id and the title, as before
    return queries


def test_title_search_equals_the_old_scan(client, explorer) -> None:  # noqa: ANN001
    for q in title_queries(explorer):
        for split in ("all", "warm", "cold"):
            want = old_items(explorer, q, split, 0, 600)
            assert client.get("/api/items", params={"q": q, "split": split, "limit": 600}).json() == want, (q, split)


@pytest.mark.parametrize(("offset", "limit"), [(0, 1), (0, 60), (7, 5), (59, 60), (120, 600), (399, 3), (400, 5)])
def test_title_search_pages_as_before(client, explorer, offset: int, limit: int) -> None:  # noqa: ANN001
    for q in ("", "o", "NO.", "i000", "zzzz"):
        for split in ("all", "warm", "cold"):
            params = {"q": q, "split": split, "offset": offset, "limit": limit}
            assert client.get("/api/items", params=params).json() == old_items(explorer, q, split, offset, limit)


def test_title_search_builds_nothing_per_request(explorer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A request neither lowercases the catalogue nor walks a range of every row."""
    want = old_items(explorer, "no.", "cold", 0, 5)
    monkeypatch.setattr(explorer, "titles", _Guard(explorer.titles))
    monkeypatch.setattr(explorer, "keys", _Guard(explorer.keys))
    assert explorer.items("no.", "cold", 0, 5) == want and len(want["items"]) == 5
    assert explorer.titles.reads == explorer.keys.reads == 5  # the page's titles, not the catalogue's


class _Guard(list):
    """A list that counts item reads and refuses iteration (a scan of the catalogue)."""

    def __init__(self, items: list) -> None:
        super().__init__(items)
        self.reads = 0

    def __getitem__(self, i: Any) -> Any:
        self.reads += 1
        return super().__getitem__(i)

    def __iter__(self) -> Any:
        raise AssertionError("the catalogue was scanned")


# ------------------------------------------------------------------------------------------------ users
def test_user_suggestions_equal_the_old_scan(client, explorer) -> None:  # noqa: ANN001
    users = [str(u) for u in explorer.recommender.user_ids]
    for q in ["", "u", "U00", "0", "u0007", "U0299", "1", "nobody", users[5][1:3], users[-1].upper()]:
        for limit in (1, 20, 100):
            got = client.get("/api/users", params={"q": q, "limit": limit}).json()["users"]
            assert got == old_users(explorer, q, limit), (q, limit)


# ------------------------------------------------------------------------------------------------ recommendations
def test_the_indexed_log_answers_every_user_as_the_filtered_read(served_run: Path, monkeypatch) -> None:  # noqa: ANN001
    """Seen items from the CSR equal the per-user filtered read for every user; rankings are equal (seen left out
    or included) and never offer an engaged item; after start-up no request reads the log."""
    import socialfeat.recommend as recommend

    plain = recommend.Recommender(served_run)
    indexed = recommend.Recommender(served_run, index_log=True)
    reads: list[str] = []
    real = recommend.pq.read_table

    def spy(path: object, *args: object, **kwargs: object) -> object:
        reads.append(Path(str(path)).name)
        return real(path, *args, **kwargs)

    users = pq.read_table(served_run / "dataset" / "users.parquet").to_pydict()
    items = pq.read_table(served_run / "dataset" / "items.parquet", columns=["item_id", "item_idx"]).to_pydict()
    log = pq.read_table(served_run / "dataset" / "interactions.parquet", columns=["user_idx", "item_idx"]).to_pydict()
    item_of = dict(zip(items["item_idx"], items["item_id"], strict=True))
    engaged: dict[int, set] = {}
    for u, i in zip(log["user_idx"], log["item_idx"], strict=True):
        engaged.setdefault(u, set()).add(item_of[i])
    for row, user in enumerate(indexed.user_ids):
        assert sorted(indexed.seen(row).tolist()) == sorted(plain.seen(row).tolist()), user
    monkeypatch.setattr(recommend.pq, "read_table", spy)
    for user in indexed.user_ids[::7]:
        uidx = users["user_idx"][users["user_id"].index(user)]
        for include_seen in (False, True):
            got = indexed.rank(user, 1000, include_seen)
            monkeypatch.setattr(recommend.pq, "read_table", real)
            assert got == plain.rank(user, 1000, include_seen), user
            monkeypatch.setattr(recommend.pq, "read_table", spy)
        offered = {r["item_id"] for r in indexed.rank(user, 1000)}
        assert offered and not offered & engaged[uidx], user
    assert reads == []


def test_the_explorer_recommends_from_the_indexed_log(explorer) -> None:  # noqa: ANN001
    assert explorer.recommender._log is not None


def test_a_damaged_log_is_one_line_naming_it(served_run: Path, tmp_path: Path) -> None:
    import os

    from socialfeat.errors import UserError
    from socialfeat.recommend import Recommender

    run = Path(shutil.copytree(served_run, tmp_path / "run"))
    path = run / "dataset" / "interactions.parquet"
    stamp, data = path.stat().st_mtime_ns, path.read_bytes()
    path.write_bytes(data[:100] + b"x" * (len(data) - 108) + data[-8:])
    os.utime(path, ns=(stamp, stamp))  # damaged, not re-ingested
    with pytest.raises(UserError, match="is damaged") as e:
        Recommender(run, index_log=True)
    assert e.value.where == str(path) and "socialfeat ingest" in e.value.message


# ------------------------------------------------------------------------------------------------ IVF-PQ
@pytest.fixture(scope="module")
def ivfpq_explorer(served_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The served run with its indexes rebuilt under a small HNSW limit, so that 400 items get IVF-PQ."""
    from socialfeat.serve.explorer import Explorer

    run = tmp_path_factory.mktemp("ivfpq") / "run"
    shutil.copytree(served_run, run, ignore=shutil.ignore_patterns("*.faiss", "*.faiss.json"))
    return Explorer(load_config(None, ["index.exact_max=10", "index.hnsw_max=20"]), run)


def test_ivfpq_neighbours_come_from_the_index_without_a_float_matrix(
    ivfpq_explorer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    from socialfeat.features import read_features
    from socialfeat.index import nearest, normalize

    explorer = ivfpq_explorer
    for name, space in explorer.spaces.items():
        assert isinstance(space.index.index, faiss.IndexIVFPQ), name
        n, d = space.index.index.ntotal, space.index.index.d
        held = [
            v for v in vars(space).values() if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size >= n * d
        ]
        assert not held and not hasattr(space, "vectors"), name
        ids, matrix = read_features(explorer.run, name, "features")
        exact = normalize(matrix)
        recall = []
        for row in range(0, n, 9):
            item = str(ids[row])
            got = [r["id"] for r in explorer.similar(item, name, 8)]
            assert len(got) == 8 and item not in got
            # the reconstructed vector is what the index searches with ...
            want, _ = nearest(space.index, space.index.index.reconstruct(row), 8, exclude=ids[row])
            assert got == [str(i) for i in want]
            # ... and its neighbours are mostly those of the exact vector the explorer used to keep
            before, _ = nearest(space.index, exact[row], 8, exclude=ids[row])
            recall.append(len(set(got) & {str(i) for i in before}) / 8)
        assert np.mean(recall) >= 0.6, (name, np.mean(recall))
