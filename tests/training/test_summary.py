"""`logad report` reads the reports and says what they measured; a missing report is said, not guessed."""

from __future__ import annotations

from logad.artifacts import write_json
from training.summary import summary


def _instability(f1_clean: float, f1_noisy: float) -> dict:
    row = lambda R, f1, det="model": {"R": R, "detector": det, "f1": f1, "f1_at_hdfs_prevalence": f1,  # noqa: E731
                                      "f1_at_hdfs_prevalence_min": f1 - 0.01, "f1_at_hdfs_prevalence_max": f1}
    return {"seed": 0, "rows": [row(0.0, f1_clean), row(0.02, f1_noisy), row(0.02, 0.5, "count_vector"),
                                row(0.02, 0.7, "model: count_tail only")], "cost": {"us_per_window": 362.2}}


def test_report_follows_the_reports(tmp_path) -> None:
    for d in ("hdfs", "openstack"):
        (tmp_path / d).mkdir()
    write_json(tmp_path / "hdfs" / "instability.json", _instability(0.995, 0.93))
    write_json(tmp_path / "hdfs" / "early_detection.json", {
        "share_seen_at_first_alert": {"median": 0.93, "p90": 1.0}, "incremental_false_alarm_rate": 0.001,
        "oracle_bound_share": {"median": 0.95}})
    got = {f.what: f for f in summary(tmp_path)}
    f1 = got["hdfs: detector F1 at 2.93% anomalies on the test split, by instability rate r (mean, range over seeds)"]
    assert f1.value == "r=0: 0.995 (0.985-0.995); r=0.02: 0.930 (0.920-0.930)"
    assert f1.command == "logad robustness --model artifacts/models/hdfs"
    assert got["hdfs: best baseline at r=0.02"].value == "count_vector 0.500"  # parts of the detector are not baselines
    assert got["hdfs: scoring cost"].value == "362 us per window"
    assert "median 0.930" in got["hdfs: early alerts (share of an anomalous session seen at its first alert)"].value
    assert got["openstack: detection under log instability"].value == "no report yet"
    assert got["OpenStack learning curve (pretrained on HDFS vs from scratch)"].value == "no report yet"
