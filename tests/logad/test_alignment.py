"""Order-aware scores against the normal traces: what instability explains and what it does not."""

from __future__ import annotations

import math

import pytest
from scipy.stats import poisson

from logad.alignment import TraceIndex, encode, longest_run

CAP = 300.0
NORMAL = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # 10 events


def test_longest_run_separates_scattered_from_block_edits():
    n = encode(NORMAL)
    assert longest_run(n, n) == 0
    assert longest_run(n, encode([3, 5, 6, 7, 8, 10, 11, 12])) == 1  # two scattered drops
    assert longest_run(n, encode([3, 4, 5, 8, 9, 10, 11, 12])) == 2  # a sub-procedure (6, 7) missing
    assert longest_run(n, encode([3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12])) == 1  # a duplicated line
    assert longest_run(n, encode([3, 4, 9, 10, 11, 5, 6, 7, 8, 12])) == 3  # a block moved


def test_edit_tail_is_the_poisson_tail_of_the_operations_to_the_nearest_trace():
    idx = TraceIndex([NORMAL, NORMAL], instability=0.03, tail_cap=CAP)  # duplicates are one trace
    assert len(idx.traces) == 1
    lam = 4 * 0.03 / 3 * len(NORMAL)
    swapped = [3, 5, 4, 6, 7, 8, 9, 10, 11, 12]  # a swap is a delete plus an insert
    tails, runs, ops = idx.scores([NORMAL, swapped], novel=[False, False])
    assert tails[0] == 0.0 and runs[0] == 0.0
    assert tails[1] == pytest.approx(-math.log10(poisson.sf(1, lam)), rel=1e-4)
    assert runs[1] == 1.0
    assert ops == [0.0, 2.0]  # the nearest trace's operations, untouched by the tolerance


def test_novel_templates_and_zero_instability_are_never_explained():
    idx = TraceIndex([NORMAL], instability=0.03, tail_cap=CAP)
    tails, _, _ = idx.scores([NORMAL[:-1] + [99]], novel=[True])
    assert tails == [CAP]
    exact = TraceIndex([NORMAL], instability=0.0, tail_cap=CAP)
    tails, _, ops = exact.scores([NORMAL, NORMAL[1:]], novel=[False, False])
    assert tails == [0.0, CAP]
    assert ops == [0.0, 1.0]
    exact.set_instability(0.03)  # the detector moves the tolerance with its estimate
    assert exact.scores([NORMAL[1:]], novel=[False])[0][0] < CAP


def test_empty_reference_flags_everything():
    tails, runs, _ = TraceIndex([], instability=0.02, tail_cap=CAP).scores([[1, 2, 3]], novel=[False])
    assert tails == [CAP] and runs == [3.0]
