"""Nearest normal trace by alignment: order-aware scores that tolerate log instability.

Count scores (logad.scoring) cannot see order: a session whose sub-procedures ran in the wrong order
has the counts of a normal one. Exact-sequence lookup sees order but fails on every dropped,
duplicated or swapped line. These two scores sit in between. A window (its template ids) is aligned
against every distinct normal training window with insertions and deletions only (Indel distance,
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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rapidfuzz.distance import Indel
from rapidfuzz.process import cdist

BLOCK_SLACK = 0  # block_run looks at normal windows this many operations from the nearest (see above)
BLOCK_CANDIDATES = 16  # ... and at most this many of them (the alignments are per pair, in Python)
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


class TraceIndex:
    """The distinct normal training windows as strings, and the order-aware scores against them."""

    def __init__(self, traces: Sequence[Sequence[int]], instability: float, tail_cap: float) -> None:
        self.traces = [encode(t) for t in dict.fromkeys(tuple(t) for t in traces)]
        self._lengths = torch.tensor([max(len(t), 1) for t in self.traces], dtype=torch.float64)  # (M,)
        self.tail_cap = tail_cap
        self.set_instability(instability)

    def set_instability(self, instability: float) -> None:
        """The rate R edit_tail tolerates (the detector moves it with its online estimate)."""
        self._lambda = (4.0 * instability / 3.0) * self._lengths  # (M,) expected insert/delete operations

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
        queries = [encode(w) for w in windows]
        dist = cdist(queries, self.traces, scorer=Indel.distance, dtype=np.int32)  # (B, M)
        d = torch.from_numpy(dist.astype(np.float64))  # (B, M)
        lam = self._lambda.unsqueeze(0).expand_as(d)  # (B, M)
        p = torch.where(d > 0, torch.special.gammainc(d.clamp(min=1.0), lam), torch.ones_like(d))
        tail = (-torch.log10(p.max(-1).values.clamp(min=1e-300))).clamp(max=self.tail_cap)  # (B,)
        tails = [self.tail_cap if nv else float(t) for t, nv in zip(tail.tolist(), novel)]
        blocks = [float(self._block_run(q, row)) for q, row in zip(queries, dist)]
        return tails, blocks, dist.min(1).astype(np.float64).tolist()

    def _block_run(self, query: str, row: np.ndarray) -> int:
        """min over the nearest normal traces of the longest edit run; stops at the first run <= 1
        (a normal-looking window usually ends there, at its nearest trace)."""
        if row.min() == 0:
            return 0
        near = np.flatnonzero(row <= row.min() + BLOCK_SLACK)
        best = None
        for j in near[np.argsort(row[near], kind="stable")][:BLOCK_CANDIDATES]:
            run = longest_run(self.traces[j], query)
            best = run if best is None else min(best, run)
            if best <= 1:
                break
        return int(best)
