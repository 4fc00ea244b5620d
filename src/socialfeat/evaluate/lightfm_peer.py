"""The peer a practitioner would reach for: LightFM (WARP) with the items' content as item features, trained on
the warm items' interactions and scored on the same cold test items with the same per-user AUC.

Optional (the ``lightfm`` package; see the README for its build): without it the row says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_table
from socialfeat.evaluate.coldstart import ColdStartData, rank_users


def lightfm_missing() -> str | None:
    try:
        import lightfm  # noqa: F401
    except ImportError:
        return "lightfm is not installed (an optional peer; the README says how to build it)"
    return None


def lightfm_row(
    run: Path, data: ColdStartData, features: np.ndarray, k: int, seed: int, epochs: int = 10, components: int = 64
) -> dict[str, Any]:
    """LightFM with ``features`` (n_items × d, by item_idx: the content blocks side by side) as its only item
    features, so a cold item is as representable as a warm one; users by identity. Per-user AUC on the test items."""
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
    scale = np.maximum(np.abs(features).max(axis=0), 1e-12)  # LightFM sums feature embeddings: keep weights ≤ 1
    item_features = sp.csr_matrix((features / scale).astype(np.float32))
    item_features.eliminate_zeros()
    model = LightFM(loss="warp", no_components=components, random_state=seed)
    model.fit(matrix, item_features=item_features, epochs=epochs, num_threads=2)
    item_bias, item_emb = model.get_item_representations(item_features)
    user_bias, user_emb = model.get_user_representations()
    test_emb, test_bias = item_emb[data.test], item_bias[data.test]

    def score(rows: np.ndarray) -> np.ndarray:
        return user_emb[rows] @ test_emb.T + test_bias[None, :] + user_bias[rows, None]

    result = rank_users(score, data.test_truth, k)
    return {**result, "epochs": epochs, "components": components, "seconds": time.perf_counter() - t0}
