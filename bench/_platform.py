"""The synthetic platforms every benchmark measures on, in one module so that the scripts draw alike.

Four shapes, from the cheapest to the richest; each is seeded and draws in a fixed order:

- **Power-law logs** (:func:`powerlaw_log`, DuckDB; :func:`powerlaw_dataset`, numpy): users and items from power
  laws, drawn independently. They have popularity but no taste: scale tests, not quality tests.
- **A planted cold-start problem** (:func:`plant`): 64-d latent taste, each user's cold interactions the 10 of 40
  random cold items they score highest, warm "ALS factors" that are the latent taste plus noise. Blocks drawn after
  it: a learned-like image block, a faceted tag one-hot and a year.
- **A taste platform** (:func:`taste_platform`): the simulator's items, users and events (socialfeat.data.simulate)
  as ingest's input files: interactions, items with titles and tags, and hard-linked blank images.
- **A clustered run** (:func:`clustered_run`): a demo run's model and images, with clustered features, random factors
  and a random log of any size, as the run folder the explorer opens.

Who uses which: ingest.py and factorize.py (scale) the DuckDB log; factorize.py (overhead) the numpy dataset;
evaluate_scale.py, content_scale.py and selection.py the planted problem; scale.py the taste platform; serve.py the
clustered run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

USERS_PER_ITEM = 0.73  # the seed paper's platform: 309K users on 423K items
F = 64  # the planted latent taste, and the ALS factors the scripts pretend were fitted
D = 1280  # EfficientNet-Lite0's pooled width: what embed writes for every source


# ------------------------------------------------------------------------------------------------ power-law logs
def powerlaw_log(
    path: Path,
    rows: int,
    users: int,
    items: int,
    skew: tuple[float, float],
    events: list[tuple[str, int]],
    out_of: int = 100,
    timestamps: bool = False,
) -> Path:
    """An interaction log of ``rows`` events written by DuckDB (CSV or Parquet by ``path``'s suffix), atomically.

    User and item ids are ``floor(n · x^skew)`` of a hashed uniform ``x``: the larger the skew, the heavier the head.
    ``events`` are (name, cumulative bound out of ``out_of``) pairs; the last one takes the rest, whatever its bound:
    ``[("view", 80), ("like", 93), ("share", 100)]``. Timestamps, when asked, are epoch seconds over 90 days.
    """
    arms = [f"WHEN hash(range * 17) % {out_of} < {bound} THEN '{name}'" for name, bound in events]
    event = f"CASE {' '.join(arms[:-1])} ELSE '{events[-1][0]}' END AS event"
    time_column = ",\n            1700000000 + (range * 7) % 7776000 AS timestamp" if timestamps else ""
    options = "(FORMAT parquet, COMPRESSION zstd)" if path.suffix == ".parquet" else "(FORMAT csv, HEADER true)"
    tmp = path.with_name(path.name + ".tmp")
    import duckdb

    con = duckdb.connect()
    con.execute(f"""
        COPY (
          SELECT
            (floor({users} * pow((hash(range) % 1000003) / 1000003.0, {skew[0]})))::BIGINT AS user_id,
            (floor({items} * pow((hash(range * 31 + 7) % 1000003) / 1000003.0, {skew[1]})))::BIGINT AS item_id,
            {event}{time_column}
          FROM range({rows})
        ) TO '{tmp}' {options}""")
    con.close()
    tmp.rename(path)
    return path


def powerlaw_dataset(run: Path, n_users: int, n_items: int, n_pairs: int, seed: int = 0) -> None:
    """A ``dataset/`` folder as ingest writes it: power-law users and items, unique pairs, weights 1–5."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = np.minimum((n_users * rng.power(0.35, n_pairs * 11 // 10)).astype(np.int64), n_users - 1)
    items = np.minimum((n_items * rng.power(0.3, n_pairs * 11 // 10)).astype(np.int64), n_items - 1)
    keys = np.unique(users * n_items + items)[:n_pairs]
    ds = run / "dataset"
    ds.mkdir(parents=True, exist_ok=True)
    interactions = {
        "user_idx": (keys // n_items).astype(np.int32),
        "item_idx": (keys % n_items).astype(np.int32),
        "weight": rng.integers(1, 6, len(keys)).astype(np.float32),
    }
    pq.write_table(pa.table(interactions), ds / "interactions.parquet")
    for who, n in (("user", n_users), ("item", n_items)):
        table = pa.table({f"{who}_id": np.arange(n), f"{who}_idx": np.arange(n, dtype=np.int32)})
        pq.write_table(table, ds / f"{who}s.parquet")


# ---------------------------------------------------------------------------------- the planted cold-start problem
@dataclass
class Planted:
    """A planted cold-start problem; ``rng`` goes on drawing the blocks that come after it."""

    rng: np.random.Generator
    v: np.ndarray  # items' latent taste, n_items × F, rows of norm ≈ 1
    u: np.ndarray  # users' latent taste, n_users × F: also their "ALS factors"
    split: np.ndarray  # 0 train (warm), 1 valid, 2 test (cold)
    pairs: np.ndarray  # user · n_items + item: each user's cold interactions
    item_factors: np.ndarray  # the warm items' "ALS factors": v plus a little noise

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.split == 0)


def plant(n_items: int, n_users: int, seed: int = 0, valid: float = 0.1, test: float = 0.1) -> Planted:
    """The problem: u·v has std 1, so taste outweighs the 0.3 noise on each user's choice of 10 among 40."""
    rng = np.random.default_rng(seed)
    v = (rng.normal(size=(n_items, F)) / math.sqrt(F)).astype(np.float32)
    u = rng.normal(size=(n_users, F)).astype(np.float32)
    split = rng.choice(3, n_items, p=[1 - valid - test, valid, test])
    cold = np.flatnonzero(split > 0)
    candidates = cold[rng.integers(0, len(cold), (n_users, 40))]
    taste = np.einsum("uf,ucf->uc", u, v[candidates]) + rng.normal(0, 0.3, candidates.shape).astype(np.float32)
    liked = np.take_along_axis(candidates, np.argsort(-taste, axis=1)[:, :10], axis=1)
    pairs = np.unique(np.arange(n_users)[:, None] * n_items + liked)
    train = np.flatnonzero(split == 0)
    item_factors = v[train] + rng.normal(0, 0.05, (len(train), F)).astype(np.float32)
    return Planted(rng, v, u, split, pairs, item_factors)


def image_block(p: Planted, out: np.ndarray | None = None) -> np.ndarray:
    """A learned-like feature block: a noisy linear image of v, offset like pooled ReLUs (``out`` may be a memmap)."""
    mix = p.rng.normal(size=(F, D)).astype(np.float32)
    out = np.empty((len(p.v), D), np.float32) if out is None else out
    for i in range(0, len(p.v), 8192):
        c = p.v[i : i + 8192]
        out[i : i + 8192] = c @ mix + p.rng.normal(0, 0.5, (len(c), D)).astype(np.float32) + 3.0
    return out


def tag_block(p: Planted, facets: int, per_facet: int, per_item: int = 8, untagged: float = 0.0) -> Any:
    """A sparse tag one-hot: in ``per_item`` of ``facets`` facets, the facet's tag nearest to v (Gumbel noise);
    a share ``untagged`` of the items has none."""
    import scipy.sparse as sp

    n = len(p.v)
    centres = p.rng.normal(size=(facets, F, per_facet)).astype(np.float32)
    chosen = np.argsort(p.rng.random((n, facets)), axis=1)[:, :per_item]
    cols = np.empty((n, per_item), np.int64)
    for j in range(per_item):
        fac = chosen[:, j]
        scores = np.einsum("nf,nft->nt", p.v * 4.0, centres[fac]) + p.rng.gumbel(size=(n, per_facet))
        cols[:, j] = fac * per_facet + scores.argmax(axis=1)
    keep = np.repeat(p.rng.random(n) > untagged, per_item) if untagged else np.ones(n * per_item, bool)
    rows = np.repeat(np.arange(n), per_item)
    tags = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols.ravel()[keep])), shape=(n, facets * per_facet)
    )
    tags.sum_duplicates()
    tags.data[:] = 1.0
    return tags


def year_column(p: Planted, missing: float = 0.05) -> np.ndarray:
    """A year from v's first coordinate (std ≈ 12 years, plus 4 of noise); a share ``missing`` is NaN."""
    n = len(p.v)
    year = np.round(1990 + 12 * p.v[:, 0] * math.sqrt(F) + p.rng.normal(0, 4, n))
    year[p.rng.random(n) < missing] = np.nan
    return year


def save_planted(folder: Path, p: Planted) -> None:
    """The problem as .npy files in ``folder``, for a child process to load with :func:`load_planted`."""
    np.save(folder / "pairs.npy", p.pairs)
    np.save(folder / "split.npy", p.split)
    np.save(folder / "user_factors.npy", p.u)
    np.save(folder / "item_factors.npy", p.item_factors)


def load_planted(folder: Path, module: Any = None) -> Any:
    """The saved problem as a ``ColdStartData`` of ``module`` (today's cold-start module, or one from before)."""
    if module is None:
        from socialfeat.measures import coldstart as module
    split = np.load(folder / "split.npy")
    pairs = np.load(folder / "pairs.npy")
    u = np.load(folder / "user_factors.npy")
    n_items, n_users = len(split), len(u)
    users, items = pairs // n_items, pairs % n_items
    train, valid, test = (np.flatnonzero(split == s) for s in (0, 1, 2))
    return module.ColdStartData(
        item_ids=list(range(n_items)),
        split=np.array(["train", "valid", "test"])[split],
        train=train,
        valid=valid,
        test=test,
        item_factors=np.load(folder / "item_factors.npy"),
        user_factors=u,
        valid_truth=module._truth(users, items, valid, n_users, n_items),
        test_truth=module._truth(users, items, test, n_users, n_items),
        normalize="none",
    )


def write_factors(run: Path, p: Planted, ids: list[str]) -> None:
    """The problem as factorize writes it in ``run/factors``: item_split, item and user factors, cold_interactions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from socialfeat.features import vectors_column

    n_items = len(p.split)
    out = run / "factors"
    out.mkdir(parents=True)
    names = np.array(["train", "valid", "test"])[p.split].tolist()
    split = pa.table({"item_idx": np.arange(n_items), "item_id": ids, "split": names})
    pq.write_table(split, out / "item_split.parquet")
    pq.write_table(pa.table({"item_idx": p.train, "factors": vectors_column(p.item_factors)}), out / "item_factors.parquet")  # fmt: skip
    pq.write_table(pa.table({"user_idx": np.arange(len(p.u)), "factors": vectors_column(p.u)}), out / "user_factors.parquet")  # fmt: skip
    cold = pa.table({"user_idx": p.pairs // n_items, "item_idx": p.pairs % n_items})
    pq.write_table(cold, out / "cold_interactions.parquet")


# --------------------------------------------------------------------------------------------- the taste platform
def taste_platform(folder: Path, n_items: int, n_users: int, n_interactions: int, seed: int = 0) -> dict:
    """interactions.parquet, items.csv, images/ (hard links) and latent.npz (item attributes) in ``folder``.

    Items, users and events are the simulator's own (:func:`socialfeat.data.simulate.sample_platform`): its
    attributes and popularity, sparse tastes, power-law activity and bots, and its views, likes, comments and shares.
    Its mean views per user is set so that all events come to about ``n_interactions``: a small pilot platform gives
    the events per view. No image is drawn: every image is a hard link to one 8×8 PNG, so ingest keeps the items at
    the cost of one directory entry each. Titles and tags are this bench's: tags correlated with the taste class.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from socialfeat.config import SimulateConfig
    from socialfeat.data import simulate as sim

    t0 = time.perf_counter()
    pilot = sim.sample_platform(SimulateConfig(n_users=2000, n_items=3000, views_per_user=20), seed).events
    per_view = len(pilot["event"]) / int((pilot["event"] == 0).sum())
    config = SimulateConfig(n_users=n_users, n_items=n_items, views_per_user=n_interactions / per_view / n_users)
    platform = sim.sample_platform(config, seed)
    items, ev = platform.items, platform.events
    rng = np.random.default_rng([seed, 1])  # the bench's own titles and tags
    attrs = list(sim.TASTE_WEIGHT)
    cls = sim.taste_class(items)
    pop = items["popularity"]
    table = pa.table(
        {
            "user_id": ev["user"],
            "item_id": ev["item"],
            "event": pa.DictionaryArray.from_arrays(ev["event"], list(sim.EVENTS)),
            "timestamp": 1_709_251_200 + ev["t"],
        }
    )
    pq.write_table(table, folder / "interactions.parquet")
    # items: image (a hard link to one PNG), title, tags correlated with the taste class, a year
    images = folder / "images"
    images.mkdir()
    from PIL import Image

    links = 60_000  # ext4 allows 65,000 links to one inode: a fresh copy of the PNG for every 60,000 items
    for k in range(n_items):
        blank = folder / f"blank-{k // links}.png"
        if k % links == 0:
            Image.new("RGB", (8, 8), (128, 128, 128)).save(blank)
        os.link(blank, images / f"{k}.png")
    words = {a: [sim.VOCAB[a][v] for v in sim.ATTR_VALUES[a]] for a in attrs}
    pick = {a: rng.integers(0, 5, n_items) for a in attrs}
    topic = cls * 30 + rng.integers(0, 30, n_items)  # 3,600 class-correlated tags
    noise = rng.integers(0, 500, n_items)
    objects = sim.ATTR_VALUES["object"]
    tags = [
        f"{words['palette'][p][a]}|{words['texture'][t][b]}|{words['composition'][c][d]}|{objects[o]}|t{tp}|n{nz}"
        for p, a, t, b, c, d, o, tp, nz in zip(
            items["palette"], pick["palette"], items["texture"], pick["texture"], items["composition"],
            pick["composition"], items["object"], topic, noise, strict=True,
        )
    ]  # fmt: skip
    adj, noun = rng.integers(0, len(sim.TITLE_ADJ), n_items), rng.integers(0, len(sim.TITLE_NOUN), n_items)
    titles = [f"{sim.TITLE_ADJ[a]} {sim.TITLE_NOUN[b]} {k}" for k, (a, b) in enumerate(zip(adj, noun, strict=True))]
    year = np.round(1990 + 3.0 * items["palette"] + rng.normal(0, 3, n_items))
    year[rng.random(n_items) < 0.05] = np.nan
    items_table = pa.table(
        {
            "item_id": np.arange(n_items),
            "image": [f"images/{k}.png" for k in range(n_items)],
            "title": titles,
            "tags": tags,
            "year": pa.array(year, mask=np.isnan(year)),
        }
    )
    pcsv.write_csv(items_table, folder / "items.csv")
    np.savez(folder / "latent.npz", **{a: items[a] for a in sim.ATTR_VALUES}, popularity=pop)
    counts = {f"{e}s": int((ev["event"] == k).sum()) for k, e in enumerate(sim.EVENTS)}
    return {**counts, "events": len(ev["event"]), "seconds": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------------- the clustered run
def clustered_run(
    demo: Path, out: Path, n: int, users: int | None = None, interactions: int | None = None, seed: int = 0
) -> dict[str, float]:
    """A run of ``n`` items that the explorer opens: big enough to load the index and the log like a real platform.

    Features are a mixture of 1,000 clusters at the demo's widths; the model and images (cycled) are the demo's.
    Users are the demo's, or ``users`` planted ones with random factors; the log holds ``interactions`` random
    pairs (2 per item by default). Sidecars record the new files' fingerprints, as the stages would.
    Returns each feature source's index build seconds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from socialfeat.artifacts import FINGERPRINTS, fingerprints, parquet_fingerprints
    from socialfeat.config import load_config
    from socialfeat.features import vectors_column
    from socialfeat.index import build_index

    def width(path: Path, column: str) -> int:
        return pq.read_schema(path).field(column).type.list_size

    def sidecar(src: Path, dst: Path, prints: dict[str, Any]) -> None:
        # a copied sidecar keeps the demo's fingerprints of files this run replaced: record this run's instead
        meta = json.loads(src.read_text())
        meta.pop(FINGERPRINTS, None)
        dst.write_text(json.dumps({**meta, **prints}))

    rng = np.random.default_rng(seed)
    for part in ("model", "factors", "dataset", "features"):
        (out / part).mkdir(parents=True, exist_ok=True)
    factors = width(demo / "factors" / "item_factors.parquet", "factors")
    if users is None:
        shutil.copy(demo / "dataset" / "users.parquet", out / "dataset" / "users.parquet")
    else:
        planted = {"user_id": [f"v{u:07d}" for u in range(users)], "user_idx": pa.array(np.arange(users), pa.int32())}
        table = pa.table({**planted, "n_items": pa.array(np.full(users, 1), pa.int32())})
        pq.write_table(table, out / "dataset" / "users.parquet")
    demo_items = pq.read_table(demo / "dataset" / "items.parquet", columns=["image", "title", "tags"]).to_pylist()
    ids = [f"s{i:06d}" for i in range(n)]
    source = [demo_items[i % len(demo_items)] for i in range(n)]
    items = {
        "item_id": ids,
        "item_idx": pa.array(np.arange(n), pa.int32()),
        "image": [s["image"] for s in source],
        "title": [f"{s['title']} #{i}" for i, s in enumerate(source)],
        "tags": [s["tags"] for s in source],
        "n_users": pa.array(rng.integers(1, 500, n), pa.int32()),
    }
    pq.write_table(pa.table(items), out / "dataset" / "items.parquet")
    user_idx = pq.read_table(out / "dataset" / "users.parquet", columns=["user_idx"]).column("user_idx").to_numpy()
    pairs = interactions or 20 * n // 10
    log_users = np.sort(rng.choice(user_idx, pairs))  # ingest writes the log sorted by user
    log = {
        "user_idx": pa.array(log_users, pa.int32()),
        "item_idx": pa.array(rng.integers(0, n, pairs), pa.int32()),
        "weight": pa.array(np.ones(pairs, np.float32)),
    }
    pq.write_table(pa.table(log), out / "dataset" / "interactions.parquet")
    sidecar(demo / "dataset" / "stats.json", out / "dataset" / "stats.json", parquet_fingerprints(out / "dataset"))
    if users is None:
        shutil.copy(demo / "factors" / "user_factors.parquet", out / "factors" / "user_factors.parquet")
    else:
        table = pa.table(
            {**planted, "factors": vectors_column(rng.normal(0, 0.3, (users, factors)).astype(np.float32))}
        )
        pq.write_table(table, out / "factors" / "user_factors.parquet")
    split = np.where(rng.random(n) < 0.2, "test", "train")
    table = pa.table({"item_id": ids, "item_idx": pa.array(np.arange(n), pa.int32()), "split": split})
    pq.write_table(table, out / "factors" / "item_split.parquet")
    warm = np.flatnonzero(split == "train")
    warm_factors = vectors_column(rng.normal(0, 0.3, (len(warm), factors)))
    table = pa.table(
        {"item_id": [ids[i] for i in warm], "item_idx": pa.array(warm, pa.int32()), "factors": warm_factors}
    )
    pq.write_table(table, out / "factors" / "item_factors.parquet")
    # the model after the factors it was trained on, the features after the model: the run is current
    shutil.copytree(demo / "model", out / "model", dirs_exist_ok=True)
    for path in (out / "model").rglob("*"):
        path.touch()
    seconds = {}
    for name in ("learned", "imagenet"):
        path = demo / "features" / f"{name}.parquet"
        columns: dict[str, pa.Array] = {"item_id": pa.array(ids)}
        for field in pq.read_schema(path):
            if field.name == "item_id":
                continue
            d = field.type.list_size
            centres = rng.normal(0, 1, (1000, d)).astype(np.float32)
            vectors = centres[rng.integers(0, 1000, n)] + rng.normal(0, 0.5, (n, d)).astype(np.float32)
            columns[field.name] = vectors_column(np.abs(vectors) if field.name == "features" else vectors)
        pq.write_table(pa.table(columns), out / "features" / f"{name}.parquet")
        prints = fingerprints(out / "features", f"{name}.parquet")
        sidecar(demo / "features" / f"{name}.json", out / "features" / f"{name}.json", prints)
        t0 = time.perf_counter()
        build_index(load_config(None, []), out, name, "features")
        seconds[name] = time.perf_counter() - t0
    return seconds
