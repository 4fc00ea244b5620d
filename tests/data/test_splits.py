"""Held-out splits: latest-by-time or random leave-k-out, cold items from a file or a fraction."""

from pathlib import Path

import numpy as np
import pytest

from socialfeat.config import SplitConfig
from socialfeat.data.splits import TEST, TRAIN, VALID, item_splits, leave_k_out, uniform
from socialfeat.errors import UserError


def test_leave_k_out_takes_the_latest_per_user() -> None:
    users = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    items = np.array([5, 6, 7, 1, 2, 3, 4, 9])
    times = np.array([10, 30, 20, 4, 3, 2, 1, 100])
    held = leave_k_out(users, items, times, SplitConfig(leave_out=1, min_train=2), seed=0)
    assert held.tolist() == [False, True, False, True, False, False, False, False]  # user 2 has too few
    held = leave_k_out(users, items, times, SplitConfig(leave_out=2, min_train=2), seed=0)
    assert held.tolist() == [False, False, False, True, True, False, False, False]  # user 0 needs 4 to give 2


def test_random_leave_k_out_is_seeded_and_independent_of_row_order() -> None:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 50, 2000), rng.integers(0, 300, 2000)], axis=1), axis=0)
    users, items = pairs[:, 0], pairs[:, 1]  # one row per pair, as in a dataset
    cfg = SplitConfig(leave_out=3, min_train=2)
    held = leave_k_out(users, items, None, cfg, seed=4)
    perm = rng.permutation(len(users))
    held_perm = leave_k_out(users[perm], items[perm], None, cfg, seed=4)
    assert (held[perm] == held_perm).all()
    counts = np.bincount(users[held], minlength=50)
    eligible = np.bincount(users, minlength=50) >= 5
    assert (counts[eligible] == 3).all() and (counts[~eligible] == 0).all()
    assert (leave_k_out(users, items, None, cfg, seed=5) != held).any()


def test_cold_items_from_fraction_and_from_file(tmp_path: Path) -> None:
    ids = [f"i{k}" for k in range(1000)]
    codes, info = item_splits(ids, SplitConfig(cold_fraction=0.3, cold_valid_share=0.25), seed=1)
    assert 0.25 < (codes != TRAIN).mean() < 0.35 and 0.15 < (codes == VALID).sum() / (codes != TRAIN).sum() < 0.35
    assert info["train"] + info["valid"] + info["test"] == 1000
    f = tmp_path / "split.csv"
    f.write_text("item_id,split\ni0,test\ni1,valid\nnope,test\n")
    codes, info = item_splits(ids, SplitConfig(cold_items=f), seed=0)
    assert codes[:3].tolist() == [TEST, VALID, TRAIN] and info["file_rows_not_in_dataset"] == 1
    f.write_text("item_id,split\ni0,cold\n")
    with pytest.raises(UserError, match="row 1: split 'cold'; expected one of train, valid, test"):
        item_splits(ids, SplitConfig(cold_items=f), seed=0)
    f.write_text("item_id,split\nx,test\n")
    with pytest.raises(UserError, match="no item id in this file is in the dataset"):
        item_splits(ids, SplitConfig(cold_items=f), seed=0)


def test_uniform_is_uniform() -> None:
    u = uniform(np.arange(100_000), seed=3)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10)[0].min() > 9000
