"""Linear probes: how much of a known visual attribute can a linear classifier read off a feature source?

A labels CSV (``item_id`` plus one column per attribute, such as the simulator's ``labels.csv``) gives classes.
For each class column a multinomial logistic regression on standardised features is trained on a seeded half of
the labelled items and tested on the other half — once with every training label, and with only a few labels
per class (averaged over several seeded draws) — beside the majority-class rate as chance.
"""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.errors import UserError
from socialfeat.measures.metrics import accuracy, majority_rate, standardizer

log = logging.getLogger(__name__)

# Fixed inverse regularisation of the probes (sklearn's C, on standardised features). A fixed C keeps the probe
# cheap and identical for every source and every label budget; a CV over C is impossible with 5 labels per class.
PROBE_C = 0.1
FEW_SHOT_DRAWS = 5
MAX_NUMERIC_CLASSES = 20  # a numeric column with more distinct values is a measurement, not a class
MAX_CLASS_SHARE = 0.5  # a column with more distinct values than this share of its items names items, not classes


@dataclass
class LabelSet:
    """One class column: item_idx of the labelled run items, their labels, and the probe's train/test split."""

    name: str
    items: np.ndarray
    labels: np.ndarray  # str
    train: np.ndarray  # bool per entry of ``items``


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_labels(path: Path, item_ids: list[Any], seed: int) -> tuple[list[LabelSet], list[str]]:
    """Class columns of a labels CSV matched to the run's items (ids compared as strings), and notes on the columns
    skipped. A missing file, a file without ``item_id`` or with no id of the run is a :class:`UserError`."""
    path = Path(path)
    where = str(path)
    expected = "expected a CSV with an item_id column and one or more label columns"
    if not path.is_file():
        raise UserError(where, f"labels file not found; {expected}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(where, f"not a readable CSV ({exc}); {expected}") from None
    if "item_id" not in columns:
        raise UserError(where, f"no item_id column (found: {', '.join(columns) or 'none'}); {expected}")
    label_cols = [c for c in columns if c != "item_id"]
    if not label_cols:
        raise UserError(where, f"only an item_id column; {expected}")
    position = {str(item): idx for idx, item in enumerate(item_ids)}
    matched = [(position[r["item_id"].strip()], r) for r in rows if (r.get("item_id") or "").strip() in position]
    if not matched:
        raise UserError(
            where,
            f"none of its {len(rows):,} item ids is an item of the run (ids are matched as strings, e.g. "
            f"'{next(iter(position), '')}'); {expected}",
        )
    notes = []
    sets = []
    for c, name in enumerate(label_cols):
        pairs = [(idx, (r.get(name) or "").strip()) for idx, r in matched]
        pairs = [(idx, v) for idx, v in pairs if v]
        values = {v for _, v in pairs}
        if len(values) < 2:
            notes.append(f"labels {name}: fewer than 2 classes among the run's items; skipped")
            continue
        if len(values) > MAX_NUMERIC_CLASSES and all(_is_number(v) for v in values):
            notes.append(f"labels {name}: numeric with {len(values):,} distinct values, not classes; skipped")
            continue
        if len(values) > MAX_CLASS_SHARE * len(pairs):
            notes.append(f"labels {name}: {len(values):,} distinct values for {len(pairs):,} items; skipped")
            continue
        items = np.array([idx for idx, _ in pairs], dtype=np.int64)
        labels = np.array([v for _, v in pairs], dtype=str)
        train = np.random.default_rng([seed, c]).permutation(len(items)) < (len(items) + 1) // 2
        sets.append(LabelSet(name, items, labels, train))
    return sets, notes


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Multinomial logistic regression (lbfgs, C = PROBE_C); a single training class predicts itself.

    With more feature dimensions than training items the problem is first written in an orthonormal basis of the
    training rows: the L2-regularised optimum lies in their span (the gradient is a combination of them), so the
    predictions are the same and a 1,280-d probe on 30 few-shot items solves for 30 × classes weights, not 1,280 ×.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) < 2:
        return np.full(len(x_test), y_train[0])
    if x_train.shape[1] > len(x_train):
        basis, _ = np.linalg.qr(x_train.T)  # d × n, orthonormal columns spanning the training rows
        x_train, x_test = x_train @ basis, x_test @ basis
    model = LogisticRegression(C=PROBE_C, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model.predict(x_test)


def few_shot_sample(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``per_class`` random entries of each class (all of a class that has fewer)."""
    chosen = []
    for value in np.unique(labels):
        members = np.nonzero(labels == value)[0]
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def probe_row(
    features: np.ndarray | sp.spmatrix, has: np.ndarray, labels: LabelSet, few_shot: int, seed: int
) -> dict[str, Any]:
    """Test accuracy with all training labels and with ``few_shot`` per class, chance, and the class count.

    Features are standardised with the mean and spread of every item of the source (label-free statistics); a
    sparse source is made dense only for its labelled rows.
    """
    mean, std = standardizer(features[has] if not np.all(has) else features)
    keep = has[labels.items]
    rows = features[labels.items[keep]]
    x = ((rows.toarray() if sp.issparse(rows) else rows) - mean) / std
    y = labels.labels[keep]
    train = labels.train[keep]
    if train.sum() == 0 or (~train).sum() == 0:
        return {"all": float("nan"), "few": float("nan"), "chance": float("nan"), "classes": len(np.unique(y))}
    x_tr, y_tr, x_te, y_te = x[train], y[train], x[~train], y[~train]
    full = accuracy(_fit_predict(x_tr, y_tr, x_te), y_te)
    few = []
    for draw in range(FEW_SHOT_DRAWS):
        pick = few_shot_sample(y_tr, few_shot, np.random.default_rng([seed, draw]))
        few.append(accuracy(_fit_predict(x_tr[pick], y_tr[pick], x_te), y_te))
    return {
        "all": full,
        "few": float(np.mean(few)),
        "chance": majority_rate(y_tr, y_te),
        "classes": len(np.unique(y)),
        "train": int(len(y_tr)),
        "test": int(len(y_te)),
    }
