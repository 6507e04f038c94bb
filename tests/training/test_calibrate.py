"""Calibration rules that need no model: the joint flag-rate bound."""

from __future__ import annotations

from logad.thresholds import fit_thresholds
from training.calibrate import _flag_rate, joint_percentile


def test_joint_percentile_bounds_the_whole_detectors_flag_rate():
    # Two methods whose tails fall on different sessions: each at its 99th flags 1%, together ~2%.
    normal = [{"a": float(i), "b": float((i * 37) % 400), "unseen_rate": 0.0} for i in range(400)]
    assert _flag_rate(normal, fit_thresholds(normal, ["a", "b"], 99.0), 0.05) > 0.01
    p = joint_percentile(normal, ["a", "b"], 99.0, 0.05)
    assert p > 99.0
    assert _flag_rate(normal, fit_thresholds(normal, ["a", "b"], p), 0.05) <= 0.01
