"""The peer a practitioner would reach for: LightFM (WARP) with the items' content as item features, trained on
the warm items' interactions and scored on the same cold test items, over the same sampled users, with the same
per-user AUC — so its row pairs with the content rows in the bootstrap.

Optional (the ``lightfm`` package; see the README for its build): without it the row says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_table
from socialfeat.measures.coldstart import ColdStartData, Ranked, score_users


def lightfm_missing() -> str | None:
    try:
        import lightfm  # noqa: F401
    except ImportError:
        return "lightfm is not installed (an optional peer; the README says how to build it)"
    return None


def item_features(features: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    """``features`` as LightFM's item features: each column scaled to a largest magnitude of 1 (LightFM sums the
    feature embeddings, so weights stay ≤ 1), float32 CSR without explicit zeros."""
    x = sp.csr_matrix(features, dtype=np.float32)
    scale = np.maximum(np.asarray(abs(x).max(axis=0).todense()).ravel(), 1e-12)
    x = sp.csr_matrix(x @ sp.diags((1.0 / scale).astype(np.float32)), dtype=np.float32)
    x.eliminate_zeros()
    return x


def lightfm_row(
    run: Path,
    data: ColdStartData,
    features: np.ndarray | sp.spmatrix,
    k: int,
    seed: int,
    epochs: int = 10,
    components: int = 64,
    threads: int = 2,
) -> tuple[dict[str, Any], Ranked]:
    """LightFM with ``features`` (n_items × d, by item_idx: the content blocks side by side, dense or sparse) as its
    only item features, so a cold item is as representable as a warm one; users by identity, fit on ``threads``.
    The metrics on the test items over ``data.test_users`` (every eligible user when None), and the per-user ranking."""
    from lightfm import LightFM

    t0 = time.perf_counter()
    inter = read_table(run / "dataset" / "interactions.parquet", columns=["user_idx", "item_idx"])
    users, items = inter.column("user_idx").to_numpy(), inter.column("item_idx").to_numpy()
    warm = np.zeros(data.n_items, dtype=bool)
    warm[data.train] = True
    keep = warm[items]
    n_users = len(data.user_factors)
    matrix = sp.coo_matrix(
        (np.ones(int(keep.sum()), np.float32), (users[keep], items[keep])), shape=(n_users, data.n_items)
    )
    side = item_features(features)
    model = LightFM(loss="warp", no_components=components, random_state=seed)
    model.fit(matrix, item_features=side, epochs=epochs, num_threads=max(1, threads))
    item_bias, item_emb = model.get_item_representations(side)
    user_bias, user_emb = model.get_user_representations()
    test_emb = np.ascontiguousarray(item_emb[data.test].T, dtype=np.float32)
    test_bias = item_bias[data.test].astype(np.float32)

    def score(rows: np.ndarray) -> np.ndarray:
        return user_emb[rows] @ test_emb + test_bias[None, :] + user_bias[rows, None]

    ranked = score_users(score, data.test_truth, k, data.test_users, influence=True)
    result = {**ranked.summary(), "epochs": epochs, "components": components, "threads": max(1, threads)}
    return result | {"seconds": time.perf_counter() - t0}, ranked
