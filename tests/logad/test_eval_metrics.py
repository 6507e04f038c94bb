import math

import pytest

from logad.eval_metrics import confusion, f1_at_prevalence, pr_auc, prf


def test_hand_computed_case():
    # tp=2 (idx 0,1), fp=1 (idx 4), fn=1 (idx 2), tn=2 (idx 3,5)
    m = prf([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 3)


def test_empty_classes_do_not_divide_by_zero():
    assert prf([0, 0, 0], [0, 0, 0])["f1"] == 0.0  # no positives at all
    assert prf([1, 1], [0, 0])["precision"] == 0.0  # nothing predicted
    assert prf([], [])["f1"] == 0.0
    assert prf([0, 0], [1, 1])["fpr"] == 1.0
    assert pr_auc([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0
    assert f1_at_prevalence(0.0, 0.0, 0.03) == 0.0


def test_pr_auc_hand_computed():
    # scores rank: 0.9 (pos), 0.8 (neg), 0.7 (pos): AP = 1*0.5 + (2/3)*0.5
    assert pr_auc([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    assert pr_auc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)


def test_f1_at_prevalence():
    # recall 1, fpr 0.005 at 2.93% anomalies: precision = .0293 / (.0293 + .005 * .9707)
    p = 0.0293 / (0.0293 + 0.005 * 0.9707)
    assert f1_at_prevalence(1.0, 0.005, 0.0293) == pytest.approx(2 * p / (1 + p))
    assert math.isclose(f1_at_prevalence(1.0, 0.0, 0.03), 1.0)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        confusion([1, 0], [1])
