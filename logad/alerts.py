"""Alerts: a CloudEvents-style JSON envelope, the same from `logad detect` and from the stream.

The id is a stable hash of (source, session, window range, first event time, model version), so a
window scored twice (at-least-once delivery, a restarted worker) yields the same id and consumers
dedupe on it. `time` is when we decided; it is not part of the id.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from logad.records import WindowScore

ALERT_TYPE = "io.logad.anomaly"
SCORE_TYPE = "io.logad.score"
SCHEMA_VERSION = 2  # data.schema_version: bumped whenever a field of `data` changes meaning or goes
VOCAB_TAG_CHARS = 16  # hex digits of the vocab fingerprint on windows records and alerts
SEVERITIES = ("critical", "error", "warning", "info")  # PagerDuty's and Alertmanager's usual words
# combined score (how far the strongest rule is over its threshold, in that rule's normal spread):
# at or above these an alert is critical / error, above 0 a warning; normal windows are "info".
CRITICAL_AT, ERROR_AT = 5.0, 1.0

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
            "required": ["schema_version", "session_id", "window", "scores", "thresholds", "is_anomaly", "reasons",
                         "severity", "summary", "surprising", "evidence", "first_ts", "last_ts", "line_count",
                         "model_version", "early"],
            "properties": {
                "schema_version": {"const": SCHEMA_VERSION},
                "severity": {"enum": list(SEVERITIES)},
                "summary": {"type": "string"},
                "evidence": {"type": "array", "items": {
                    "type": "object", "required": ["index", "position", "line"],
                    "properties": {"index": {"type": "integer"}, "position": {"type": "object"},
                                   "line": {"type": "string"}}}},
                "session_id": {"type": "string"},
                # (`ids`, the window's template ids, context first: added later, so not required)
                "window": {"type": "object", "required": ["start", "end", "n_context", "reason", "final"],
                           "properties": {"ids": {"type": "array", "items": {"type": "integer", "minimum": 0}}}},
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
                "vocab": {"type": "string"},  # the vocab fingerprint the ids refer to (vocab_tag; added later)
                "early": {"type": "boolean"},
            },
        },
    },
}


def vocab_tag(vocab: Any) -> str:
    """The short fingerprint of a TemplateVocab (its sha256, first 64 bits) that windows records and
    alerts carry: template ids mean something only under the vocab that assigned them."""
    return vocab.fingerprint()[:VOCAB_TAG_CHARS]


def severity_of(ws: WindowScore) -> str:
    """critical / error / warning for an anomalous window by how far over its thresholds it is; a
    template the model never saw in a normal session makes it at least an error; "info" otherwise."""
    if not ws.is_anomaly:
        return "info"
    c = float(ws.scores.get("combined", 0.0))
    if c != c:  # NaN: no scale to judge by
        c = 0.0
    if c >= CRITICAL_AT:
        return "critical"
    if c >= ERROR_AT or any(r.startswith(("unseen", "new_template")) for r in ws.reasons):
        return "error"
    return "warning"


def _rule(reason: str) -> str:
    return reason.split(" ", 1)[0]


def summary_of(ws: WindowScore) -> str:
    """One line a person reads first: what, where, the most surprising event, which rules fired."""
    w = ws.window
    if not ws.is_anomaly:
        return ""
    n = w.end - w.start - w.n_context
    where = f"{w.source} session {w.session_id}: events {w.start + w.n_context + 1}-{w.end} ({n} scored)"
    top = min(ws.surprising, key=lambda e: e.get("prob", 1.0), default=None)
    what = ""
    if top is not None:
        text = " ".join(str(top.get("template", "")).split())
        text = text if len(text) <= 80 else text[:77] + "..."
        what = f"; most surprising: \"{text}\" (p={float(top.get('prob', 0.0)):.2g})"
    rules = ", ".join(dict.fromkeys(_rule(r) for r in ws.reasons)) or "combined score"
    return f"{where}{what}; rules: {rules}"


def evidence_indexes(ws: WindowScore, limit: int, first: int, end: int | None = None) -> list[int]:
    """Session indexes of up to `limit` events an alert quotes: its most surprising events first,
    then its last scored ones; only indexes in [first, end) (default end: the window's), the events
    whose raw positions the caller holds. One choice for `logad detect` and the stream's scorer."""
    w = ws.window
    end = w.end if end is None else min(end, w.end)
    order = [int(e["index"]) for e in sorted(ws.surprising, key=lambda e: e.get("prob", 1.0))]
    order += range(w.end - 1, first - 1, -1)
    out: list[int] = []
    for i in order:
        if len(out) >= limit:
            break
        if first <= i < end and i not in out:
            out.append(i)
    return out


def alert_id(source: str, session_id: str, start: int, end: int, first_ts: float | None, model_version: str) -> str:
    key = f"{source}\x1f{session_id}\x1f{start}\x1f{end}\x1f{first_ts!r}\x1f{model_version}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def iso_time(t: float) -> str:
    """Epoch seconds -> the envelope's `time` (UTC, milliseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def make_event(ws: WindowScore, model_version: str, thresholds: dict[str, float], now: float | None = None,
               early: bool = False, *, stamp: str | None = None, details: bool = True,
               evidence: list[dict] | None = None, vocab: str = "") -> dict:
    """The envelope for one scored window (type alert when anomalous, score otherwise).

    `stamp`: the `time` already formatted (iso_time(now)): a batch decided at one instant formats
    it once, not per window. `details=False` leaves out the surprising events of a NORMAL window
    (`"surprising": []`; the scores topic of normal windows does not need the explanations, they
    are most of the envelope's bytes); an anomalous window always keeps them, so an alert is whole.
    The envelope shares the WindowScore's surprising dicts: encode it, do not mutate it.
    `evidence`: the raw lines behind the window, verbatim, each {"index": event index in the session,
    "position": {"file", "line"} offline or {"topic", "partition", "offset", "line"} in the stream,
    "line": text} (at most a configured number; empty when unknown). `vocab`: vocab_tag of the
    detector's vocab (what `logad feedback` checks the window's ids against)."""
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
            "schema_version": SCHEMA_VERSION,
            "session_id": w.session_id,
            "window": {"start": w.start, "end": w.end, "n_context": w.n_context, "reason": w.reason, "final": w.final,
                       "ids": list(w.ids)},
            "scores": {k: float(v) for k, v in ws.scores.items()},
            "thresholds": thresholds,
            "is_anomaly": ws.is_anomaly,
            "reasons": list(ws.reasons),
            "severity": severity_of(ws),
            "summary": summary_of(ws),
            "surprising": list(ws.surprising) if details or ws.is_anomaly else [],
            "evidence": evidence or [],
            "first_ts": w.first_ts,
            "last_ts": w.last_ts,
            "line_count": w.n_lines,
            "model_version": model_version,
            "vocab": vocab,
            "early": early,
        },
    }


CE_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"


def ce_headers(ws: WindowScore, model_version: str, stamp: str) -> list[tuple[str, bytes]]:
    """Kafka headers of an alert record: the CloudEvents Kafka binding's structured mode (the value
    is the whole envelope, `content-type: application/cloudevents+json`), plus its id, type, source,
    subject and time as ce_* headers, so that consumers route and dedupe without parsing the value."""
    w = ws.window
    return [("content-type", CE_CONTENT_TYPE), ("ce_specversion", b"1.0"),
            ("ce_id", alert_id(w.source, w.session_id, w.start, w.end, w.first_ts, model_version).encode()),
            ("ce_type", (ALERT_TYPE if ws.is_anomaly else SCORE_TYPE).encode()),
            ("ce_source", f"logad/{w.source}".encode()), ("ce_subject", w.session_id.encode()),
            ("ce_time", stamp.encode())]


def validate(event: dict) -> None:
    """Raise jsonschema.ValidationError when `event` does not follow the alert schema."""
    import jsonschema  # here: the stream processes import this module for the encoder only

    jsonschema.validate(event, SCHEMA)


class EventEncoder:
    """orjson.dumps(make_event(...), option=OPT_SERIALIZE_NUMPY) for a stream of WindowScores:
    the same bytes, built from pieces instead of three dicts per window.

    What a window shares with others is encoded once: the model version and the thresholds per
    encoder; "scores" .. "reasons" (and the type) per decision, i.e. per `scores` dict (with the
    score cache the repeats of a window share it: a few hundred distinct ones among ~90k windows);
    "source" and the window's close reason per value. Per window: its id (alert_id), one
    orjson.dumps of (first_ts, last_ts, session id), integers, and the surprising events when the
    record carries them. The streaming scorer encodes every score envelope with it; make_event
    stays the definition (tests/logad compare the two byte for byte)."""

    MAX_DECIDED = 4096  # decisions remembered (cleared when full: without the score cache each is new)

    def __init__(self, model_version: str, thresholds: dict[str, float], vocab: str = "") -> None:
        import orjson

        self._dumps = orjson.dumps
        self._opt = orjson.OPT_SERIALIZE_NUMPY
        self.model_version = model_version
        self._thresholds = self._dumps(thresholds, option=self._opt)
        self.vocab = vocab
        self._tail = (b',"model_version":' + self._dumps(model_version) + b',"vocab":' + self._dumps(vocab)
                      + b',"early":')
        self._sources: dict[str, tuple[bytes, bytes]] = {}
        self._reasons: dict[str, bytes] = {}
        self._decided: dict[int, tuple] = {}  # id(ws.scores) -> (scores, reasons, is_anomaly, head, middle)
        self._stamp = ("", b"")  # the last `time` and its JSON

    def encode(self, ws: WindowScore, stamp: str, early: bool = False, details: bool = True,
               evidence: list[dict] | None = None) -> bytes:
        """The envelope of `ws` decided at `stamp` (iso_time), as make_event(ws, ..., early=early,
        stamp=stamp, details=details) encoded, for a window whose fields have the types the
        windows codec guarantees (int positions and counts, bool `final`: they are written as such)."""
        w = ws.window
        dumps = self._dumps
        d = self._decided.get(id(ws.scores))
        if d is None or d[0] is not ws.scores or d[1] is not ws.reasons or d[2] is not ws.is_anomaly:
            if len(self._decided) >= self.MAX_DECIDED:
                self._decided.clear()
            head = b',"type":"' + (ALERT_TYPE if ws.is_anomaly else SCORE_TYPE).encode() + b'","subject":'
            middle = (b',"scores":' + dumps({k: float(v) for k, v in ws.scores.items()}, option=self._opt)
                      + b',"thresholds":' + self._thresholds
                      + (b',"is_anomaly":true,"reasons":' if ws.is_anomaly else b',"is_anomaly":false,"reasons":')
                      + dumps(list(ws.reasons), option=self._opt)
                      + b',"severity":' + dumps(severity_of(ws)) + b',"summary":')
            d = self._decided[id(ws.scores)] = (ws.scores, ws.reasons, ws.is_anomaly, head, middle)
        src = self._sources.get(w.source)
        if src is None:
            src = self._sources[w.source] = (w.source, b'","source":' + dumps(f"logad/{w.source}"))
        reason = self._reasons.get(w.reason)
        if reason is None:
            reason = self._reasons[w.reason] = dumps(w.reason)
        first, last, sid = dumps((w.first_ts, w.last_ts, w.session_id), option=self._opt).split(b",", 2)  # no "," in a number
        if stamp is not self._stamp[0]:
            self._stamp = (stamp, dumps(stamp))
        sid = sid[:-1]
        surprising = (dumps(list(ws.surprising), option=self._opt) if (details or ws.is_anomaly) and ws.surprising
                      else b"[]")
        # the summary names the session and the window: per window, and only alerts have one
        summary = dumps(summary_of(ws), option=self._opt) if ws.is_anomaly else b'""'
        ev = dumps(evidence, option=self._opt) if evidence else b"[]"
        return b"".join((
            b'{"specversion":"1.0","id":"',
            alert_id(w.source, w.session_id, w.start, w.end, w.first_ts, self.model_version).encode(),
            src[1], d[3], sid, b',"time":', self._stamp[1], b',"datacontenttype":"application/json","data":'
            b'{"schema_version":%d,"session_id":' % SCHEMA_VERSION, sid, b',"window":{"start":%d,"end":%d,"n_context":%d,"reason":' % (
                w.start, w.end, w.n_context), reason, b',"final":true,"ids":' if w.final else b',"final":false,"ids":', dumps(w.ids), b"}",
            d[4], summary, b',"surprising":', surprising, b',"evidence":', ev, b',"first_ts":', first[1:], b',"last_ts":', last, b',"line_count":%d' % w.n_lines,
            self._tail, b"true}}" if early else b"false}}"))
