"""Calibration rules that need no model: the joint flag-rate bound, thresholds by validation recall."""

from __future__ import annotations

import numpy as np

from logad.thresholds import fit_thresholds
from training.calibrate import _flag_rate, fit_level, joint_percentile, recall_thresholds


def test_joint_percentile_bounds_the_whole_detectors_flag_rate():
    # Two methods whose tails fall on different sessions: each at its 99th flags 1%, together ~2%.
    normal = [{"a": float(i), "b": float((i * 37) % 400), "unseen_rate": 0.0} for i in range(400)]
    assert _flag_rate(normal, fit_thresholds(normal, ["a", "b"], 99.0), 0.05) > 0.01
    p = joint_percentile(normal, ["a", "b"], 99.0, 0.05)
    assert p > 99.0
    assert _flag_rate(normal, fit_thresholds(normal, ["a", "b"], p), 0.05) <= 0.01


def _rule_flags(rows: np.ndarray, values: dict[str, float]) -> np.ndarray:
    return (rows > np.array([values["a"], values["b"]])).any(1)


def test_recall_thresholds_spend_the_budget_on_the_score_that_catches_anomalies():
    # Score "a" separates the anomalies from normal sessions, "b" does not: the budget (1% of 400
    # normal sessions) goes to "a", "b" stays at the edge of normal.
    rng = np.random.default_rng(0)
    normal = np.column_stack([rng.normal(0, 1, 400), rng.normal(0, 1, 400)])
    anomalous = np.column_stack([rng.normal(2.5, 0.3, 100), rng.normal(0, 1, 100)])
    none = np.zeros(400, bool), np.zeros(100, bool)
    values = recall_thresholds(normal, anomalous, ["a", "b"], 0.01, *none)
    assert values["b"] == normal[:, 1].max()
    assert _rule_flags(normal, values).sum() <= 4
    common = fit_thresholds([{"a": x, "b": y} for x, y in normal], ["a", "b"], 99.5)  # ~1% jointly
    assert _rule_flags(anomalous, values).sum() > _rule_flags(anomalous, common).sum()
    # the unseen rule's flags count against the budget and need no threshold
    base = np.zeros(400, bool)
    base[:4] = True
    values = recall_thresholds(normal, anomalous, ["a", "b"], 0.01, base, none[1])
    assert (_rule_flags(normal, values) | base).sum() <= 4


def test_recall_thresholds_without_anomalies_leave_the_choice_to_the_percentile():
    normal = np.zeros((10, 2))
    assert recall_thresholds(normal, np.zeros((0, 2)), ["a", "b"], 0.01, np.zeros(10, bool), np.zeros(0, bool)) is None


def test_fit_level_falls_back_to_the_joint_percentile_without_labelled_anomalies():
    scores = [{"a": float(i), "b": float((i * 37) % 400), "unseen_rate": 0.0} for i in range(400)]
    owner, labels = np.arange(400), np.zeros(400, dtype=np.int64)
    values, p = fit_level(scores, owner, labels, ["a", "b"], 99.0, 0.05)
    assert p == joint_percentile(scores, ["a", "b"], 99.0, 0.05)
    assert values == fit_thresholds(scores, ["a", "b"], p)
