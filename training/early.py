"""Early detection: how much of an anomalous session is seen when the first alert fires.

Incremental scoring is the streaming detector's own (`Sessionizer.push_many(..., probe=True)` with
`scorer.early_alerts`): after every event the session's open window is scored as a probe (reason
PROBE, never complete). Probes are judged by the prefix-safe scores only — the model's top-k misses
and surprise so far, templates seen more often than in any normal window (count_excess), the
unseen-template rule — because the two-sided count and alignment scores would read "not finished
yet" as "events missing". The decision at close is the full detector's, as offline.
Here the same windower runs over each test session, one event at a time, and the first event after
which any probe (or a window closed on the way) is anomalous is the first alert.

The report also gives a bound no causal detector can beat without false alarms: the share of each
anomalous session at which its prefix first stops being a prefix of some normal training session.
Before that point the events seen are exactly those of a normal session, so an alert there would
fire on that normal session as well (HDFS: most anomalies show their evidence in the last events —
a missing tail, an exception at the end — and the bound's median is ~0.95).
"""

from __future__ import annotations

import numpy as np

from logad.detector import Detector
from logad.eval_metrics import prf
from logad.records import Window
from logad.windows import SessionWindower
from logad.thresholds import COMPLETE_ONLY
from training.data import SessionRow

CHUNK = 256  # sessions whose probes are scored in one call (bounds the windows held at once)


def _probes(det: Detector, row: SessionRow) -> list[tuple[int, Window]]:
    """(events seen, window) for every window the stream would score while the session is open."""
    w = SessionWindower(det.bundle.path.name, row.session_id, det.bundle.rule)
    out = []
    for k, tid in enumerate(row.ids, start=1):
        closed = w.push(tid, None)
        if closed is not None:
            out.append((k, closed))
        probe = w.probe()
        if probe is not None:
            out.append((k, probe))
    return out


def first_alerts(det: Detector, rows: list[SessionRow]) -> list[int | None]:
    """Per session: events seen when the first early alert fires (None: never before it closes)."""
    if det.thresholds is None:
        raise ValueError("early detection needs a calibrated detector")
    out: list[int | None] = []
    for c in range(0, len(rows), CHUNK):
        chunk = rows[c:c + CHUNK]
        owner, seen, windows = [], [], []
        for i, r in enumerate(chunk):
            for k, win in _probes(det, r):
                owner.append(i)
                seen.append(k)
                windows.append(win)
        first: list[int | None] = [None] * len(chunk)
        # details=True: the detector's score cache (a session's prefixes repeat across sessions) keys on it
        for i, k, ws in zip(owner, seen, det.score_windows(windows, details=True)):
            if ws.is_anomaly and (first[i] is None or k < first[i]):
                first[i] = k
        out += first
    return out


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
    for r, k in zip(rows, first_alerts(det, rows)):
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
        "normal_sessions": n_normal, "prefix_rules": sorted(m for m in det.thresholds.values if m not in COMPLETE_ONLY) + ["unseen_rate"],  # type: ignore[union-attr]
        "final_decision_at_close": {k: full_m[k] for k in ("precision", "recall", "f1", "fpr")},
        **bound,
    }
