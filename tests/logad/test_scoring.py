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

