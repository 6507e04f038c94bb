"""Window scores that do not depend on what the model learned: the count scores and their tolerance
of log instability (count_tail), and the complete-trace-only rule."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import poisson

from logad.model import ModelConfig, NextTokenTransformer
from logad.scoring import TAIL_CAP, WindowScorer, build_reference
from logad.thresholds import Thresholds

V, UNK, BOS, PAD = 12, 1, 2, 0
NORMAL_LONG = [3, 4, 5, 6] * 5  # 20 events
NORMAL_SHORT = [7, 8, 8, 8]  # 4 events


def scorer(instability: float) -> WindowScorer:
    torch.manual_seed(0)
    model = NextTokenTransformer(ModelConfig(vocab_size=V, block_size=32, n_layer=1, n_head=1, n_embd=8))
    ref = build_reference([NORMAL_LONG, NORMAL_SHORT], V, UNK)
    return WindowScorer(model, ref, bos=BOS, pad=PAD, instability=instability)


def tail(s: WindowScorer, ids: list[int]) -> float:
    scores, _ = s.score_ids([(ids, 0)])
    return scores[0]["count_tail"]


def test_count_tail_is_the_poisson_tail_of_the_most_plausible_normal_window():
    s = scorer(0.03)  # rho = 0.02 count-changing events per event
    assert tail(s, NORMAL_LONG) == 0.0
    one_lost = NORMAL_LONG[:-1]  # L1 distance 1 from the 20-event window
    expected = -math.log10(poisson.sf(0, 0.02 * 20))  # P(K >= 1), K ~ Poisson(0.4)
    assert tail(s, one_lost) == pytest.approx(expected, rel=1e-4)
    # The same two lost lines are far less plausible in a 4-event window than one in a 20-event one.
    two_lost_short = [7, 8]
    assert tail(s, two_lost_short) == pytest.approx(-math.log10(poisson.sf(1, 0.02 * 4)), rel=1e-4)
    assert tail(s, two_lost_short) > 2 * tail(s, one_lost)


def test_count_tail_never_explains_a_template_normal_windows_lack():
    s = scorer(0.03)
    assert tail(s, NORMAL_LONG[:-1] + [9]) == TAIL_CAP  # 9: never in a normal window
    assert tail(s, NORMAL_LONG[:-1] + [UNK]) == TAIL_CAP


def test_without_instability_count_tail_is_the_exact_lookup():
    s = scorer(0.0)
    assert tail(s, NORMAL_SHORT) == 0.0
    assert tail(s, NORMAL_LONG[:-1]) == TAIL_CAP


def test_instability_out_of_range_is_refused():
    with pytest.raises(ValueError, match="instability"):
        scorer(1.5)


def test_two_sided_count_scores_apply_only_to_whole_traces():
    th = Thresholds({"count_tail": 2.0, "count_l1": 1.0, "count_excess": 0.0}, instability=0.02)
    cut = {"count_tail": 5.0, "count_l1": 3.0, "count_excess": 0.0, "unseen_rate": 0.0}
    assert th.decide(cut, complete=True)[0]
    assert not th.decide(cut, complete=False)[0]  # a prefix of a normal trace: missing events are expected


def test_thresholds_keep_and_seal_their_instability():
    th = Thresholds({"count_tail": 2.0}, instability=0.02, model_sha256="m", reference_sha256="r")
    doc = th.to_dict()
    assert Thresholds.from_dict(doc).instability == 0.02
    from logad.errors import ArtifactError
    with pytest.raises(ArtifactError, match="modified"):
        Thresholds.from_dict({**doc, "instability": 0.5})
    bad = Thresholds({"count_tail": 2.0}, instability=1.5).to_dict()
    with pytest.raises(ArtifactError, match="instability"):
        Thresholds.from_dict(bad)



def test_set_instability_moves_the_tolerance_of_both_tails():
    s = scorer(0.0)
    one_dup = NORMAL_LONG[:5] + [NORMAL_LONG[4]] + NORMAL_LONG[5:]
    assert tail(s, one_dup) == TAIL_CAP
    s.set_instability(0.05)
    sc, _ = s.score_ids([(one_dup, 0)])
    assert sc[0]["count_tail"] < TAIL_CAP and sc[0]["edit_tail"] < TAIL_CAP and sc[0]["edit_ops"] == 1.0


def test_online_estimate_reads_the_rate_and_ignores_failure_bursts():
    import random

    import numpy as np

    from logad.instability import InstabilityTracker, fit_rate, observable
    rng = np.random.default_rng(0)
    n = rng.integers(10, 30, 800).astype(float)
    for rho in (0.0, 0.02, 0.1):
        d = rng.poisson(rho * n)
        far = rng.poisson(0.6 * n[:200])  # a quarter of anomalous windows, far from every normal one
        assert fit_rate(np.r_[d, far], np.r_[n, n[:200]]) == pytest.approx(rho, abs=0.01)
    # a burst of failures (a run of 2+ consecutive edits) is not observed: the level stays
    assert not observable({"unseen_rate": 0.0, "block_run": 2.0}) and observable({"unseen_rate": 0.0, "block_run": 1.0})
    t = InstabilityTracker([0.0, 0.01, 0.05], start_level=1)
    assert t.update() == 1  # no evidence yet: the sealed level
    random.seed(0)
    for _ in range(200):
        t.observe(float(np.random.default_rng(random.randrange(10**6)).poisson(0.05 * 20)), 20)
    assert t.update() == 2


def test_thresholds_levels_round_trip_sealed_and_checked():
    from logad.errors import ArtifactError
    levels = ({"instability": 0.0, "rho": 0.0, "values": {"count_tail": 0.0}},
              {"instability": 0.02, "rho": 0.01, "values": {"count_tail": 2.0}})
    th = Thresholds({"count_tail": 2.0}, instability=0.02, levels=levels)
    back = Thresholds.from_dict(th.to_dict())
    assert back.levels == levels and back.start_level() == 1
    assert back.at_level(0).values == {"count_tail": 0.0} and back.at_level(0).instability == 0.0
    d = th.to_dict()
    d["levels"][1]["values"]["count_tail"] = 9.0  # a hand-raised level threshold
    with pytest.raises(ArtifactError, match="sha256"):
        Thresholds.from_dict(d)
    assert "levels" not in Thresholds({"count_tail": 2.0}).to_dict()  # fixed-tolerance files unchanged
