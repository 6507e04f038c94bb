"""Alerts -> what people read: Alertmanager (v2 API), a Slack-compatible webhook, PagerDuty Events v2.

Pure: no Kafka, no HTTP. streams/notify.py consumes the alerts topic and posts what these build.

    parse_alert(bytes)            an alert envelope (logad.alerts.SCHEMA) -> Alert, BadAlert otherwise
    webhook_payload(alert)        {"text": <Slack mrkdwn>, "summary", "severity", "alert": <envelope>}
    pagerduty_event(alert, key)   Events v2 trigger, dedup_key = alert id
    (logad.alertmanager)          Alertmanager's alerts: one per (alertname, source, session), fired,
                                  refreshed, re-sent and resolved

Alerts of schema v2 carry data.severity and data.summary; older (v1) envelopes lack them, and they
are derived here with the same definitions (logad.alerts.severity_of / summary_of) from the
envelope's fields, so one session reads the same whichever producer sent it.

Every firing alert sent to Alertmanager carries an explicit endsAt (never later than now +
RESEND_HORIZON x resend_s): Alertmanager's resolve_timeout then never applies, and alerts of a
notifier that died resolve on their own instead of firing forever.
"""

from __future__ import annotations

import copy
import math
import re
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from logad.alerts import ALERT_TYPE, SCHEMA, SEVERITIES, iso_time, severity_of, summary_of
from logad.errors import ConfigError
from logad.records import Window, WindowScore

SUMMARY_MAX = 1024  # PagerDuty truncates longer summaries; one line a person reads in a page
DESCRIPTION_MAX = 4000
MAX_WINDOW = 1 << 20  # events in one window: far above any model's context; a larger one is malformed
RESEND_HORIZON = 4  # firing endsAt <= now + this many resend intervals (a few re-sends may be lost)
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OWN_LABELS = ("alertname", "source", "session", "model_version", "severity")


@dataclass(frozen=True)
class NotifyConfig:
    alertmanager_url: str = ""  # Alertmanager base URL (http://127.0.0.1:9093); empty = not used
    webhook_url: str = ""  # generic / Slack incoming-webhook URL (JSON with a Slack `text`); empty = not used
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"  # PagerDuty Events v2 endpoint
    pagerduty_routing_key: str = field(default="", repr=False)  # Events v2 integration key (secret); empty = not used
    group_id: str = "logad-notify"  # consumer group on the alerts topic: its offsets are what was delivered
    alertname: str = "LogAnomaly"  # Alertmanager `alertname` label
    extra_labels: dict[str, str] = field(default_factory=dict)  # added to every Alertmanager alert (team=x,env=prod)
    link_url: str = ""  # dashboard link per alert ({id}, {session}, {source} replaced); empty = none
    quiet_s: float = 300.0  # an Alertmanager alert resolves after this long without a new alert of its session
    resend_s: float = 60.0  # firing alerts are re-sent this often (Alertmanager keeps alerts in memory only)
    timeout_s: float = 10.0  # per HTTP request
    tries: int = 5  # attempts per alert and target before the alert goes to the dead-letter topic
    backoff_s: float = 0.5  # delay before the first retry; doubled per retry, with jitter
    backoff_max_s: float = 30.0  # cap on the retry delay
    batch_size: int = 50  # alerts read per batch (delivered, then their offsets committed)
    concurrency: int = 8  # requests in flight per target
    dedupe_ids: int = 100_000  # alert ids remembered to drop re-delivered duplicates
    metrics_port: int = 0  # Prometheus metrics of the notifier on web.host:this port; 0 = not served
    stop_grace_s: float = 5.0  # on SIGTERM, a batch in delivery gets this long to finish and be committed

    def __post_init__(self) -> None:
        for name in ("alertmanager_url", "webhook_url", "pagerduty_url"):
            _check_url(f"notify.{name}", getattr(self, name))
        if self.pagerduty_routing_key and not self.pagerduty_url:
            raise ConfigError("notify.pagerduty_routing_key is set but notify.pagerduty_url is empty")
        if self.link_url:
            _check_url("notify.link_url", self.link_url.replace("{", "").replace("}", ""))
        for name in ("quiet_s", "resend_s", "timeout_s", "backoff_s", "backoff_max_s", "stop_grace_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"notify.{name} must be a positive number of seconds, got {v!r}")
        if self.backoff_max_s < self.backoff_s:
            raise ConfigError(f"notify.backoff_max_s ({self.backoff_max_s}) is below "
                              f"notify.backoff_s ({self.backoff_s})")
        for name in ("tries", "batch_size", "concurrency", "dedupe_ids"):
            if getattr(self, name) < 1:
                raise ConfigError(f"notify.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"notify.metrics_port must be in 0..65535, got {self.metrics_port}")
        if not self.alertname.strip() or not self.group_id.strip():
            raise ConfigError("notify.alertname and notify.group_id must not be empty")
        for k in self.extra_labels:
            if not LABEL_NAME.fullmatch(k) or k in OWN_LABELS:
                raise ConfigError(f"notify.extra_labels: {k!r} is not a usable label name "
                                  f"([A-Za-z_][A-Za-z0-9_]*, not one of {', '.join(OWN_LABELS)})")

    def targets(self) -> list[str]:
        """The configured targets, in delivery order."""
        return [t for t, on in (("alertmanager", self.alertmanager_url), ("webhook", self.webhook_url),
                                ("pagerduty", self.pagerduty_routing_key)) if on]


def alertmanager_endpoint(url: str) -> str:
    """A base URL (http://am:9093, or with a route prefix) -> its POST /api/v2/alerts endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/api/v2/alerts") else url + "/api/v2/alerts"


def _check_url(name: str, url: str) -> None:
    if not url:
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} {url!r} is not an http:// or https:// URL")


# ------------------------------------------------------------------------------ the alert itself
class BadAlert(ValueError):
    """A record of the alerts topic that is not an alert we can deliver (dead-lettered, with this)."""


@dataclass(frozen=True)
class Alert:
    id: str
    source: str  # the log source ("hdfs"; the envelope's source without "logad/")
    session: str
    time: float  # when the detector decided (epoch seconds)
    model_version: str
    severity: str  # one of SEVERITIES
    summary: str  # one line, <= SUMMARY_MAX characters
    description: str  # why, in a few lines
    early: bool
    envelope: dict[str, Any] = field(repr=False, compare=False)


# The fields schema v2 added: optional here, so alerts written before it are still delivered; a
# later schema_version is delivered too (what notify reads is checked by the rest of the schema).
V2_FIELDS = ("schema_version", "severity", "summary", "evidence")
_LENIENT = copy.deepcopy(SCHEMA)
_LENIENT["properties"]["data"]["required"] = [f for f in SCHEMA["properties"]["data"]["required"] if f not in V2_FIELDS]
for _f in V2_FIELDS:
    _LENIENT["properties"]["data"]["properties"].pop(_f, None)
# a NaN score is written as null: the alert is still worth delivering (severity_of reads it as 0)
_LENIENT["properties"]["data"]["properties"]["scores"] = {"type": "object",
                                                          "additionalProperties": {"type": ["number", "null"]}}
_validator: Any = None


def parse_alert(value: bytes | None, now: float) -> Alert:
    """An alerts-topic record -> Alert; BadAlert naming what is wrong otherwise. `now` stands in for
    an envelope time that cannot be read, or one in the future (a skewed clock upstream)."""
    global _validator
    if _validator is None:
        import jsonschema  # once a record arrives: the module is slow to import

        _validator = jsonschema.validators.validator_for(_LENIENT)(_LENIENT)
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError as e:
        raise BadAlert(f"not JSON ({e})") from None
    err = next(iter(_validator.iter_errors(event)), None)
    if err is not None:
        where = "/".join(map(str, err.absolute_path))
        raise BadAlert(f"not an alert envelope: {where + ': ' if where else ''}{err.message[:200]}")
    if event["type"] != ALERT_TYPE:
        raise BadAlert(f"type {event['type']!r} on the alerts topic (expected {ALERT_TYPE})")
    d = event["data"]
    source = event["source"].removeprefix("logad/")
    try:
        t = datetime.fromisoformat(event["time"])
        t = (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        t = now
    sev, summary = d.get("severity"), d.get("summary")
    if sev not in SEVERITIES or not isinstance(summary, str) or not summary.strip():
        ws = _window_score(source, d)
        sev = sev if sev in SEVERITIES else severity_of(ws)
        summary = summary if isinstance(summary, str) and summary.strip() else summary_of(ws)
    return Alert(id=event["id"], source=source, session=d["session_id"] or event["subject"], time=min(t, now),
                 model_version=d["model_version"], severity=sev, summary=one_line(summary, SUMMARY_MAX),
                 description=explain(d)[:DESCRIPTION_MAX], early=bool(d["early"]), envelope=event)


def _window_score(source: str, d: dict) -> WindowScore:
    """What severity_of / summary_of read, rebuilt from a v1 envelope (the template ids are not in
    an alert: placeholders of the window's length stand in for them)."""
    w = d["window"]
    start, end, ctx = w["start"], w["end"], w["n_context"]
    if not all(type(x) is int for x in (start, end, ctx)) or not (start >= 0 and ctx >= 0 and start + ctx < end
                                                                  and end - start <= MAX_WINDOW):
        raise BadAlert(f"not an alert envelope: window [{start!r}, {end!r}) with n_context {ctx!r}")
    window = Window(source=source, session_id=d["session_id"], start=start, ids=(0,) * (end - start), n_context=ctx,
                    first_ts=None, last_ts=None, reason=str(w["reason"]), final=bool(w["final"]),
                    n_lines=d["line_count"])
    scores = {k: v for k, v in d["scores"].items() if v is not None}
    return WindowScore(window, scores, bool(d["is_anomaly"]), tuple(d["reasons"]), tuple(d["surprising"]))


def explain(data: dict) -> str:
    """A few lines: which rules fired with their values, the window, the most surprising events."""
    w = data.get("window", {})
    score = data.get("scores", {}).get("combined")
    lines = ["why: " + ("; ".join(map(str, data.get("reasons", []))) or "(no rule named)"),
             f"window [{w.get('start')}, {w.get('end')}) closed by {w.get('reason')}, "
             f"{data.get('line_count')} lines" + (f", combined score {score:+.2f}" if isinstance(score, (int, float))
                                                   else "") + f", model {data.get('model_version')}"]
    if data.get("early"):
        lines.append("early alert: the session is still open")
    for s in (data.get("surprising") or [])[:3]:
        exp = s.get("expected") or []
        top = f" (expected '{clip(str(exp[0].get('template')), 60)}' p={exp[0].get('prob', 0):.2f})" if exp else ""
        lines.append(f"unexpected #{s.get('index')} p={s.get('prob', 0):.4f} "
                     f"'{clip(str(s.get('template')), 100)}'{top}")
    lines += [f"line: {clip(one_line(line, 10_000), 300)}" for line in evidence_lines(data)[:3]]
    return "\n".join(lines)


def evidence_lines(data: dict) -> list[str]:
    """The raw lines quoted by a v2 alert (data.evidence), [] when it has none or they are malformed."""
    ev = data.get("evidence")
    return [e["line"] for e in ev if isinstance(e, dict) and isinstance(e.get("line"), str)] \
        if isinstance(ev, list) else []


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def one_line(text: str, n: int) -> str:
    return clip(" ".join(text.split()), n)


def link(cfg: NotifyConfig, alert: Alert) -> str:
    """cfg.link_url with {id}, {session}, {source} replaced (URL-quoted); "" when not configured."""
    url = cfg.link_url
    for k, v in (("id", alert.id), ("session", alert.session), ("source", alert.source)):
        url = url.replace("{" + k + "}", urllib.parse.quote(v, safe=""))
    return url


class SeenIds:
    """The last `capacity` alert ids: add() is False for an id seen before (at-least-once upstream)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, alert_id: str) -> bool:
        if alert_id in self._ids:
            self._ids.move_to_end(alert_id)
            return False
        self._ids[alert_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


# ------------------------------------------------------------------------------- the payloads
def webhook_payload(alert: Alert, cfg: NotifyConfig | None = None) -> dict[str, Any]:
    """Slack-compatible (`text`, mrkdwn with &, <, > escaped) plus the fields a generic receiver wants."""
    url = link(cfg, alert) if cfg else ""
    text = f"*[{alert.severity.upper()}]* {_slack(alert.summary)}\n```{_slack(alert.description)}```"
    if url:
        text += f"\n<{url}|details>"
    return {"text": text, "summary": alert.summary, "severity": alert.severity, "alert": alert.envelope}


def _slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pagerduty_event(alert: Alert, routing_key: str, cfg: NotifyConfig | None = None) -> dict[str, Any]:
    """Events v2 `trigger`; dedup_key = the alert id, so a re-delivered alert is one incident."""
    d = alert.envelope["data"]
    event: dict[str, Any] = {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": alert.id,
        "payload": {
            "summary": one_line(alert.summary, SUMMARY_MAX), "source": alert.envelope["source"],
            "severity": alert.severity, "timestamp": iso_time(alert.time), "component": alert.session,
            "group": alert.source, "class": "log_anomaly",
            "custom_details": {"alert_id": alert.id, "session": alert.session, "explanation": alert.description,
                               "reasons": d["reasons"], "scores": d["scores"], "window": d["window"],
                               "line_count": d["line_count"], "model_version": alert.model_version,
                               "early": alert.early,
                               "evidence": [clip(x, 1000) for x in evidence_lines(d)[:5]]}},
        "client": "logad",
    }
    url = link(cfg, alert) if cfg else ""
    if url:
        event["client_url"] = url
        event["links"] = [{"href": url, "text": "logad alert"}]
    return event


def retry_delay(attempt: int, cfg: NotifyConfig, rand: float) -> float:
    """Seconds before retry `attempt` (0 = the first retry): backoff_s doubled per retry, capped at
    backoff_max_s, then jittered into [d/2, d] (rand in [0, 1)) so retries of many alerts spread out."""
    d = min(cfg.backoff_max_s, cfg.backoff_s * 2.0 ** min(attempt, 60))
    return d / 2 + rand * d / 2


def retryable(status: int | None) -> bool:
    """None = no HTTP answer (refused, timeout, reset): retry. 408, 425, 429 and 5xx: retry. Any
    other 4xx: the receiver refuses this payload; it will refuse it again."""
    return status is None or status in (408, 425, 429) or status >= 500


def worst_case_batch_s(cfg: NotifyConfig) -> float:
    """The longest one batch's deliveries can take (all tries timing out, longest delays)."""
    one = cfg.tries * cfg.timeout_s + sum(min(cfg.backoff_max_s, cfg.backoff_s * 2.0 ** i)
                                           for i in range(cfg.tries - 1))
    return one * math.ceil(cfg.batch_size / cfg.concurrency)
