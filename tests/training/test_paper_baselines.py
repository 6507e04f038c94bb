"""The literature baselines on synthetic count data: each paper's rule on what it is meant to catch."""

from __future__ import annotations

import numpy as np

from logad.deeplog import DeepLog
from logad.invariants import InvariantsMiner, PCADetector

V = 8


def normal_sessions(n: int = 120) -> list[list[int]]:
    """open (1), k x (read 2, write 3), close (4), with k = 1..3: #open = #close, #read = #write."""
    rng = np.random.default_rng(0)
    return [[1] + [2, 3] * int(rng.integers(1, 4)) + [4] for _ in range(n)]


def test_invariants_mining_finds_the_count_relations_and_flags_their_violation():
    im = InvariantsMiner(normal_sessions(), V)
    rel = {(tuple(c), tuple(t)) for c, t in im.invariants}
    assert any(set(c) == {2, 3} for c, _ in rel)  # #read = #write
    s = im.score([[1, 2, 3, 4], [1, 2, 3, 3, 4], [1, 2, 3]])
    assert s[0] == 0 and s[1] > 0 and s[2] > 0


def test_pca_q_statistic_separates_off_subspace_count_vectors():
    pca = PCADetector(normal_sessions(), V)
    s = pca.score([[1, 2, 3, 4], [1, 2, 3, 2, 3, 4], [1, 5, 5, 5, 4]])
    assert s[0] <= 1.0 and s[1] <= 1.0 and s[2] > 1.0


def test_deeplog_top_g_rule():
    dl = DeepLog(V, h=3, g=2, hidden=16, layers=1, epochs=30, batch_size=64).fit(normal_sessions(60))
    s = dl.score([[1, 2, 3, 4], [1, 2, 3, 2, 3, 4], [1, 2, 3, 1, 1]])  # after a write: read or close
    assert s[0] == 0 and s[1] == 0 and s[2] > 0
