"""Alerts: a CloudEvents-style JSON envelope, the same from `logad detect` and from the stream.

The id is a stable hash of (source, session, window range, first event time, model version), so a
window scored twice (at-least-once delivery, a restarted worker) yields the same id and consumers
dedupe on it. `time` is when we decided; it is not part of the id.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jsonschema

from logad.records import WindowScore

ALERT_TYPE = "io.logad.anomaly"
SCORE_TYPE = "io.logad.score"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "source": {"type": "string", "minLength": 1},
        "type": {"enum": [ALERT_TYPE, SCORE_TYPE]},
        "subject": {"type": "string", "minLength": 1},
        "time": {"type": "string"},
        "datacontenttype": {"const": "application/json"},
        "data": {
            "type": "object",
            "required": ["session_id", "window", "scores", "thresholds", "is_anomaly", "reasons", "surprising",
                         "first_ts", "last_ts", "line_count", "model_version", "early"],
            "properties": {
                "session_id": {"type": "string"},
                "window": {"type": "object", "required": ["start", "end", "n_context", "reason", "final"]},
                "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                "thresholds": {"type": "object", "additionalProperties": {"type": "number"}},
                "is_anomaly": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "surprising": {"type": "array", "items": {
                    "type": "object", "required": ["index", "template_key", "template", "prob", "expected"]}},
                "first_ts": {"type": ["number", "null"]},
                "last_ts": {"type": ["number", "null"]},
                "line_count": {"type": "integer", "minimum": 0},
                "model_version": {"type": "string"},
                "early": {"type": "boolean"},
            },
        },
    },
}


def alert_id(source: str, session_id: str, start: int, end: int, first_ts: float | None, model_version: str) -> str:
    key = f"{source}\x1f{session_id}\x1f{start}\x1f{end}\x1f{first_ts!r}\x1f{model_version}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def iso_time(t: float) -> str:
    """Epoch seconds -> the envelope's `time` (UTC, milliseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def make_event(ws: WindowScore, model_version: str, thresholds: dict[str, float], now: float | None = None,
               early: bool = False, *, stamp: str | None = None, details: bool = True) -> dict:
    """The envelope for one scored window (type alert when anomalous, score otherwise).

    `stamp`: the `time` already formatted (iso_time(now)): a batch decided at one instant formats
    it once, not per window. `details=False` leaves out the surprising events of a NORMAL window
    (`"surprising": []`; the scores topic of normal windows does not need the explanations, they
    are most of the envelope's bytes); an anomalous window always keeps them, so an alert is whole.
    The envelope shares the WindowScore's surprising dicts: encode it, do not mutate it."""
    w = ws.window
    return {
        "specversion": "1.0",
        "id": alert_id(w.source, w.session_id, w.start, w.end, w.first_ts, model_version),
        "source": f"logad/{w.source}",
        "type": ALERT_TYPE if ws.is_anomaly else SCORE_TYPE,
        "subject": w.session_id,
        "time": stamp if stamp is not None else iso_time(time.time() if now is None else now),
        "datacontenttype": "application/json",
        "data": {
            "session_id": w.session_id,
            "window": {"start": w.start, "end": w.end, "n_context": w.n_context, "reason": w.reason, "final": w.final},
            "scores": {k: float(v) for k, v in ws.scores.items()},
            "thresholds": thresholds,
            "is_anomaly": ws.is_anomaly,
            "reasons": list(ws.reasons),
            "surprising": list(ws.surprising) if details or ws.is_anomaly else [],
            "first_ts": w.first_ts,
            "last_ts": w.last_ts,
            "line_count": w.n_lines,
            "model_version": model_version,
            "early": early,
        },
    }


def validate(event: dict) -> None:
    """Raise jsonschema.ValidationError when `event` does not follow the alert schema."""
    jsonschema.validate(event, SCHEMA)
