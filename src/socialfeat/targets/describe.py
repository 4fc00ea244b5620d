"""Describe a clustering in words: per cluster, the words most distinctive of its items against the rest of the
collection (log-odds with an informative prior, z-scored as in Monroe et al. 2008), not the most frequent."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

TOKEN = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
PRIOR_ITEMS = 10.0  # strength of the prior, in items
SIGNIFICANT = 1.96  # z above which a word counts as distinctive
STOP = frozenset(
    "a an and are as at be but by for from has have i in is it its of on or so that the this to was were with you "
    "my me we our your they them he she his her not no yes very just too".split()
)


def tokens(text: str | None) -> list[str]:
    """Lower-case words of a title, tag list (``a|b|c``) or comment, without stop words."""
    if not text:
        return []
    return [w for w in (t.lower() for t in TOKEN.findall(text.replace("|", " "))) if w not in STOP and len(w) > 1]


def distinctive_words(
    item_words: list[set[str]], labels: np.ndarray, n_clusters: int, top: int, min_items: int
) -> list[list[dict[str, float]]]:
    """For each cluster, up to ``top`` words significantly over-represented among its items (z > 1.96).

    A word is scored by the log-odds that an item of the cluster has it against an item outside, with an
    informative prior from the word's overall rate (so rare words need real support), divided by its
    standard error. Items count once per word, so one chatty item cannot define a cluster; words found
    with fewer than ``min_items`` items are ignored.
    """
    corpus = Counter(w for words in item_words for w in words)
    vocab = [w for w, n in corpus.items() if n >= min_items]
    index = {w: j for j, w in enumerate(vocab)}
    counts = np.zeros((n_clusters, len(vocab)), dtype=np.float64)
    for words, c in zip(item_words, labels, strict=True):
        for w in words:
            j = index.get(w)
            if j is not None:
                counts[c, j] += 1
    n_total = len(item_words)
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    having = counts.sum(axis=0)
    rate = having / max(n_total, 1)
    a, b = PRIOR_ITEMS * rate, PRIOR_ITEMS * (1 - rate)  # pseudo-items with and without the word
    result = []
    for c in range(n_clusters):
        yc, nc = counts[c], sizes[c]
        yr, nr = having - yc, n_total - nc
        delta = np.log((yc + a) / (nc - yc + b)) - np.log((yr + a) / (nr - yr + b))
        z = delta / np.sqrt(1 / (yc + a) + 1 / (nc - yc + b) + 1 / (yr + a) + 1 / (nr - yr + b))
        order = np.argsort(-z, kind="stable")
        chosen = [j for j in order[:top] if z[j] > SIGNIFICANT]
        result.append([{"word": vocab[j], "z": round(float(z[j]), 2), "items": int(yc[j])} for j in chosen])
    return result
