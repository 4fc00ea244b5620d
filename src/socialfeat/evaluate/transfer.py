"""Transfer probes, the seed papers' protocol: features of a labelled collection the model never saw, L2-normalised,
a multinomial logistic regression whose C is chosen by inner cross-validation, stratified k-fold accuracy
(mean ± std) and a few-shot curve (n labels per class, repeated seeded draws, tested on the rest).

Pure functions of (features, labels, settings): the stage that embeds the images is ``transfer_stage``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import numpy as np

from socialfeat.errors import UserError

DEFAULT_C = 1.0  # used only where no C can be cross-validated (a training set with one example of some class)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero): a per-image, label-free transform."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def check_labels(y: np.ndarray, folds: int, where: str) -> None:
    """Refuse labels that cannot be probed: one class only, or a class with fewer examples than folds."""
    counts = Counter(np.asarray(y).tolist())
    if len(counts) < 2:
        only = next(iter(counts), "none")
        raise UserError(where, f"only one class ('{only}') among {len(y):,} usable images; a probe needs at least 2")
    label, n = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
    if n < folds:
        raise UserError(
            where,
            f"class '{label}' has {n} usable image{'s' if n != 1 else ''}, fewer than the {folds} folds "
            "(transfer.folds); add examples, drop the class or lower --set transfer.folds",
        )


def _span(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rewrite the problem in an orthonormal basis of the training rows when features outnumber them: the
    L2-regularised optimum lies in their span, so predictions are unchanged and a 1,280-d probe on 30 examples
    solves for 30 × classes weights."""
    if x_train.shape[1] <= len(x_train):
        return (x_train, *others)
    basis, _ = np.linalg.qr(x_train.T)
    return (x_train @ basis, *(o @ basis for o in others))


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000, tol=1e-3)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, c: float) -> np.ndarray:
    """Multinomial logistic regression (lbfgs, inverse L2 strength ``c``); one training class predicts itself."""
    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y_train)) < 2:
        return np.full(len(x_test), y_train[0])
    x_train, x_test = _span(x_train, x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _model(c).fit(x_train, y_train).predict(x_test)


def choose_c(x: np.ndarray, y: np.ndarray, cs: list[float], inner_folds: int, seed: int) -> tuple[float, str]:
    """C with the best mean accuracy over a stratified inner CV of (x, y) — ties go to the smaller C (stronger
    regularisation) — and how it was chosen. With too few examples of a class for two folds, ``DEFAULT_C``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    grid = sorted(float(c) for c in cs)
    if len(grid) == 1:
        return grid[0], "the only C"
    k = min(inner_folds, min(Counter(y.tolist()).values()))
    if k < 2:
        return DEFAULT_C, f"fixed (a class has 1 example: no inner CV), C = {DEFAULT_C:g}"
    scores = np.zeros(len(grid))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        x_tr, x_te = _span(x[tr], x[te])
        model = _model(grid[0])
        model.set_params(warm_start=True)  # each larger C starts from the last solution: a regularisation path
        for j, c in enumerate(grid):
            model.set_params(C=c)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_tr, y[tr])
            scores[j] += float(np.mean(model.predict(x_te) == y[te]))
    return grid[int(np.argmax(scores))], f"{k}-fold inner CV"


def kfold_probe(
    x: np.ndarray, y: np.ndarray, folds: int, cs: list[float], inner_folds: int, seed: int
) -> dict[str, Any]:
    """Stratified k-fold accuracy of the probe (C chosen inside each training fold): mean, std, per fold."""
    from sklearn.model_selection import StratifiedKFold

    x, y = l2_normalize(x), np.asarray(y)
    accs, chosen = [], []
    for f, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)):
        c, _ = choose_c(x[tr], y[tr], cs, inner_folds, seed + 1 + f)
        accs.append(float(np.mean(fit_predict(x[tr], y[tr], x[te], c) == y[te])))
        chosen.append(c)
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "folds": accs, "C": chosen}


def few_shot_draw(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``n`` random examples of every class."""
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == v), size=n, replace=False) for v in np.unique(y)]))


def few_shot_probe(
    x: np.ndarray, y: np.ndarray, n: int, draws: int, c: float, seed: int, names: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy with ``n`` labels per class, tested on every other example, mean and std over ``draws`` seeded
    draws, at inverse regularisation ``c``. A class with ≤ n examples leaves nothing of it to test: the point is
    skipped, and the reason recorded (``names``: class names of integer-coded ``y``)."""
    x, y = l2_normalize(x), np.asarray(y)
    counts = Counter(y.tolist())
    label, smallest = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
    if smallest <= n:
        label = names[label] if names is not None else label
        return {"skipped": f"class '{label}' has {smallest} example{'s' if smallest != 1 else ''}, not more than {n}"}
    accs = []
    for draw in range(draws):
        pick = few_shot_draw(y, n, np.random.default_rng([seed, n, draw]))
        rest = np.ones(len(y), dtype=bool)
        rest[pick] = False
        accs.append(float(np.mean(fit_predict(x[pick], y[pick], x[rest], c) == y[rest])))
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "draws": accs, "C": c}


def probe_source(
    x: np.ndarray,
    y: np.ndarray,
    folds: int,
    few_shot: list[int],
    draws: int,
    cs: list[float],
    inner_folds: int,
    seed: int,
) -> dict[str, Any]:
    """The k-fold accuracy and the few-shot curve of one feature source on one labelled set. C cannot be
    cross-validated on one label per class, so every few-shot point uses the C the k-fold's inner CVs chose most
    often (one scalar from the grid; the protocol of the seed papers, which fix the probe's settings)."""
    from threadpoolctl import threadpool_limits

    names, y = np.unique(np.asarray(y), return_inverse=True)  # integer codes: the same fits, less bookkeeping
    with threadpool_limits(1):  # hundreds of small fits: threaded BLAS only adds contention
        kfold = kfold_probe(x, y, folds, cs, inner_folds, seed)
        c = Counter(kfold["C"]).most_common(1)[0][0]
        curve = {str(n): few_shot_probe(x, y, n, draws, c, seed, names) for n in sorted(set(few_shot))}
    return {"kfold": kfold, "few_shot": curve, "few_shot_C": c}
