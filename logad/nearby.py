"""The normal windows within two insert/delete operations of a window, by hashing: lookups whose
cost depends on the window's length and the vocabulary, not on how many normal windows there are.

A window one operation from a normal window u is u with one event deleted or one inserted; two
operations, two of either. So, with n the window's length:

    distance 1   u of length n - 1: one of the window's one-event deletions     -> the windows themselves
                 u of length n + 1: has the window among its deletions          -> the deletion index
    distance 2   u of length n - 2: one of the window's two-event deletions     -> the windows' hashes
                 u of length n:     shares a one-event deletion with the window -> the deletion index
                 u of length n + 2: has one of the window's one-event insertions among its
                                    deletions (ids the normal windows have)     -> the deletion index

The hashes are polynomial (mod 2^64), so that every variant's hash comes from the window's prefix
and suffix hashes in a few vectorised operations instead of building each variant. A hash says
"maybe": every candidate is aligned (rapidfuzz) before it counts, so a collision costs one
alignment and never a wrong answer. Windows are id tuples; ids are small non-negative ints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz.distance import Indel
from rapidfuzz.process import cdist

_B = np.uint64(0x100000001B3)  # the polynomial's base (odd: invertible mod 2^64)


def _powers(n: int) -> np.ndarray:
    """(n + 1,) B^0 .. B^n mod 2^64 (in Python ints: numpy warns when a scalar product wraps)."""
    out, x = [], 1
    for _ in range(n + 1):
        out.append(x)
        x = x * int(_B) % (1 << 64)
    return np.array(out, dtype=np.uint64)


def _prefixes(a: np.ndarray) -> np.ndarray:
    """(m, L) uint64 ids + 1 -> (m, L + 1) hashes of every prefix (P[:, i] = hash of the first i)."""
    m, L = a.shape
    p = np.zeros((m, L + 1), dtype=np.uint64)
    for i in range(L):
        p[:, i + 1] = p[:, i] * _B + a[:, i]
    return p


class _Table:
    """Sorted hashes and the trace index of each, for one length of the hashed windows."""

    def __init__(self) -> None:
        self.hashes = np.zeros(0, dtype=np.uint64)  # (N,) sorted
        self.at = np.zeros(0, dtype=np.int64)  # (N,) trace indexes

    def add(self, hashes: np.ndarray, at: np.ndarray) -> None:
        h, t = np.concatenate([self.hashes, hashes]), np.concatenate([self.at, at])
        order = np.argsort(h, kind="stable")
        self.hashes, self.at = h[order], t[order]

    def find_one(self, h: int) -> list[int]:
        """Trace indexes whose hash is h (one lookup: no array work)."""
        x = np.uint64(h)
        lo = int(np.searchsorted(self.hashes, x))
        if lo == len(self.hashes) or self.hashes[lo] != x:
            return []
        return self.at[lo:int(np.searchsorted(self.hashes, x, side="right"))].tolist()

    def find(self, queries: np.ndarray) -> np.ndarray:
        """Trace indexes whose hash is one of `queries`."""
        if not len(self.hashes):
            return np.zeros(0, dtype=np.int64)
        if len(queries) > 64:
            queries = np.sort(queries)  # in order: the binary searches walk the table once, cache-friendly
        lo = np.searchsorted(self.hashes, queries)
        hit = self.hashes[np.minimum(lo, len(self.hashes) - 1)] == queries
        if not hit.any():  # most lookups
            return np.zeros(0, dtype=np.int64)
        lo = lo[hit]
        n = np.searchsorted(self.hashes, queries[hit], side="right") - lo
        ends = np.cumsum(n)
        return self.at[np.repeat(lo - ends + n, n) + np.arange(int(ends[-1]))]


_NONE = _Table()


class NearbyIndex:
    """Hashes of the normal windows and of their one-event deletions, by length, for lookups."""

    def __init__(self) -> None:
        self._pw = _powers(8)
        self._own: dict[int, _Table] = {}  # window length -> the windows' hashes
        self._del: dict[int, _Table] = {}  # window length -> the hashes of their one-event deletions
        self._ids = np.zeros(0, dtype=np.uint64)  # the ids the windows have, + 1

    def _pow(self, n: int) -> np.ndarray:
        if n >= len(self._pw):
            self._pw = _powers(max(n, 2 * len(self._pw)))
        return self._pw

    def add(self, keys: Sequence[tuple[int, ...]], first: int) -> None:
        """Index windows whose trace indexes are first, first + 1, ..."""
        by_len: dict[int, list[int]] = {}
        for j, k in enumerate(keys):
            by_len.setdefault(len(k), []).append(j)
        ids = set(int(i) for i in self._ids)
        for L, js in by_len.items():
            a = np.array([keys[j] for j in js], dtype=np.uint64).reshape(len(js), L) + np.uint64(1)  # (m, L)
            ids.update(np.unique(a).tolist())
            at = np.asarray(js, dtype=np.int64) + first  # (m,)
            p = _prefixes(a)  # (m, L + 1)
            self._own.setdefault(L, _Table()).add(p[:, L], at)
            if L:
                self._del.setdefault(L, _Table()).add(self._deletions(p, L).ravel(), np.repeat(at, L))  # (m * L,)
        self._ids = np.array(sorted(ids), dtype=np.uint64)

    def _deletions(self, p: np.ndarray, n: int) -> np.ndarray:
        """(m, n + 1) prefix hashes -> (m, n) hashes with event i deleted:
        P[i] * B^(n-1-i) + (P[n] - P[i+1] * B^(n-1-i))."""
        pw = self._pow(n)
        i = np.arange(n)
        scale = pw[n - 1 - i]  # (n,)
        return p[:, i] * scale + (p[:, n:n + 1] - p[:, i + 1] * scale)

    def nearest(self, key: tuple[int, ...], query: str, traces: Sequence[str], known: Mapping[tuple[int, ...], int],
                two: bool = True) -> tuple[int, np.ndarray]:
        """(d, trace indexes of normal windows at Indel distance d) for the smallest d in {1, 2}
        (in {1} unless `two`) that has any; (0, empty) when there is none. At d = 2 all of them
        (ascending); at d = 1 one of the longest ones. `key` is no normal window; `query` its
        encoding, `traces` the normal windows' (as aligned), `known` them as id tuples -> trace index."""
        n = len(key)
        h, prefix, mod, base = 0, [0], (1 << 64) - 1, int(_B)
        for i in key:  # the prefix hashes in Python ints: n steps, no per-step array overhead
            h = (h * base + int(i) + 1) & mod
            prefix.append(h)
        # distance 1: an alignment of one operation, so one neighbour of the longest kind says all
        # the scores need (a longer one first: its tail is the likelier); the shorter ones are the
        # window's deletions, looked up as they are
        for j in self._del.get(n + 1, _NONE).find_one(h):
            if Indel.distance(query, traces[j]) == 1:
                return 1, np.array([j], dtype=np.int64)
        for i in range(n):
            if i == 0 or key[i] != key[i - 1]:
                j = known.get(key[:i] + key[i + 1:])
                if j is not None:
                    return 1, np.array([j], dtype=np.int64)
        if not two:
            return 0, np.zeros(0, dtype=np.int64)
        pw = self._pow(n + 2)
        p = np.array(prefix, dtype=np.uint64)  # (n + 1,)
        dels = self._deletions(p[None, :], n)[0] if n else np.zeros(0, dtype=np.uint64)  # (n,)
        # distance 2: two-event deletions; shared one-event deletions; one-event insertions' deletions
        parts = [self._del.get(n, _NONE).find(dels)]
        if n >= 2 and n - 2 in self._own:
            i, j = np.triu_indices(n, 1)  # (k,) positions i < j deleted
            mid = p[j] - p[i + 1] * pw[j - i - 1]  # hash of key[i+1:j]
            dels2 = p[i] * pw[n - 2 - i] + mid * pw[n - 1 - j] + (p[n] - p[j + 1] * pw[n - 1 - j])
            parts.append(self._own[n - 2].find(dels2))
        if n + 2 in self._del:
            i = np.arange(n + 1)
            suffix = p[n] - p[i] * pw[n - i]  # (n + 1,) hash of key[i:]
            ins = (p[i][:, None] * _B + self._ids[None, :]) * pw[n - i][:, None] + suffix[:, None]  # (n + 1, V)
            parts.append(self._del[n + 2].find(ins.ravel()))
        found = self._verified(np.concatenate(parts), query, traces, 2)
        return (2 if len(found) else 0), found

    @staticmethod
    def _verified(cand: np.ndarray, query: str, traces: Sequence[str], d: int) -> np.ndarray:
        """The candidates really at distance d, ascending and distinct."""
        cand = np.unique(cand)
        if not len(cand):
            return cand
        dist = cdist([query], [traces[j] for j in cand.tolist()], scorer=Indel.distance, dtype=np.int64)[0]
        return cand[dist == d]
