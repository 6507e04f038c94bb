"""Early detection: how much of an anomalous session is seen when the first alert fires.

Incremental scoring uses only prefix-monotone rules — the most surprising event so far (max_nll), the
count of events outside the top-k so far (topk_miss), templates seen more often than in any normal
window (count_excess) and the unseen-template rule — so an early alert
on a prefix implies the same alert on the whole session, and the incremental false-alarm rate on
normal sessions can never exceed the full-session one. The count-vector lookup is not prefix-safe
(a prefix of a normal session is not a normal session) and is left to the decision at close.
Because the model is causal, one forward pass per window gives every prefix's scores.

The report also gives a bound no causal detector can beat without false alarms: the share of each
anomalous session at which its prefix first stops being a prefix of some normal training session.
Before that point the events seen are exactly those of a normal session, so an alert there would
fire on that normal session as well (HDFS: most anomalies show their evidence in the last events —
a missing tail, an exception at the end — and the bound's median is ~0.95).
"""

from __future__ import annotations

import numpy as np
import torch

from logad.detector import Detector
from logad.metrics import prf
from training.data import SessionRow

PREFIX_METHODS = ("max_nll", "topk_miss", "count_excess")


def first_alert(det: Detector, row: SessionRow) -> int | None:
    """Number of events seen when the first early alert fires (None: never)."""
    th = det.thresholds
    if th is None:
        raise ValueError('early detection needs a calibrated detector')
    windows = det.session_windows(row.session_id, row.ids)
    ref = det.reference.counts  # (M, V)
    seen_misses = 0
    unseen = 0
    for w in windows:
        det.scorer.score([w])
        nll, miss, uns, mask = (t[0] for t in det.scorer.last_per_event)  # type: ignore[misc]
        positions = mask.nonzero().flatten().tolist()
        counts = torch.zeros(ref.shape[1])
        for i in w.ids[: w.n_context]:
            counts[i] += 1
        for k, t in enumerate(positions):
            event_index = w.start + w.n_context + k  # session index of this scored event
            seen_misses += int(miss[t])
            unseen += int(uns[t])
            counts[w.ids[w.n_context + k]] += 1
            excess = float((counts - ref).clamp(min=0).sum(-1).min()) if len(ref) else float(counts.sum())
            fired = ("max_nll" in th.values and float(nll[t]) > th.values["max_nll"]) or \
                    ("topk_miss" in th.values and seen_misses > th.values["topk_miss"]) or \
                    ("count_excess" in th.values and excess > th.values["count_excess"]) or \
                    (unseen / (event_index + 1) > th.unseen_rate_max)
            if fired:
                return event_index + 1
    return None


def oracle_shares(anomalous: list[SessionRow], normal_train: list[SessionRow]) -> list[float]:
    """Per anomalous session: (events up to and including the first that leaves every normal
    training prefix) / session length; 1.0 when the whole session is a normal prefix."""
    prefixes = {r.ids[:k] for r in normal_train for k in range(1, len(r.ids) + 1)}
    out = []
    for r in anomalous:
        k = next((k for k in range(1, len(r.ids) + 1) if r.ids[:k] not in prefixes), len(r.ids))
        out.append(k / max(len(r.ids), 1))
    return out


def early_report(det: Detector, rows: list[SessionRow], normal_train: list[SessionRow] | None = None) -> dict:
    shares, normal_alarms, n_normal, detected = [], 0, 0, 0
    anomalies = [r for r in rows if r.label == 1]
    for r in rows:
        k = first_alert(det, r)
        if r.label == 1:
            if k is not None:
                detected += 1
                shares.append(k / len(r.ids))
        else:
            n_normal += 1
            normal_alarms += k is not None
    full = det.score_id_sessions((r.session_id, r.label, r.ids) for r in rows)
    full_m = prf([r.label for r in rows], [x.is_anomaly for x in full])
    bound = {}
    if normal_train is not None and anomalies:
        o = oracle_shares(anomalies, [r for r in normal_train if r.label == 0])
        bound = {"oracle_bound_share": {
            "median": float(np.median(o)), "p90": float(np.percentile(o, 90)),
            "meaning": "first point at which an anomalous session's prefix is no normal training session's "
                       "prefix: a causal detector alerting earlier also alerts on that normal session"}}
    return {
        "anomalous_sessions": len(anomalies), "detected_early": detected,
        "early_recall": detected / len(anomalies) if anomalies else 0.0,
        "share_seen_at_first_alert": {"median": float(np.median(shares)) if shares else None,
                                      "p90": float(np.percentile(shares, 90)) if shares else None},
        "incremental_false_alarm_rate": normal_alarms / n_normal if n_normal else 0.0,
        "normal_sessions": n_normal, "prefix_rules": list(PREFIX_METHODS) + ["unseen_rate"],
        "final_decision_at_close": {k: full_m[k] for k in ("precision", "recall", "f1", "fpr")},
        **bound,
    }
