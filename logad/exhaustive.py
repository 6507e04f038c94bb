"""The exhaustive scorer: every window against every normal window, one plain forward pass per batch.

What the indexed search of logad.alignment and the count scores of logad.scoring must equal: the
tests hold the fast paths to it on seeded random windows and references, and bench/scorer.py runs it
beside them as the same-run baseline. Not used to score in production.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz.distance import Indel
from rapidfuzz.process import cdist

from logad.alignment import BLOCK_SLACK, block_run, encode, neg_log10, poisson_sf
from logad.model import autocast
from logad.scoring import TAIL_CAP, WindowScorer, collate, window_example


class ExhaustiveTraceIndex:
    """TraceIndex's scores from the Indel distance of every (window, normal window) pair."""

    def __init__(self, traces: Sequence[Sequence[int]], instability: float, tail_cap: float) -> None:
        self.traces: list[str] = []
        self.tail_cap = tail_cap
        self.extend(traces)
        self.set_instability(instability)

    def extend(self, traces: Sequence[Sequence[int]]) -> None:
        known = set(self.traces)
        self.traces += [s for s in dict.fromkeys(encode(t) for t in traces) if s not in known]
        self._lengths = torch.tensor([max(len(t), 1) for t in self.traces], dtype=torch.float64)  # (M,)
        if hasattr(self, "instability"):
            self.set_instability(self.instability)

    def set_instability(self, instability: float) -> None:
        self.instability = instability
        self._lambda = (4.0 * instability / 3.0) * self._lengths  # (M,) expected insert/delete operations

    def scores(self, windows: Sequence[Sequence[int]],
               novel: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
        if not windows:
            return [], [], []
        if not self.traces:
            n = [float(max(len(w), 1)) for w in windows]
            return [self.tail_cap] * len(windows), n, n
        queries = [encode(w) for w in windows]
        dist = cdist(queries, self.traces, scorer=Indel.distance, dtype=np.int32)  # (B, M)
        d = torch.from_numpy(dist.astype(np.float64))  # (B, M)
        p = poisson_sf(d, self._lambda.unsqueeze(0).expand_as(d))  # (B, M)
        tail = neg_log10(p.max(-1).values, self.tail_cap)  # (B,)
        tails = [self.tail_cap if nv else float(t) for t, nv in zip(tail.tolist(), novel)]
        blocks = []
        for q, row in zip(queries, dist):
            near = np.flatnonzero(row <= row.min() + BLOCK_SLACK)
            near = near[np.argsort(row[near], kind="stable")]  # by distance, then index
            blocks.append(0.0 if row.min() == 0 else float(block_run(self.traces, q, near.tolist())))
        return tails, blocks, dist.min(1).astype(np.float64).tolist()


class ExhaustiveWindowScorer(WindowScorer):
    """WindowScorer with a (B, M) incomplete gamma per count score, ExhaustiveTraceIndex, and one
    forward pass over the padded batch (every window computed, repeats and prefixes included)."""

    def _trace_index(self, traces: list[list[int]]) -> ExhaustiveTraceIndex:
        return ExhaustiveTraceIndex(traces, 0.0, TAIL_CAP)

    def _log_probs(self, windows: Sequence[tuple[Sequence[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = collate([window_example(ids, ctx, self.bos) for ids, ctx in windows], self.pad)
        x, y = x.to(self.device), y.to(self.device)  # (B, T)
        with autocast(self.device):
            logits, _ = self.model(x)  # (B, T, V)
        return F.log_softmax(logits.float(), dim=-1), y

    def _count_scores(self, counts: torch.Tensor, novel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not len(self._ref_counts):
            total = counts.sum(-1)  # (B,)
            return total, total, torch.full_like(total, TAIL_CAP)
        dist = torch.cdist(counts, self._ref_counts, p=1).round()  # (B, M) L1 to each normal window
        lam = (2.0 * self.instability / 3.0) * self._ref_counts.sum(-1).clamp(min=1.0).double()  # (M,)
        p = poisson_sf(dist.double(), lam.unsqueeze(0).expand_as(dist))  # (B, M)
        tail = neg_log10(p.max(-1).values, TAIL_CAP).float()  # (B,) the most plausible origin
        M, V = self._ref_counts.shape
        step = max(1, (1 << 22) // max(1, M * V))  # chunks: (b, M, V) stays small
        excess = torch.cat([(c.unsqueeze(1) - self._ref_counts.unsqueeze(0)).clamp(min=0).sum(-1).min(-1).values
                            for c in counts.split(step)])  # (B,)
        return dist.min(-1).values, excess, tail.masked_fill(novel, TAIL_CAP)
