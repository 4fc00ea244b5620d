"""Shared fixtures: a small simulated platform built once per session, and the real data's location."""

from __future__ import annotations

from pathlib import Path

import pytest

from socialfeat.config import SimulateConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOVIELENS = SHARED / "movielens-1m"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated platform (same data contract as a real export), generated once."""
    from socialfeat.data.simulate import simulate

    out = tmp_path_factory.mktemp("platform") / "demo"
    simulate(out, SimulateConfig(n_users=300, n_items=400, image_size=32, views_per_user=40), seed=7)
    return out


@pytest.fixture
def movielens() -> Path:
    if not (MOVIELENS / "interactions.csv").exists():
        pytest.skip(f"real data not present at {MOVIELENS} (it is in CI and beside developer checkouts)")
    return MOVIELENS
