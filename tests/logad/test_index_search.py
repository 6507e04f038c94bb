"""The indexed searches equal the exhaustive ones (logad.exhaustive) on seeded random windows and
references: alignment scores (edit_tail, block_run, edit_ops), count scores, the distinct-prefix
forward pass, and all of it after the reference is extended at run time. Distances, counts and runs
are equal exactly; tails to 1e-12 (torch's incomplete gamma rounds the same input differently by
its position in a tensor, in the last bit)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from logad import alignment
from logad.alignment import TraceIndex
from logad.exhaustive import ExhaustiveTraceIndex, ExhaustiveWindowScorer
from logad.model import ModelConfig, NextTokenTransformer, distinct_prefix_logits
from logad.scoring import TAIL_CAP, WindowScorer, build_reference

V, UNK, BOS, PAD = 14, 1, 2, 0


def perturb(rng: random.Random, w: list[int], rate: float) -> list[int]:
    """Drops, duplicates, swaps and the odd foreign template: windows near, and far from, the normal ones."""
    out: list[int] = []
    for i in w:
        r = rng.random()
        if r < rate:
            continue
        out += [i, i] if r < 2 * rate else [i]
        if rng.random() < rate / 2:
            out.append(rng.randrange(3, V + 2))  # V, V + 1: ids no normal window has
    if len(out) > 2 and rng.random() < rate * 3:
        k = rng.randrange(len(out) - 1)
        out[k], out[k + 1] = out[k + 1], out[k]
    return out or [rng.randrange(3, V)]


def world(seed: int, n_ref: int = 60, n_win: int = 120) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    procs = [[rng.randrange(3, V) for _ in range(rng.randrange(2, 6))] for _ in range(5)]  # sub-procedures
    refs = [sum((procs[rng.randrange(5)] for _ in range(rng.randrange(1, 6))), []) for _ in range(n_ref)]
    refs += [perturb(rng, r, 0.1) for r in refs[: n_ref // 2]]
    wins = [perturb(rng, rng.choice(refs), rng.choice([0.0, 0.02, 0.1, 0.3])) for _ in range(n_win)]
    return refs, wins + [list(r) for r in refs[:10]]


@pytest.fixture(params=["indexed", "dense"])
def search(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both paths of TraceIndex: the count-bound index and, for small references, every pair."""
    monkeypatch.setattr(alignment, "DENSE_MAX", 0 if request.param == "indexed" else 10**9)
    return request.param


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("instability", [0.0, 0.02, 0.1, 0.3])
def test_indexed_alignment_equals_exhaustive(seed: int, instability: float, search: str) -> None:
    refs, wins = world(seed)
    novel = [max(w) >= V for w in wins]
    fast = TraceIndex(refs, instability, TAIL_CAP).scores(wins, novel)
    slow = ExhaustiveTraceIndex(refs, instability, TAIL_CAP).scores(wins, novel)
    same(fast, slow)


def same(fast: tuple[list[float], ...], slow: tuple[list[float], ...]) -> None:
    """(edit_tail, block_run, edit_ops) lists: runs and operations exactly, tails to 1e-12."""
    assert fast[1:] == slow[1:]
    assert fast[0] == pytest.approx(slow[0], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_extending_the_index_equals_building_it_whole(seed: int, search: str) -> None:
    refs, wins = world(seed)
    novel = [False] * len(wins)
    grown = TraceIndex(refs[:20], 0.05, TAIL_CAP)
    assert grown.extend(refs[20:] + refs[:5]) == len({tuple(r) for r in refs}) - len({tuple(r) for r in refs[:20]})
    slow = ExhaustiveTraceIndex(refs, 0.05, TAIL_CAP)
    assert grown.traces == slow.traces
    same(grown.scores(wins, novel), slow.scores(wins, novel))


def scorers(refs: list[list[int]], instability: float) -> tuple[WindowScorer, WindowScorer]:
    torch.manual_seed(0)
    model = NextTokenTransformer(ModelConfig(vocab_size=V, block_size=64, n_layer=1, n_head=2, n_embd=16))
    ref = build_reference(in_vocab(refs), V, UNK)
    return (WindowScorer(model, ref, bos=BOS, pad=PAD, instability=instability),
            ExhaustiveWindowScorer(model, ref, bos=BOS, pad=PAD, instability=instability))


def in_vocab(ws: list[list[int]]) -> list[list[int]]:
    return [[i if i < V else UNK for i in w] for w in ws]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("instability", [0.0, 0.05])
def test_window_scorer_equals_exhaustive(seed: int, instability: float) -> None:
    refs, wins = world(seed)
    wins = in_vocab(wins)
    rng = random.Random(seed)
    batch = [(w, 0) for w in wins] + [(w, rng.randrange(1, len(w))) for w in wins if len(w) > 1]
    batch += [(w[: rng.randrange(1, len(w) + 1)], 0) for w in wins]  # prefixes: shared forward rows
    fast, slow = scorers(refs, instability)
    a, ev_a = fast.score_ids(batch, details=True)
    b, ev_b = slow.score_ids(batch, details=True)
    for x, y in zip(a, b):
        for k in x:
            exact = k not in ("mean_nll", "max_nll", "ppl", "count_tail", "edit_tail")
            assert x[k] == (y[k] if exact else pytest.approx(y[k], rel=1e-5, abs=1e-5)), k
    def picked(events):
        return [[(e.index, e.template_id) for e in s] for s in events]
    assert picked(ev_a) == picked(ev_b)


def test_extended_scorer_equals_one_built_with_the_extra_windows() -> None:
    refs, wins = world(3)
    wins = in_vocab(wins)
    fast, _ = scorers(refs[:30], 0.05)
    fast.extend_reference(in_vocab(refs[30:]), UNK)
    _, slow = scorers(refs, 0.05)
    batch = [(w, 0) for w in wins]
    keys = ("count_l1", "count_excess", "count_tail", "edit_tail", "block_run", "edit_ops")
    got = [s[k] for s in fast.score_ids(batch)[0] for k in keys]
    assert got == pytest.approx([s[k] for s in slow.score_ids(batch)[0] for k in keys], rel=1e-12)


def test_distinct_prefix_logits_match_each_input_alone() -> None:
    torch.manual_seed(0)
    model = NextTokenTransformer(ModelConfig(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    rng = random.Random(0)
    base = [[rng.randrange(3, V) for _ in range(rng.randrange(1, 30))] for _ in range(20)]
    inputs = base + [b[: rng.randrange(1, len(b) + 1)] for b in base] + base[:5]
    logits, leaf = distinct_prefix_logits(model, inputs, PAD, torch.device("cpu"))
    assert len(logits) <= len(base)  # prefixes and repeats add no row
    with torch.inference_mode():
        for x, j in zip(inputs, leaf):
            alone, _ = model(torch.tensor([x]))
            assert torch.allclose(logits[j, : len(x)], alone[0], atol=1e-5)


def test_windows_within_two_operations_are_scored_by_lookups(search: str) -> None:
    """Windows one drop or repeat from a normal window are scored by lookups (no alignment search)
    with the exhaustive scores; so are windows two operations away (a move, two drops or repeats)
    when the reference is past the dense path's size. The lookups decline when a farther, longer
    normal window could give a likelier tail (high instability, short windows), and beyond two."""
    refs = [[3, 4, 5, 6, 7], [3, 4, 4, 5, 6, 7, 8], [9, 10, 11], [9, 10], [9, 10, 11, 12, 3, 4, 5, 6, 7, 8, 9, 10]]
    wins = [(3, 4, 6, 7), (3, 4, 5, 5, 6, 7), (9, 10, 11, 11), (9, 11),  # one operation
            (3, 4, 5, 6, 7, 8), (9, 10, 10),
            (10, 9, 11), (3, 5, 6), (3, 3, 4, 5, 5, 6, 7), (3, 4, 6, 5, 7),  # two: n, n - 2, n + 2, a move
            (7, 6, 5, 4, 3)]  # eight
    for instability in (0.0, 0.05, 0.3):
        fast = TraceIndex(refs, instability, TAIL_CAP)
        took = [fast._near(w, False) is not None for w in wins]
        if instability < 0.3:
            assert took == [True] * 6 + [search == "indexed"] * 4 + [False]
        else:  # (9, 10, 10): P(K >= 1) of (9, 10) loses to P(K >= 2) of a 5-event window
            assert not took[5] and not took[-1]
        for novel in ([False] * len(wins), [True] * len(wins)):
            same(fast.scores(wins, novel), ExhaustiveTraceIndex(refs, instability, TAIL_CAP).scores(wins, novel))


@pytest.mark.parametrize("seed", range(6))
def test_nearby_index_finds_the_normal_windows_within_two(seed: int) -> None:
    """logad.nearby against every pair: the smallest distance in {1, 2}, and the windows at it."""
    from rapidfuzz.distance import Indel

    refs, wins = world(seed, n_ref=120, n_win=300)
    index = TraceIndex(refs, 0.05, TAIL_CAP)
    for w in map(tuple, wins):
        if w in index._known:
            continue
        q = alignment.encode(w)
        dist = [Indel.distance(q, t) for t in index.traces]
        d, near = index._nearby.nearest(w, q, index.traces, index._known)
        assert d == (min(dist) if min(dist) <= 2 else 0)
        at_d = [j for j, x in enumerate(dist) if x == d] if d else []
        if d == 1:  # one of the longest
            assert len(near) == 1 and near[0] in at_d
            assert len(index.traces[near[0]]) == max(len(index.traces[j]) for j in at_d)
        else:
            assert near.tolist() == at_d


def test_a_hash_that_collides_is_checked() -> None:
    """The lookups are by hash: a normal window listed under a window's hash that is not within
    two operations of it (a collision) is no neighbour."""
    from logad.nearby import _prefixes

    fast = TraceIndex([[3, 4, 5], [6, 7, 8, 9]], 0.05, TAIL_CAP)
    nb = fast._nearby
    window = (3, 4)
    hw = _prefixes(np.array([window], dtype=np.uint64) + np.uint64(1))[0, -1]
    nb._del[3].add(np.array([hw]), np.array([1]))  # (6, 7, 8, 9) listed under the window's hash
    d, near = nb.nearest(window, alignment.encode(window), fast.traces, fast._known)
    assert (d, near.tolist()) == (1, [0])  # (3, 4, 5), and not (6, 7, 8, 9), 4 operations away
    slow = ExhaustiveTraceIndex([[3, 4, 5], [6, 7, 8, 9]], 0.05, TAIL_CAP)
    same(fast.scores([window], [False]), slow.scores([window], [False]))
