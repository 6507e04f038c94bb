"""`logad report`: what the evaluation reports say about the shipped models, on one page.

Reads what the other commands wrote under artifacts/metrics/ and prints each figure beside the
command that measures it. It computes nothing new, so it cannot disagree with the reports; a
missing report is a row naming the command that writes it.

    <name>/instability.json     `logad robustness --model artifacts/models/<name>`
    <name>/early_detection.json `logad early --model artifacts/models/<name>`
    openstack/learning_curve.json `logad learning-curve`
    parsing/loghub_2k.json      `logad eval-parser --loghub-table`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logad.artifacts import read_json
from logad.errors import ArtifactError


@dataclass(frozen=True)
class Figure:
    what: str  # what was measured, in words
    value: str  # the figure(s)
    command: str  # the command that measures it


def _report(path: Path) -> dict | None:
    try:
        return read_json(path, "report")
    except ArtifactError:
        return None


def _rows(rep: dict, detector: str) -> list[dict]:
    return sorted((r for r in rep.get("rows", []) if r.get("detector") == detector), key=lambda r: r["R"])


def _span(r: dict, key: str) -> str:
    lo, hi = r.get(f"{key}_min"), r.get(f"{key}_max")
    return f"{r[key]:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None and hi - lo > 5e-4 else "")


def summary(metrics_dir: str | Path = "artifacts/metrics", models: tuple[str, ...] = ("hdfs", "openstack")) -> list[Figure]:
    m = Path(metrics_dir)
    out: list[Figure] = []
    for name in models:
        cmd = f"logad robustness --model artifacts/models/{name}"
        rep = _report(m / name / "instability.json")
        if rep is None:
            out.append(Figure(f"{name}: detection under log instability", "no report yet", cmd))
            continue
        key = "f1_at_hdfs_prevalence" if name == "hdfs" else "f1"
        label = "F1 at 2.93% anomalies" if name == "hdfs" else "F1"
        rows = _rows(rep, "model")
        out.append(Figure(f"{name}: detector {label} on the test split, by instability rate r (mean, range over seeds)",
                          "; ".join(f"r={r['R']:g}: {_span(r, key)}" for r in rows), cmd))
        base = [r for r in rep.get("rows", []) if r.get("detector") not in ("model",) and ":" not in r["detector"]]
        if base and rows:
            at = max(r["R"] for r in rows)
            best = max((r for r in base if r["R"] == at), key=lambda r: r[key], default=None)
            if best is not None:
                out.append(Figure(f"{name}: best baseline at r={at:g}", f"{best['detector']} {best[key]:.3f}", cmd))
        cost = rep.get("cost")
        if isinstance(cost, dict) and cost.get("us_per_window") is not None:
            out.append(Figure(f"{name}: scoring cost", f"{cost['us_per_window']:.0f} us per window", cmd))
        early = _report(m / name / "early_detection.json")
        if early is not None:
            share = early["share_seen_at_first_alert"]
            bound = early.get("oracle_bound_share", {}).get("median")
            out.append(Figure(f"{name}: early alerts (share of an anomalous session seen at its first alert)",
                              f"median {share['median']:.3f}, p90 {share['p90']:.3f}"
                              + (f" (no causal detector can do better than {bound:.3f} here)" if bound else "")
                              + f"; incremental false alarms {early['incremental_false_alarm_rate']:.2%}",
                              f"logad early --model artifacts/models/{name}"))
    curve = _report(m / "openstack" / "learning_curve.json")
    out.append(Figure("OpenStack learning curve (pretrained on HDFS vs from scratch)",
                      str(curve.get("verdict", "no verdict in the report")) if curve else "no report yet",
                      "logad learning-curve"))
    parsing = _report(m / "parsing" / "loghub_2k.json")
    if parsing is not None and isinstance(parsing.get("mean"), dict):
        mean = parsing["mean"]
        ours, drain = mean.get("ours", {}), mean.get("drain3_same_masking", {})
        out.append(Figure("template mining on eight Loghub 2k systems (mean grouping accuracy)",
                          f"{ours.get('grouping_accuracy', float('nan')):.3f} (plain Drain3 "
                          f"{drain.get('grouping_accuracy', float('nan')):.3f})", "logad eval-parser --loghub-table"))
    else:
        out.append(Figure("template mining on eight Loghub 2k systems", "no report yet", "logad eval-parser --loghub-table"))
    return out
