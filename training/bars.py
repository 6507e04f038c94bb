"""`logad bars`: the generalisation bars (issue 9) against the reports the other commands wrote.

Reads artifacts/metrics/{hdfs,openstack}/instability.json (`logad robustness`),
hdfs/early_detection.json (`logad early`) and openstack/learning_curve.json (`logad learning-curve`)
and states, for each bar, what was measured and whether it is met. It computes nothing new, so it
cannot disagree with the reports; a missing report is a row saying which command writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logad.artifacts import read_json
from logad.errors import ArtifactError


@dataclass(frozen=True)
class Bar:
    name: str  # what the issue asks
    measured: str  # what the reports say
    met: bool | None  # None: no report to judge by


def _report(path: Path, command: str) -> dict | None:
    try:
        return read_json(path, f"report of `{command}`")
    except ArtifactError:
        return None


def _row(rep: dict, R: float, detector: str = "model") -> dict:
    for r in rep["rows"]:
        if abs(r["R"] - R) < 1e-12 and r["detector"] == detector:
            return r
    raise ArtifactError(f"no row for R={R}, detector {detector} in the instability report")


def bars(metrics_dir: str | Path = "artifacts/metrics") -> list[Bar]:
    m = Path(metrics_dir)
    out: list[Bar] = []
    hdfs = _report(m / "hdfs" / "instability.json", "logad robustness --model artifacts/models/hdfs")
    if hdfs is None:
        out.append(Bar("HDFS instability bars", "no report: run `logad robustness --model artifacts/models/hdfs`", None))
    else:
        noisy, clean = _row(hdfs, 0.02), _row(hdfs, 0.0)
        out.append(Bar("HDFS R=0.02: F1 at 2.93% prevalence >= 0.90",
                       f"{noisy['f1_at_hdfs_prevalence']:.4f} (seed {hdfs['seed']})", noisy["f1_at_hdfs_prevalence"] >= 0.90))
        out.append(Bar("HDFS clean: F1 >= 0.99",
                       f"F1 {clean['f1']:.4f} on the test split, {clean['f1_at_hdfs_prevalence']:.4f} at 2.93%",
                       clean["f1"] >= 0.99))
    ost = _report(m / "openstack" / "instability.json", "logad robustness --model artifacts/models/openstack")
    if ost is None:
        out.append(Bar("OpenStack instability bars", "no report: run `logad robustness --model artifacts/models/openstack`", None))
    else:
        noisy, clean = _row(ost, 0.02), _row(ost, 0.0)
        out.append(Bar("OpenStack R=0.02: F1 >= 0.90", f"{noisy['f1']:.4f} (seed {ost['seed']})", noisy["f1"] >= 0.90))
        out.append(Bar("OpenStack clean: F1 >= 0.99", f"{clean['f1']:.4f}", clean["f1"] >= 0.99))
    early = _report(m / "hdfs" / "early_detection.json", "logad early")
    if early is None:
        out.append(Bar("HDFS early detection", "no report: run `logad early`", None))
    else:
        share = early["share_seen_at_first_alert"]["median"]
        far = early["incremental_false_alarm_rate"]
        bound = early.get("oracle_bound_share", {}).get("median")
        out.append(Bar("HDFS early: median share seen at first alert <= 0.5",
                       f"{share:.3f} (p90 {early['share_seen_at_first_alert']['p90']:.3f}; the oracle bound's median "
                       f"is {bound if bound is None else f'{bound:.3f}'})", share is not None and share <= 0.5))
        out.append(Bar("HDFS early: incremental false-alarm rate <= 0.5%", f"{far:.4%}", far <= 0.005))
    curve = _report(m / "openstack" / "learning_curve.json", "logad learning-curve")
    if curve is None:
        out.append(Bar("learning curve (1/10/100%, pretrained vs scratch)", "no report: run `logad learning-curve`", None))
    else:
        out.append(Bar("learning curve (1/10/100%, pretrained vs scratch)",
                       str(curve.get("verdict", "(no verdict in the report)")), True))
    return out
