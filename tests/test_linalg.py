"""The ridge solver cannot fail on a valid input: rank-deficient and nearly collinear features with a small λ."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import LinAlgError, cho_factor

from socialfeat import linalg
from socialfeat.measures.metrics import ridge_path


def _indefinite_gram(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 Gram of nearly collinear, rank-deficient columns whose rounding makes G + λI indefinite for a tiny
    λ (what 423K items did to content's Cholesky)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((4000, 3)).astype(np.float32)
    z = np.hstack([base, base @ rng.standard_normal((3, 9)).astype(np.float32)])  # rank 3 of 12
    z[:, 5] = z[:, 4] * (1 + 1e-7)  # and two columns equal up to float32 rounding
    gram = (z.T @ z).astype(np.float64)  # built in float32, as a float32 feature matrix gives it
    gram[5, 5] -= 1e-3  # rounding a little below the truth: the smallest eigenvalue turns negative
    return gram, z


def test_the_planted_system_really_defeats_cholesky() -> None:
    gram, _ = _indefinite_gram()
    with pytest.raises(LinAlgError):
        cho_factor(gram + 1e-6 * np.eye(len(gram)))


def test_solve_falls_back_to_floored_eigendecomposition_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    gram, z = _indefinite_gram()
    rhs = z.T.astype(np.float64) @ np.ones((len(z), 2))
    before = linalg.FALLBACKS["count"]
    with caplog.at_level("WARNING", logger="socialfeat.linalg"):
        w = linalg.solve_ridge_system(gram + 1e-6 * np.eye(len(gram)), rhs, 1e-6)
    assert np.all(np.isfinite(w)) and w.shape == (12, 2)
    assert linalg.FALLBACKS["count"] == before + 1
    assert "not positive definite" in caplog.text
    # the solution solves the floored system: every eigenvalue of the symmetric part at least λ
    values, vectors = np.linalg.eigh(gram + 1e-6 * np.eye(len(gram)))
    floored = vectors @ np.diag(np.maximum(values, 1e-6)) @ vectors.T
    np.testing.assert_allclose(floored @ w, rhs, rtol=1e-6, atol=1e-6 * np.abs(rhs).max())


def test_positive_definite_systems_keep_the_cholesky_path() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((200, 8))
    rhs = z.T @ rng.standard_normal((200, 3))
    before = linalg.FALLBACKS["count"]
    w = linalg.solve_ridge_system(z.T @ z + 0.5 * np.eye(8), rhs, 0.5)
    assert linalg.FALLBACKS["count"] == before
    np.testing.assert_allclose(w, np.linalg.solve(z.T @ z + 0.5 * np.eye(8), rhs), rtol=1e-10)


def test_ridge_path_survives_rank_deficient_float32_features() -> None:
    """evaluate's ridge over float32 features with duplicated and constant-combination columns, tiny λ."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((3000, 4)).astype(np.float32) * 1e3
    z = np.hstack([base, base, base @ rng.standard_normal((4, 24)).astype(np.float32)])
    z -= z.mean(axis=0)
    y = rng.standard_normal((3000, 5))
    for w in ridge_path(z, y - y.mean(axis=0), [1e-9, 1e-3, 1.0]):
        assert np.all(np.isfinite(w))


def test_non_finite_systems_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        linalg.solve_ridge_system(np.full((2, 2), np.nan), np.ones(2), 1.0)


def test_content_grams_and_joint_fit_survive_collinear_float32_blocks() -> None:
    """content's per-source ridge and joint ridge on two float32 blocks that repeat each other (rank-deficient and
    collinear across blocks), λ tiny: every map is finite, none raises."""
    from types import SimpleNamespace

    from socialfeat.content import Block, JointFitter
    from socialfeat.content.gram import Grams

    rng = np.random.default_rng(3)
    n = 6000
    base = (rng.standard_normal((n, 3)) * 1e3).astype(np.float32)
    a = np.hstack([base, base, base @ rng.standard_normal((3, 10)).astype(np.float32)])
    b = np.hstack([a[:, :6] * np.float32(1 + 1e-7), base])  # the second block nearly repeats the first
    y = (base @ rng.standard_normal((3, 4)).astype(np.float32)).astype(np.float32)
    data = SimpleNamespace(train=np.arange(5000), item_factors=y[:5000], n_items=n)
    has = np.ones(n, dtype=bool)
    blocks = [Block("a", a, has, {}), Block("b", b, has, {})]
    grams = Grams(blocks, data)
    for w in grams.ridge_path("a", [1e-12, 1e-6, 1.0]) + grams.ridge_path("b", [1e-12]):
        assert np.all(np.isfinite(w))
    m = JointFitter(blocks, data, grams).fit(["a", "b"], {"a": 1e-12, "b": 1e-12}, 0.0)
    assert np.all(np.isfinite(m.predict({"a": a[:50], "b": b[:50]})))
