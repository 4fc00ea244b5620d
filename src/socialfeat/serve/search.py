"""Substring search over many short strings (the explorer's item titles and user ids), built once at start-up so
that a request never loops over the catalogue in Python.

The strings are stored as one UTF-8 byte array (a byte match of UTF-8 text is a character match, so ``find``
answers exactly what ``query in text`` answers, row by row). Two position indexes make a query cheap: the rows
holding each byte value (a one-character query is a slice), and every byte pair's positions, so a longer query
starts from its rarest pair and checks its other bytes at those positions only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SEPARATOR = b"\0"  # after every string; a match running into it would span two strings and is dropped


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # ids may hold lone surrogates: still one consistent encoding


class SubstringIndex:
    """Which strings contain a query: ``find(q)`` equals ``[r for r, s in enumerate(texts) if q in s]`` as an
    array, at a cost that grows with the matches of the query's rarest byte pair rather than with the catalogue.
    Case is the caller's: give lowercase strings and lowercase queries for a case-insensitive search."""

    def __init__(self, texts: Iterable[str]) -> None:
        encoded = [_utf8(t) for t in texts]
        self.n = len(encoded)
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=self.n)
        self.starts = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(lengths + 1, out=self.starts[1:])
        self.ends = self.starts[:-1] + lengths  # where each string's separator sits
        self.blob = np.frombuffer(SEPARATOR.join([*encoded, b""]), dtype=np.uint8)
        del encoded
        self.row_of = np.repeat(np.arange(self.n, dtype=np.int32), lengths + 1)
        # byte pairs: every position's (byte, next byte); positions ascend within a pair (a stable sort)
        pairs = self.blob[:-1].astype(np.uint16) << 8 | self.blob[1:]
        self.pair_order = np.argsort(pairs, kind="stable").astype(np.int32)
        self.pair_bounds = np.zeros(65_537, dtype=np.int64)
        np.cumsum(np.bincount(pairs, minlength=65_536), out=self.pair_bounds[1:])
        del pairs
        # single bytes: the distinct rows holding each byte value, ascending
        at = np.argsort(self.blob, kind="stable")
        at = at[at != self.ends[self.row_of[at]]]  # not the separators
        value, rows = self.blob[at], self.row_of[at]
        first = np.ones(len(at), dtype=bool)
        first[1:] = (value[1:] != value[:-1]) | (rows[1:] != rows[:-1])
        self.byte_rows = rows[first]
        self.byte_bounds = np.zeros(257, dtype=np.int64)
        np.cumsum(np.bincount(value[first], minlength=256), out=self.byte_bounds[1:])

    def __len__(self) -> int:
        return self.n

    def find(self, query: str) -> np.ndarray:
        """Rows of the strings containing ``query``, ascending; every row for an empty query."""
        q = np.frombuffer(_utf8(query), dtype=np.uint8)
        m = len(q)
        if m == 0:
            return np.arange(self.n, dtype=np.int64)
        if m == 1:
            c = int(q[0])
            return self.byte_rows[self.byte_bounds[c] : self.byte_bounds[c + 1]].astype(np.int64)
        keys = q[:-1].astype(np.int64) << 8 | q[1:]
        sizes = self.pair_bounds[keys + 1] - self.pair_bounds[keys]
        j = int(np.argmin(sizes))  # the rarest pair: the fewest positions to check
        key = int(keys[j])
        at = self.pair_order[self.pair_bounds[key] : self.pair_bounds[key + 1]].astype(np.int64) - j
        at = at[(at >= 0) & (at <= len(self.blob) - m)]
        for i in range(m):
            if i not in (j, j + 1):
                at = at[self.blob[at + i] == q[i]]
        rows = self.row_of[at]
        rows = rows[at + m <= self.ends[rows]].astype(np.int64)  # inside one string, not across a separator
        if len(rows) == 0:
            return rows
        keep = np.ones(len(rows), dtype=bool)
        keep[1:] = rows[1:] != rows[:-1]  # positions ascend, so rows do: several matches in one row count once
        return rows[keep]
