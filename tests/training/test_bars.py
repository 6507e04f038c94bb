"""`logad bars` reads the reports and judges each bar by them; a missing report is said, not guessed."""

from __future__ import annotations

from logad.artifacts import write_json
from training.bars import bars


def _instability(f1_clean: float, f1p_noisy: float, f1_noisy: float) -> dict:
    row = lambda R, f1, f1p: {"R": R, "detector": "model", "f1": f1, "f1_at_hdfs_prevalence": f1p}  # noqa: E731
    return {"seed": 0, "rows": [row(0.0, f1_clean, f1_clean), row(0.02, f1_noisy, f1p_noisy),
                                {"R": 0.02, "detector": "count_vector", "f1": 1.0, "f1_at_hdfs_prevalence": 1.0}]}


def test_bars_follow_the_reports(tmp_path):
    for d in ("hdfs", "openstack"):
        (tmp_path / d).mkdir()
    write_json(tmp_path / "hdfs" / "instability.json", _instability(0.995, 0.93, 0.99))
    write_json(tmp_path / "openstack" / "instability.json", _instability(0.97, 0.5, 0.94))
    write_json(tmp_path / "hdfs" / "early_detection.json", {
        "share_seen_at_first_alert": {"median": 0.93, "p90": 1.0}, "incremental_false_alarm_rate": 0.001,
        "oracle_bound_share": {"median": 0.95}})
    got = {b.name: b.met for b in bars(tmp_path)}
    assert got["HDFS R=0.02: F1 at 2.93% prevalence >= 0.90"] is True
    assert got["HDFS clean: F1 >= 0.99"] is True
    assert got["OpenStack R=0.02: F1 >= 0.90"] is True
    assert got["OpenStack clean: F1 >= 0.99"] is False  # 0.97
    assert got["HDFS early: median share seen at first alert <= 0.5"] is False
    assert got["HDFS early: incremental false-alarm rate <= 0.5%"] is True
    assert got["learning curve (1/10/100%, pretrained vs scratch)"] is None  # no report


def test_no_reports_no_verdicts(tmp_path):
    assert all(b.met is None for b in bars(tmp_path))
