"""EpochBatches: a sample per epoch keeps an epoch's cost fixed, stays seeded, and splits across ranks."""

from __future__ import annotations

import pytest

from socialfeat.data.batches import EpochBatches


def seen(order: EpochBatches, epoch: int, skip: int = 0) -> list[int]:
    return [i for _, batch in order.epoch(epoch, skip) for i in batch]


def test_a_sample_per_epoch_is_fresh_each_epoch_and_seeded() -> None:
    order = EpochBatches(1000, 32, seed=3, per_epoch=100)
    first, second = seen(order, 0), seen(order, 1)
    assert len(first) == len(set(first)) == 100 and len(set(second)) == 100
    assert len(set(first) & set(second)) < 40  # two independent 10% samples share ~10 items
    assert first == seen(EpochBatches(1000, 32, seed=3, per_epoch=100), 0)  # the same seed, the same sample
    assert order.steps_per_epoch() == len(list(order.epoch(0))) == 4  # 100 in batches of 32
    assert seen(order, 1, skip=2) == second[64:]  # a resumed epoch continues within the same sample


def test_the_sample_is_split_across_ranks_without_overlap() -> None:
    ranks = [EpochBatches(1000, 16, rank=r, world=2, seed=0, per_epoch=100) for r in range(2)]
    a, b = seen(ranks[0], 0), seen(ranks[1], 0)
    assert len(a) == len(b) == 50 and not set(a) & set(b)
    assert ranks[0].steps_per_epoch() == ranks[1].steps_per_epoch() == 4


@pytest.mark.parametrize("per_epoch", [0, 5000])
def test_no_sample_or_one_larger_than_the_items_is_every_item(per_epoch: int) -> None:
    order = EpochBatches(1000, 64, seed=1, per_epoch=per_epoch)
    assert sorted(seen(order, 0)) == list(range(1000)) and order.steps_per_epoch() == 16


def test_a_sample_needs_a_shuffle() -> None:
    with pytest.raises(ValueError, match="shuffle"):
        EpochBatches(10, 2, shuffle=False, per_epoch=5)
