"""Window scoring: (B, T) template ids -> per-event surprise -> per-window scores.

`window_example` turns one window into the model's (input, target) pair with the window rule of
logad.windows; training uses the same function, so what is trained is what is scored:
    first window  x = [BOS, e0 .. e_{n-2}]   y = [e0 .. e_{n-1}]            (every event scored)
    later windows x = [e_a .. e_{b-2}]       y = [e_{a+1} .. e_{b-1}], context targets -> IGNORE

Per window we compute (higher = more anomalous):
    mean_nll    mean negative log-likelihood of the scored events
    max_nll     the most surprising scored event
    ppl         exp(mean_nll)
    topk_miss   scored events outside the model's top-k next templates (DeepLog's rule, k = 9)
    unseen_rate share of scored events whose template is UNK or never occurred in training
    count_l1    L1 distance from the window's template-count vector to the nearest normal training
                window's (a count-vector lookup: catches anomalies that differ only in counts)
    count_excess the same, counting only templates the window has MORE of than the nearest normal
                window: zero for any prefix of a normal trace, so it is safe on sessions that may
                have been cut short (idle timeout, end of input) and monotone as a session grows
    count_tail  count_l1 made tolerant of log instability: -log10 of the probability that random
                per-event drops and duplicates (rate rho = 2R/3 for an instability R: a swap leaves
                counts alone) turn some normal window u into one at this L1 distance d, i.e.
                -log10 max_u P(K >= d), K ~ Poisson(rho * |u|). One lost line in a long window is
                expected; two in a four-line window is not. A template never seen in normal
                training is never explained by instability (TAIL_CAP). With R = 0 it is the exact
                lookup (0 on a match, TAIL_CAP otherwise)
    edit_tail, block_run  order-aware, instability-tolerant alignment to the nearest normal windows
                (logad.alignment)
    edit_ops    insert/delete operations to the nearest normal window (feeds the online instability
                estimate, logad.instability; a score like count_l1, not enabled by default)
The rate R of the tails is set per batch (set_instability): the detector moves it with its online
estimate of the source's instability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from logad.alignment import EXACT_TAIL, TraceIndex, neg_log10, tail_table
from logad.model import IGNORE, NextTokenTransformer, distinct_prefix_logits
from logad.records import Window

METHODS = ("mean_nll", "max_nll", "ppl", "topk_miss", "unseen_rate", "count_l1", "count_excess", "count_tail",
           "edit_tail", "block_run", "edit_ops")
_SCORE_KEYS = METHODS  # the order of the per-window score dicts
TAIL_CAP = 300.0  # -log10 of probabilities below float64's range (and of "impossible": rho = 0)


def window_example(ids: Sequence[int], n_context: int, bos: int) -> tuple[list[int], list[int]]:
    """(x, y) of one window; y holds IGNORE where the event is context only."""
    ids = list(ids)
    if n_context == 0:
        return [bos] + ids[:-1], ids
    x, y = ids[:-1], ids[1:]
    return x, [IGNORE] * (n_context - 1) + y[n_context - 1:]


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(B, T) long tensor of the rows right-padded with `value` to the longest (one tensor built from
    padded lists, not one copy per row)."""
    T = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (T - len(r)) for r in rows], dtype=torch.long)


def collate(examples: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example: (B, T) inputs and (B, T) targets (IGNORE on padding)."""
    return pad_rows([x for x, _ in examples], pad), pad_rows([y for _, y in examples], IGNORE)


@dataclass(frozen=True)
class Reference:
    """What the detector knows of normal training data besides the model weights."""

    seen: torch.Tensor  # (V,) bool: template occurred in a normal training session
    counts: torch.Tensor  # (M, V) float32: unique count vectors of normal training windows
    traces: torch.Tensor  # (N, L) int32: distinct normal training windows, right-padded with -1

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"seen": self.seen.to(torch.uint8), "counts": self.counts, "traces": self.traces}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> Reference:
        return cls(seen=t["seen"].bool(), counts=t["counts"].float(), traces=t["traces"].to(torch.int32))

    def trace_list(self) -> list[list[int]]:
        return [[i for i in row if i >= 0] for row in self.traces.tolist()]


def count_vectors(windows: Sequence[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """(N, V) template counts of each id list."""
    out = torch.zeros(len(windows), vocab_size)
    for i, ids in enumerate(windows):
        if ids:
            out[i].index_add_(0, torch.tensor(list(ids), dtype=torch.long), torch.ones(len(ids)))
    return out


def build_reference(train_windows: Sequence[Sequence[int]], vocab_size: int, unk: int) -> Reference:
    counts = torch.unique(count_vectors(train_windows, vocab_size), dim=0)
    distinct = list(dict.fromkeys(tuple(w) for w in train_windows))
    traces = torch.full((len(distinct), max((len(w) for w in distinct), default=1)), -1, dtype=torch.int32)
    for i, w in enumerate(distinct):
        traces[i, : len(w)] = torch.tensor(w, dtype=torch.int32)
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    for ids in train_windows:
        seen[list(ids)] = True
    seen[unk] = False
    return Reference(seen=seen, counts=counts, traces=traces)


@dataclass(frozen=True)
class EventDetail:
    index: int  # position of the event in its window's ids (add Window.start for the session index)
    template_id: int
    prob: float  # the model's probability of this template at this position
    top: tuple[tuple[int, float], ...]  # the model's top expected (template id, prob)


class WindowScorer:
    """Scores batches of windows with one model; pure function of (model, reference, windows).
    `extend_reference` adds normal windows at run time (count vectors and traces)."""

    def __init__(self, model: NextTokenTransformer, reference: Reference, bos: int, pad: int,
                 topk: int = 9, device: torch.device | str = "cpu", n_details: int = 3,
                 instability: float = 0.0) -> None:
        self.model = model.eval()
        self.reference = reference
        self.bos, self.pad, self.topk, self.n_details = bos, pad, topk, n_details
        self.device = torch.device(device)
        self._set_ref_counts(reference.counts.to(self.device))
        self._traces = self._trace_index(reference.trace_list())
        self._seen = reference.seen.to(self.device)
        self.set_instability(instability)

    def _trace_index(self, traces: list[list[int]]):
        return TraceIndex(traces, 0.0, TAIL_CAP)

    def extend_reference(self, windows: Sequence[Sequence[int]], unk: int) -> None:
        """More normal windows, as build_reference would have taken them: their count vectors, their
        traces, their templates seen (UNK never)."""
        counts = count_vectors(windows, self._seen.numel()).to(self.device)  # (N, V)
        self._set_ref_counts(torch.unique(torch.cat([self._ref_counts, counts]), dim=0))  # (M', V)
        self._seen = self._seen | (counts.sum(0) > 0)  # (V,) a new tensor: the Reference's stays as loaded
        self._seen[unk] = False
        self._traces.extend(windows)
        self.set_instability(self.instability)

    def set_instability(self, instability: float) -> None:
        """The rate R that count_tail and edit_tail tolerate (the detector moves it with its online
        estimate of the source's instability, logad.instability)."""
        if not 0.0 <= instability < 1.0:
            raise ValueError(f"instability must be in [0, 1), got {instability}")
        self.instability = instability
        # drops + duplicates change counts: 2/3 of the ops, per event of the normal window
        self._count_table = tail_table(2.0 * instability / 3.0)
        self._traces.set_instability(instability)

    def _set_ref_counts(self, counts: torch.Tensor) -> None:
        """The (M, V) distinct normal count vectors and what the count scores read of them."""
        self._ref_counts = counts
        self._ref_len = counts.sum(-1)  # (M,) events of each normal count vector
        self._ref_len_np = self._ref_len.long().cpu().numpy()  # (M,)
        self._ref_keys = {row.tobytes() for row in counts.to(torch.int16).cpu().numpy()}  # M exact keys

    def _log_probs(self, windows: Sequence[tuple[Sequence[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, V) log-probabilities of the next template and (B, T) targets (IGNORE: not scored)."""
        examples = [window_example(ids, ctx, self.bos) for ids, ctx in windows]
        y = pad_rows([y for _, y in examples], IGNORE)  # (B, T)
        logits, leaf = distinct_prefix_logits(self.model, [x for x, _ in examples], self.pad, self.device)
        logp = F.log_softmax(logits, dim=-1)  # (N, T, V) per distinct leaf
        return logp[torch.tensor(leaf, device=self.device)], y.to(self.device)  # (B, T, V), (B, T)

    @torch.inference_mode()
    def score_ids(self, windows: Sequence[tuple[Sequence[int], int]], details: bool = False):
        """windows: (ids, n_context) pairs -> (list of score dicts, list of surprising-event lists)."""
        if not windows:
            return [], []
        logp, y = self._log_probs(windows)  # (B, T, V), (B, T)
        mask = y != IGNORE  # (B, T) scored positions
        tgt = y.clamp(min=0)  # (B, T)
        tgt_logp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T)
        nll = (-tgt_logp).masked_fill(~mask, 0.0)  # (B, T)
        rank = (logp > tgt_logp.unsqueeze(-1)).sum(-1)  # (B, T) templates ranked above the target
        miss = (rank >= self.topk) & mask  # (B, T)
        unseen = (~self._seen[tgt]) & mask  # (B, T)
        n = mask.sum(-1).clamp(min=1).float()  # (B,)
        mean_nll = nll.sum(-1) / n
        max_nll = nll.max(-1).values
        ids = [w for w, _ in windows]
        counts = self._count_vectors(ids)  # (B, V)
        novel = (counts[:, ~self._seen] > 0).any(-1)  # (B,) a template no normal window has
        count_l1, count_excess, count_tail = self._count_scores(counts, novel)  # 3 x (B,)
        edit_tail, block_run, edit_ops = self._traces.scores(ids, novel.tolist())
        # One transfer per score (not one float() per window and score): the per-window loop below
        # only builds dicts.
        cols = [t.tolist() for t in (mean_nll, max_nll, torch.exp(mean_nll.clamp(max=50)), miss.sum(-1).float(),
                                     unseen.sum(-1) / n, count_l1, count_excess, count_tail)] + [edit_tail, block_run, edit_ops]
        scores = [dict(zip(_SCORE_KEYS, row)) for row in zip(*cols)]
        surprising = self._details(windows, logp, nll, mask, tgt, tgt_logp) if details else [[] for _ in windows]
        return scores, surprising

    def _details(self, windows, logp, nll, mask, tgt, tgt_logp) -> list[list[EventDetail]]:
        """Per window, its most surprising scored events with the model's top expected templates."""
        surprising: list[list[EventDetail]] = [[] for _ in windows]
        k = min(self.n_details, nll.size(1))
        order = torch.argsort(nll, dim=-1, descending=True)[:, :k]  # (B, k) most surprising positions
        rows = torch.arange(len(windows), device=nll.device).unsqueeze(-1)  # (B, 1)
        top = torch.topk(logp[rows, order], k=min(3, logp.size(-1)), dim=-1)  # (B, k, 3) expected templates
        order_l, mask_l, tgt_l = order.tolist(), mask[rows, order].tolist(), tgt[rows, order].tolist()
        prob_l = tgt_logp[rows, order].exp().tolist()
        top_p, top_i = top.values.exp().tolist(), top.indices.tolist()
        for b, (_, ctx) in enumerate(windows):
            for j, t in enumerate(order_l[b]):
                if not mask_l[b][j]:
                    continue
                surprising[b].append(EventDetail(
                    index=t if ctx == 0 else t + 1, template_id=tgt_l[b][j], prob=prob_l[b][j],
                    top=tuple(zip(top_i[b][j], top_p[b][j])),
                ))
        return surprising

    def _count_scores(self, counts: torch.Tensor, novel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, V) counts -> (count_l1, count_excess, count_tail), each (B,). A window with the counts
        of a normal window is at L1 0 from it, with P(K >= 0) = 1: its scores are known without the
        (B, M) distance matrix, which only the other windows take."""
        if not len(self._ref_counts):
            total = counts.sum(-1)  # (B,)
            return total, total, torch.full_like(total, TAIL_CAP)
        keys = counts.to(torch.int16).cpu().numpy()  # (B, V) exact small counts, one bytes key per row
        known = self._ref_keys
        miss = [b for b in range(len(keys)) if keys[b].tobytes() not in known]
        if len(miss) == len(keys):
            return self._count_scores_matrix(counts, novel)
        zero = torch.zeros(len(keys), device=counts.device)  # (B,)
        l1, excess, tail = zero, zero.clone(), torch.full_like(zero, EXACT_TAIL)
        if miss:
            rows = torch.tensor(miss, device=counts.device)
            l1[rows], excess[rows], tail[rows] = self._count_scores_matrix(counts[rows], novel[rows])
        return l1, excess, tail.masked_fill(novel, TAIL_CAP)

    def _count_scores_matrix(self, counts: torch.Tensor, novel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """_count_scores of windows by one (B, M) distance matrix to every normal count vector."""
        dist = torch.cdist(counts, self._ref_counts, p=1).round()  # (B, M) L1 to each normal window
        # what the window has more of minus what it lacks sums to |q| - |u|; both sum to the L1 distance
        excess = (dist + counts.sum(-1, keepdim=True) - self._ref_len) / 2  # (B, M)
        d = dist.long().cpu().numpy()  # (B, M)
        p = self._count_table.lookup(np.broadcast_to(self._ref_len_np, d.shape), d)  # (B, M) P(K >= d_u)
        # Drops and duplicates only change counts of templates already there: a template no normal
        # window has is never explained by instability.
        tail = neg_log10(torch.from_numpy(p.max(-1)), TAIL_CAP).float().to(self.device)  # (B,)
        return dist.min(-1).values, excess.min(-1).values, tail.masked_fill(novel, TAIL_CAP)

    def _count_vectors(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, V) template counts of each id list, in one scatter (padding goes to a dropped column)."""
        V = self._seen.numel()
        idx = pad_rows(ids, V)  # (B, L)
        counts = torch.zeros(len(ids), V + 1)
        counts.scatter_add_(1, idx, torch.ones(idx.shape))
        return counts[:, :V].to(self.device)

    def score(self, windows: Sequence[Window], details: bool = False):
        return self.score_ids([(w.ids, w.n_context) for w in windows], details=details)
