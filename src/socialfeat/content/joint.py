"""The joint content model: one ridge over every block at once, a λ per block, under marginalised source dropout,
with a fallback per block for an item that lacks it (:class:`JointMap`), and its search on the valid cold items
(:class:`JointFitter`), solved from the blocks' Gram matrices (:class:`~socialfeat.content.gram.Grams`) built once
and shared with late fusion: a trial of the search is one Cholesky factorisation of the combination's size and one
ranking of the valid items, never a pass over the warm rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from socialfeat.content.gram import Grams, valid_auc
from socialfeat.content.sources import Block
from socialfeat.linalg import solve_ridge_system
from socialfeat.measures.coldstart import ColdStartData

DROPOUTS = (0.0, 0.25, 0.5)  # source dropout rates tried on valid (0: a plain block-wise ridge)


@dataclass
class JointMap:
    """One ridge over every block at once, each block with its own λ, fit under marginalised source dropout.

    Late fusion averages what each source predicts alone, so two sources that see the same thing (a poster's
    genre look and the genre tags) are counted twice, and the image can only re-say what the tags already said.
    Fit jointly, the image block explains what the others leave over. An item that arrives without a source is
    scored by the fallback fit on the other sources alone (one per source, same λs and dropout: k small solves),
    not by the full map with a hole in it — the full map's other weights were fit expecting that source beside
    them. Source dropout (each block absent from a training item with probability p, marginalised in closed form)
    is the other guard, and covers items missing several sources, which no fallback matches."""

    blocks: list[str]
    mean_x: dict[str, np.ndarray]
    std_x: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]  # per block: d_b × f
    mean_v: np.ndarray
    lambdas: dict[str, float]
    dropout: float
    fallbacks: dict[str, JointMap] = field(default_factory=dict)  # by the one source missing

    def predict(self, features: dict[str, np.ndarray], has: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Predicted factors of n items from the blocks given (n × d_b each); a block not given, or an item whose
        ``has`` is False, is missing."""
        n = len(next(iter(features.values())))
        present = {b: np.ones(n, bool) if has is None or b not in has else has[b] for b in self.blocks if b in features}
        z = {b: np.where(present[b][:, None], (features[b] - self.mean_x[b]) / self.std_x[b], 0.0) for b in present}
        return self.predict_z(z, present, n)

    def predict_z(self, z: dict[str, np.ndarray], present: dict[str, np.ndarray], n: int) -> np.ndarray:
        """:meth:`predict` on standardised blocks (zero where missing): the main map, and for an item missing
        exactly one source, that source's fallback."""
        out = np.tile(self.mean_v.astype(np.float64), (n, 1))
        for b in self.blocks:
            if b in z:
                out += z[b] @ self.weight[b]
        missing = {b: ~present[b] if b in present else np.ones(n, bool) for b in self.blocks}
        count = sum(m.astype(int) for m in missing.values())
        for b, fallback in self.fallbacks.items():
            rows = missing[b] & (count == 1)
            if rows.any():
                sub = {c: z[c][rows] for c in fallback.blocks}
                out[rows] = fallback.predict_z(sub, {c: present[c][rows] for c in fallback.blocks}, int(rows.sum()))
        return out.astype(np.float32)


class JointFitter:
    """Joint maps of any combination of blocks, each (λ per block, dropout) a search on valid tries solved from the
    Gram matrices computed once (given, or built here)."""

    def __init__(self, blocks: list[Block], data: ColdStartData, grams: Grams | None = None) -> None:
        self.data = data
        self.grams = grams if grams is not None else Grams(blocks, data)
        self.names = [b.name for b in blocks]
        self.mean_x = {n: self.grams.blocks[n].mean for n in self.names}
        self.std_x = {n: self.grams.blocks[n].std for n in self.names}
        self.mean_v = self.grams.mean_v

    def fit(self, combo: list[str], lambdas: dict[str, float], dropout: float) -> JointMap:
        """The joint ridge of ``combo``: the Gram's diagonal blocks scaled by 1 − p and its off-diagonal blocks by
        (1 − p)² (each block kept with probability 1 − p, marginalised), λ_b on block b's diagonal."""
        keep = 1.0 - dropout
        sizes = [self.grams.blocks[b].width for b in combo]
        at = np.concatenate([[0], np.cumsum(sizes)])
        g = np.zeros((at[-1], at[-1]))
        r = np.vstack([keep * self.grams.rhs[b] for b in combo])
        for i, a in enumerate(combo):
            for j, b in enumerate(combo[i:], start=i):
                block = (keep if i == j else keep * keep) * self.grams.block(a, b)
                g[at[i] : at[i + 1], at[j] : at[j + 1]] = block
                g[at[j] : at[j + 1], at[i] : at[i + 1]] = block.T
            g[at[i] : at[i + 1], at[i] : at[i + 1]] += lambdas[a] * np.eye(sizes[i])
        w = solve_ridge_system(g, r, min(lambdas[b] for b in combo))
        return JointMap(
            list(combo),
            {b: self.mean_x[b] for b in combo},
            {b: self.std_x[b] for b in combo},
            {b: w[at[i] : at[i + 1]] for i, b in enumerate(combo)},
            self.mean_v,
            dict(lambdas),
            dropout,
        )

    def _terms(self, m: JointMap, items: np.ndarray, skip: str | None = None) -> np.ndarray:
        out = np.tile(np.asarray(m.mean_v, np.float64), (len(items), 1))
        for b in m.blocks:
            if b != skip:
                out += self.grams.blocks[b].project(items, m.weight[b])
        return out

    def predict(self, m: JointMap, items: np.ndarray, withheld: str | None = None) -> np.ndarray:
        """Predicted factors of ``items`` (item_idx) from the blocks each has, less ``withheld``: the main map, and
        for an item missing exactly one source, that source's fallback (as :meth:`JointMap.predict_z`)."""
        items = np.asarray(items, dtype=np.int64)
        present = {b: self.grams.blocks[b].has[items] & (b != withheld) for b in m.blocks}
        out = self._terms(m, items, withheld)
        count = sum((~present[b]).astype(int) for b in m.blocks)
        for b, fallback in m.fallbacks.items():
            rows = ~present[b] & (count == 1)
            if rows.any():
                out[rows] = self._terms(fallback, items[rows])
        return out.astype(np.float32)

    def shares(self, m: JointMap) -> dict[str, float]:
        """Each source's share of what the joint map says about the warm items: the variance of its term (z_b W_b)
        over the sum of the terms' variances — the joint fit's counterpart of late fusion's weights, for the chart.
        Each Z_b is centred over the warm items, so the variance is tr(W_bᵀ G_bb W_b): no rows needed."""
        var = {b: float((m.weight[b] * (self.grams.block(b, b) @ m.weight[b])).sum()) for b in m.blocks}
        total = sum(var.values()) or 1.0
        return {b: v / total for b, v in var.items()}

    def with_fallbacks(self, m: JointMap) -> JointMap:
        """``m`` with one fallback per source: the joint map of the other sources, same λs and dropout."""
        if len(m.blocks) > 1:
            for b in m.blocks:
                rest = [c for c in m.blocks if c != b]
                m.fallbacks[b] = self.fit(rest, {c: m.lambdas[c] for c in rest}, m.dropout)
        return m

    def search(self, combo: list[str], start: dict[str, float], grid: list[float]) -> tuple[JointMap, float]:
        """λ per block by coordinate ascent of valid AUC over ``grid`` (from each block's own best λ), then the
        dropout rate; two sweeps, keeping a change only when valid AUC rises. A trial scores the valid items only,
        and a trial already scored is not scored again."""
        lambdas = {b: start[b] for b in combo}
        best_p = 0.0
        tried: dict[tuple[tuple[float, ...], float], float] = {}

        def score(lams: dict[str, float], p: float) -> float:
            key = (tuple(lams[b] for b in combo), p)
            if key not in tried:
                tried[key] = valid_auc(self.predict(self.fit(combo, lams, p), self.data.valid), self.data)
            return tried[key]

        best = score(lambdas, best_p)
        for p in DROPOUTS[1:]:
            s = score(lambdas, p)
            if s > best:
                best, best_p = s, p
        for _sweep in range(2):
            changed = False
            for b in combo:
                for lam in grid:
                    if lam == lambdas[b]:
                        continue
                    s = score(lambdas | {b: lam}, best_p)
                    if s > best:
                        best, lambdas, changed = s, lambdas | {b: lam}, True
            for p in DROPOUTS:
                if p != best_p:
                    s = score(lambdas, p)
                    if s > best:
                        best, best_p, changed = s, p, True
            if not changed:
                break
        m = self.with_fallbacks(self.fit(combo, lambdas, best_p))
        # as it will predict: an item lacking a source scored by its fallback
        return m, valid_auc(self.predict(m, self.data.valid), self.data)
