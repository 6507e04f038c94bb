"""Nearest normal trace by alignment: order-aware scores that tolerate log instability.

Count scores (logad.scoring) cannot see order: a session whose sub-procedures ran in the wrong order
has the counts of a normal one. Exact-sequence lookup sees order but fails on every dropped,
duplicated or swapped line. These two scores sit in between. A window (its template ids) is aligned
against the distinct normal training windows with insertions and deletions only (Indel distance,
rapidfuzz's bit-parallel C implementation):

    edit_ops   the insert/delete operations to the nearest normal window (no tolerance; it feeds
               the online instability estimate, logad.instability)
    edit_tail  -log10 max_u P(K >= d_u), K ~ Poisson(4R/3 * |u|): the d_u insert/delete operations
               to normal window u, as many as random instability at rate R would make (a drop or a
               duplicate is one operation, a swap with the successor two). A template no normal
               window has is never explained (TAIL_CAP), as in count_tail.
    block_run  the longest run of consecutive inserted or deleted events in the alignment to the
               nearest normal windows (the shortest run among those at the smallest distance):
               instability touches events independently, so runs of 2+ are rare under it (two
               adjacent ops), while failures add, drop or move whole sub-procedures. Only the
               nearest: a farther window always "explains" a block as scattered edits, but needs
               more of them than instability makes (an OpenStack reboot — destroyed, rebooted,
               started — inserted 3 operations from one normal trace, 5 scattered from another).

Both read a missing event as evidence, so both apply to whole traces only (COMPLETE_ONLY).

The search is indexed, and exact. A window that is itself a normal window is at distance 0 with
P(K >= 0) = 1, the likeliest tail there is: one set lookup, whatever the reference's size. A window
within two inserts or deletes of a normal window (events dropped, repeated or moved: what
instability makes) is answered by hash lookups too (logad.nearby: the normal windows at distance 1,
else all of them at distance 2). No other normal window of length L is nearer than
max(|L - n|, d + 1) operations (d + 2 when that and L + n differ in parity: an Indel distance has
the parity of the lengths' sum), so when no length's tail at that distance beats theirs, that is the
answer (TraceIndex._near). For the others: every insert or delete changes one template count by
one, so the L1 distance between template-count vectors is a lower bound of the Indel distance;
normal windows with the same count vector (hence the same length) form one group with one bound. A
window is aligned with the group of its smallest bound first; the distance d and the tail P found
there then rule out every group whose bound exceeds d and whose best possible tail P(bound) does not
exceed P (P(K >= d) falls as d grows). The remaining groups are aligned in growing rounds, likeliest
possible tail first, each round's d and P ruling out more of the rest: this part's cost grows with
the normal windows near the window's counts. logad.exhaustive keeps the every-pair search the tests
hold this one equal to.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from rapidfuzz.distance import Indel
from rapidfuzz.process import cdist

from logad.nearby import NearbyIndex

BLOCK_SLACK = 0  # block_run looks at normal windows this many operations from the nearest (see above)
BLOCK_CANDIDATES = 16  # ... and at most this many of them (the alignments are per pair, in Python)
ROUND_TRACES = 64  # the index's first round of alignments per window takes about this many normal windows
DENSE_MAX = 4000  # up to this many normal windows one every-pair rapidfuzz call per batch costs less than the index
_BASE = 0x100  # template id -> one character (ids are small ints; any code point works for rapidfuzz)


def encode(ids: Sequence[int]) -> str:
    """A window as a string of one character per event (what rapidfuzz aligns)."""
    return "".join(chr(_BASE + int(i)) for i in ids)


def longest_run(normal: str, window: str) -> int:
    """Longest run of consecutive deletions (from `normal`) or insertions (into it) in one optimal
    Indel alignment; 0 for identical strings."""
    best = cur = 0
    last: tuple[str, int] | None = None
    for op in Indel.editops(normal, window):
        pos = op.src_pos if op.tag == "delete" else op.dest_pos
        cur = cur + 1 if last is not None and last[0] == op.tag and pos == last[1] + 1 else 1
        best = max(best, cur)
        last = (op.tag, pos)
    return best


def poisson_sf(d: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """P(K >= d), K ~ Poisson(lam), elementwise on float64: the regularised lower incomplete gamma
    P(d, lam) for d >= 1, and 1 for d = 0."""
    return torch.where(d > 0, torch.special.gammainc(d.clamp(min=1.0), lam), torch.ones_like(d))


def neg_log10(p: torch.Tensor, cap: float) -> torch.Tensor:
    """-log10 of probabilities, capped (below float64's range, or exactly 0, reads as `cap`)."""
    return (-torch.log10(p.clamp(min=1e-300))).clamp(max=cap)


def block_run(traces: Sequence[str], query: str, nearest: Sequence[int]) -> int:
    """min over the nearest normal traces (trace indexes by distance, then index) of the longest edit run; stops
    at the first run <= 1 (a normal-looking window usually ends there, at its nearest trace)."""
    best = None
    for j in nearest[:BLOCK_CANDIDATES]:
        run = longest_run(traces[j], query)
        best = run if best is None else min(best, run)
        if best <= 1:
            break
    return int(best)


class TailTable:
    """P(K >= d), K ~ Poisson(rate * max(length, 1)), for every length and distance seen so far:
    (L, D) float64, grown on demand. Lookups instead of one incomplete gamma per pair."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tab = torch.ones(1, 1, dtype=torch.float64)  # (L, D)

    def lookup(self, lengths: np.ndarray, d: np.ndarray) -> np.ndarray:
        """lengths, d: int arrays of one shape -> P(K >= d) for Poisson(rate * max(length, 1))."""
        L, D = self._tab.shape
        if lengths.size and (lengths.max() >= L or d.max() >= D):
            L, D = max(L, int(lengths.max()) + 1), max(D, int(d.max()) + 1)
            # the same float64 arithmetic as one lambda per normal window: equal values, not close ones
            lam = self.rate * torch.arange(L, dtype=torch.float64).clamp(min=1.0)  # (L,)
            dd = torch.arange(D, dtype=torch.float64)  # (D,)
            self._tab = poisson_sf(dd.unsqueeze(0).expand(L, D), lam.unsqueeze(1).expand(L, D))
        return self._tab.numpy()[lengths, d]


# -log10 P(K >= 0) as neg_log10 writes it (-0.0): the tail of a window at distance 0 from a normal one
EXACT_TAIL = float(neg_log10(torch.ones(1, dtype=torch.float64), 1.0)[0])


@functools.lru_cache(maxsize=64)
def tail_table(rate: float) -> TailTable:
    """The table of one rate, shared (the detector switches between a few levels' rates per batch)."""
    return TailTable(rate)


class TraceIndex:
    """The distinct normal training windows as strings, grouped by count vector, and the order-aware
    scores against them (the indexed exact search above). `extend` adds normal windows at run time."""

    def __init__(self, traces: Sequence[Sequence[int]], instability: float, tail_cap: float) -> None:
        self.tail_cap = tail_cap
        self.traces: list[str] = []  # distinct, in the order first given (the exhaustive search's order)
        self._known: dict[tuple[int, ...], int] = {}  # the distinct normal windows -> their trace index
        self._group_of: dict[tuple[int, ...], int] = {}  # sorted (id, count) pairs -> group
        self._members: list[list[int]] = []  # per group: its trace indexes, ascending
        self._group_counts: list[dict[int, int]] = []
        self._gc = np.zeros((0, 1), dtype=np.float32)  # (G, V) count vector of each group
        self._glen = np.zeros(0, dtype=np.int64)  # (G,) length of the group's windows
        self._nearby = NearbyIndex()  # the normal windows within two operations of a window, by lookups
        self._lengths = np.zeros(0, dtype=np.int64)
        self._near_tails: dict[tuple[float, int, int], tuple[float, float]] = {}  # (rate, length, d) -> P, tail
        self._far_tails: dict[tuple[float, int, int], float] = {}  # (rate, n, d) -> _far_tail(n, d)
        self.extend(traces)
        self.set_instability(instability)

    def extend(self, traces: Sequence[Sequence[int]]) -> int:
        """Add normal windows (duplicates of known ones are skipped); returns how many were new."""
        new: list[tuple[int, ...]] = []  # the windows added, as id tuples
        for t in traces:
            key = tuple(int(i) for i in t)
            if key in self._known:
                continue
            self._known[key] = len(self.traces)
            counts: dict[int, int] = {}
            for i in key:
                counts[i] = counts.get(i, 0) + 1
            gkey = tuple(sorted(counts.items()))
            g = self._group_of.get(gkey)
            if g is None:
                g = self._group_of[gkey] = len(self._members)
                self._members.append([])
                self._group_counts.append(counts)
            self._members[g].append(len(self.traces))
            self.traces.append(encode(key))
            new.append(key)
        if new:
            V = max((max(c, default=-1) for c in self._group_counts), default=-1) + 1
            self._gc = np.zeros((len(self._members), max(V, 1)), dtype=np.float32)  # (G, V)
            for g, counts in enumerate(self._group_counts):
                self._gc[g, list(counts)] = list(counts.values())
            self._glen = self._gc.sum(1).astype(np.int64)  # (G,)
            # (V + 1, G) counts by id, and a row of zeros for padding and ids no normal window has;
            # in the smallest int type that holds them (the bound's min/sum is memory-bound)
            top = int(self._gc.max(initial=0))
            ct = np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.int64
            self._gct = np.concatenate([self._gc.T, np.zeros((1, len(self._members)), dtype=np.float32)]).astype(ct)
            self._group_strings = [[self.traces[j] for j in m] for m in self._members]
            self._members_np = [np.asarray(m, dtype=np.int64) for m in self._members]
            self._gsize = np.array([len(m) for m in self._members], dtype=np.int64)  # (G,) windows per group
            self._trace_len = np.array([len(t) for t in self.traces], dtype=np.int64)  # (M,)
            self._lengths = np.unique(self._trace_len)  # the lengths the normal windows have
            self._far_tails.clear()
            self._nearby.add(new, len(self.traces) - len(new))
        return len(new)

    def set_instability(self, instability: float) -> None:
        """The rate R edit_tail tolerates (the detector moves it with its online estimate)."""
        self.instability = instability
        self._table = tail_table(4.0 * instability / 3.0)  # expected insert/delete operations per event

    def _bounds(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, G) L1 distances from each window's count vector to each group's: Indel lower bounds.
        Ids no normal window has count against every group (they are all extra).

        L1(q, u) = |q| + |u| - 2 sum_i min(q_i, u_i), and the sum runs over the few ids a window
        has (K), not over the vocabulary: (B, K, G) work instead of a (B, G, V) distance matrix."""
        V = self._gc.shape[1]
        B = len(windows)
        rows = []  # per window: its distinct known ids and their counts
        for w in windows:
            ids, counts = np.unique(np.asarray(w, dtype=np.int64), return_counts=True)
            rows.append((ids, counts))
        K = max((len(ids) for ids, _ in rows), default=0) or 1
        qi = np.full((B, K), V, dtype=np.int64)  # (B, K) ids; V: padding, and any id no normal window has
        qv = np.zeros((B, K), dtype=np.int64)  # (B, K) their counts
        extra = np.zeros(B, dtype=np.int64)  # (B,) events whose id no normal window has
        for b, (ids, counts) in enumerate(rows):
            known = ids < V
            n = int(known.sum())
            qi[b, :n], qv[b, :n] = ids[known], counts[known]
            extra[b] = int(counts[~known].sum())
        ct = self._gct.dtype
        # a count above the type's range meets group counts within it: min() is the same clipped
        qc = np.minimum(qv, np.iinfo(ct).max).astype(ct)[:, :, None]  # (B, K, 1)
        common = np.minimum(self._gct[qi], qc).sum(1, dtype=np.int64)  # (B, G) sum_i min(q_i, u_i)
        return qv.sum(1, keepdims=True) + self._glen[None, :] - 2 * common + extra[:, None]  # (B, G)

    def scores(self, windows: Sequence[Sequence[int]],
               novel: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
        """(edit_tail, block_run, edit_ops) per window; `novel`: the window has a template no normal
        window has. edit_ops is the Indel distance to the nearest normal window (what the online
        instability estimate reads, logad.instability)."""
        if not windows:
            return [], [], []
        if not self.traces:
            n = [float(max(len(w), 1)) for w in windows]
            return [self.tail_cap] * len(windows), n, n
        # A normal window itself is at distance 0, with P(K >= 0) = 1, the likeliest tail any normal
        # window can give: nothing else to search (a normal-looking stream is mostly these).
        known = self._known
        keys = [w if type(w) is tuple else tuple(int(i) for i in w) for w in windows]
        tails, blocks, ops = [EXACT_TAIL] * len(windows), [0.0] * len(windows), [0.0] * len(windows)
        # A window within two inserts or deletes of a normal window (an event dropped, repeated or
        # moved: the commonest instability) is found by lookups too, whatever the reference's size.
        rest = []
        for b, key in enumerate(keys):
            if key in known:
                continue
            one = self._near(key, bool(novel[b]))
            if one is None:
                rest.append(b)
            else:
                tails[b], blocks[b], ops[b] = one
        if rest:
            t, k, o = self._search([windows[b] for b in rest], [novel[b] for b in rest])
            for b, tb, kb, ob in zip(rest, t, k, o):
                tails[b], blocks[b], ops[b] = tb, kb, ob
        return [self.tail_cap if nv else t for t, nv in zip(tails, novel)], blocks, ops

    def _near(self, key: tuple[int, ...], novel: bool) -> tuple[float, float, float] | None:
        """(edit_tail, block_run, edit_ops) of a window that is no normal window, when one is within
        two operations of it (logad.nearby: lookups); None when none is, or when a farther one might
        give a likelier tail.

        At distance d in {1, 2} every normal window at d is known, hence edit_ops, block_run (over
        them, by trace index) and their likeliest tail (the longest one's). Every other normal window
        of length L is at least max(|L - n|, d + 1) operations away, d + 2 when d + 1 and L + n differ
        in parity (an Indel distance has the parity of the lengths' sum): when no length's tail at
        that distance beats theirs, the search has nothing to add."""
        q = encode(key)
        # two operations by lookups where the search would cost more (the dense path's every pair
        # costs less below DENSE_MAX normal windows)
        d, near = self._nearby.nearest(key, q, self.traces, self._known, two=len(self.traces) > DENSE_MAX)
        if not d:
            return None
        block = 1.0 if d == 1 else float(block_run(self.traces, q, near.tolist()))
        if novel:
            return self.tail_cap, block, float(d)
        p, tail = self._tail_at(int(self._trace_len[near].max()), d)
        return (tail, block, float(d)) if self._far_tail(len(key), d) <= p else None

    def _tail_at(self, length: int, d: int) -> tuple[float, float]:
        """P(K >= d) for a normal window of this length, and its edit_tail (cached per rate)."""
        key = (self._table.rate, length, d)
        got = self._near_tails.get(key)
        if got is None:
            p = self._table.lookup(np.array([length]), np.array([d]))  # (1,)
            got = self._near_tails[key] = (float(p[0]), float(neg_log10(torch.from_numpy(p), self.tail_cap)[0]))
        return got

    def _far_tail(self, n: int, d: int) -> float:
        """The likeliest tail a normal window more than d operations from a window of n events can
        give: max over the reference's lengths L of P(K >= its fewest operations) (cached per rate)."""
        key = (self._table.rate, n, d)
        got = self._far_tails.get(key)
        if got is None:
            L = self._lengths
            beyond = np.where((d + 1 + L + n) % 2 == 0, d + 1, d + 2)  # (len(L),) the next distance of L's parity
            got = self._far_tails[key] = float(self._table.lookup(L, np.maximum(np.abs(L - n), beyond)).max(initial=0.0))
        return got

    def _search(self, windows: Sequence[Sequence[int]],
                novel: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
        """scores() of windows that are not normal windows themselves."""
        B, G = len(windows), len(self._members)
        queries = [encode(w) for w in windows]
        if len(self.traces) <= DENSE_MAX:
            return self._dense(queries, novel)
        lb = self._bounds(windows)  # (B, G)
        first = lb.argmin(1)  # (B,) the group of each window's smallest bound
        gmin = np.full((B, G), -1, dtype=np.int64)  # (B, G) nearest distance in each aligned group (-1: not aligned)
        for g in np.unique(first):  # one rapidfuzz call per group over the windows that start there
            rows = np.flatnonzero(first == g)
            dist = cdist([queries[b] for b in rows], self._group_strings[g], scorer=Indel.distance, dtype=np.int64)
            gmin[rows, g] = dist.min(1)
        best_d = gmin[np.arange(B), first]  # (B,) an upper bound of the nearest distance
        best_p = self._table.lookup(self._glen[first], best_d)  # (B,) a lower bound of the likeliest tail
        upper = self._table.lookup(np.broadcast_to(self._glen, lb.shape), lb)  # (B, G) P at the bound
        # (B, G) groups that may still hold a nearer window or a likelier origin
        tail_open = (upper > best_p[:, None]) & ~np.asarray(novel, dtype=bool)[:, None]  # (B, G)
        todo = ((lb <= best_d[:, None] + BLOCK_SLACK) | tail_open) & (gmin < 0)
        todo[np.arange(B), first] = True  # aligned again below, with the rest (its distances are needed)
        tails, blocks, ops, maxp = [], [], [], []
        for b, q in enumerate(queries):
            # Rounds over the open groups, likeliest tail first (then nearest bound), one rapidfuzz
            # call each, growing: after each round the groups that can no longer beat the distance
            # or the tail found so far are dropped. A window far from every normal one has many
            # open groups at first, most of which the first rounds close. A novel window's tail is
            # the cap whatever the distances: only the distance bound keeps its groups open.
            groups = np.flatnonzero(todo[b])
            groups = groups[np.lexsort((lb[b, groups], -upper[b, groups]))]
            bd, bp = int(best_d[b]), 2.0 if novel[b] else float(best_p[b])
            p_max, size = float(best_p[b]), ROUND_TRACES
            d_parts, c_parts = [], []
            while len(groups):
                k = int(np.searchsorted(np.cumsum(self._gsize[groups]), size)) + 1
                take, groups = groups[:k], groups[k:]
                cand = np.concatenate([self._members_np[g] for g in take])  # trace indexes
                d = cdist([q], [self.traces[j] for j in cand], scorer=Indel.distance, dtype=np.int64)[0]
                starts = np.cumsum(self._gsize[take]) - self._gsize[take]
                p_max = max(p_max, float(self._table.lookup(self._glen[take], np.minimum.reduceat(d, starts)).max()))
                bd = min(bd, int(d.min()))
                d_parts.append(d)
                c_parts.append(cand)
                if len(groups):
                    if not novel[b]:
                        bp = p_max
                    groups = groups[(lb[b, groups] <= bd + BLOCK_SLACK) | (upper[b, groups] > bp)]
                size *= 4
            d, cand = np.concatenate(d_parts), np.concatenate(c_parts)
            maxp.append(p_max)
            dmin = int(d.min())
            ops.append(float(dmin))
            if dmin == 0:
                blocks.append(0.0)
                continue
            k = np.flatnonzero(d <= dmin + BLOCK_SLACK)
            near = cand[k[np.lexsort((cand[k], d[k]))]]  # by distance, then trace index
            blocks.append(float(block_run(self.traces, q, near.tolist())))
        tail = neg_log10(torch.tensor(maxp, dtype=torch.float64), self.tail_cap).tolist()  # (B,)
        tails = [self.tail_cap if nv else float(t) for t, nv in zip(tail, novel)]
        return tails, blocks, ops

    def _dense(self, queries: Sequence[str], novel: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
        """The same scores from every (window, normal window) distance: one C call per batch, tails
        from the table (small references, where the index's per-window work costs more)."""
        dist = cdist(queries, self.traces, scorer=Indel.distance, dtype=np.int64)  # (B, M)
        p = self._table.lookup(np.broadcast_to(self._trace_len, dist.shape), dist)  # (B, M)
        tail = neg_log10(torch.from_numpy(p.max(1)), self.tail_cap).tolist()  # (B,)
        blocks = []
        for q, row in zip(queries, dist):
            dmin = row.min()
            near = np.flatnonzero(row <= dmin + BLOCK_SLACK)
            near = near[np.argsort(row[near], kind="stable")]  # by distance, then trace index
            blocks.append(0.0 if dmin == 0 else float(block_run(self.traces, q, near.tolist())))
        tails = [self.tail_cap if nv else float(t) for t, nv in zip(tail, novel)]
        return tails, blocks, dist.min(1).astype(np.float64).tolist()
