"""logad.notify: alert parsing, severity and summary, the webhook and PagerDuty payloads, retries, config (no network)."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from logad.alerts import make_event, severity_of, summary_of
from logad.errors import ConfigError
from logad.notify import (
    SUMMARY_MAX, V2_FIELDS, BadAlert, NotifyConfig, SeenIds, pagerduty_event, parse_alert,
    retry_delay, retryable, webhook_payload, worst_case_batch_s,
)
from logad.records import Window, WindowScore

T0 = 1_700_000_000.0


def window_score(session: str = "blk_123", start: int = 0, combined: float = 1.0,
                 reasons=("count_tail 5.2 > 2.63",), surprising: int = 3,
                 template: str = "Exception in receiveBlock for block <*>") -> WindowScore:
    w = Window(source="hdfs", session_id=session, start=start, ids=(1, 2, 3, 4), n_context=0, first_ts=T0 - 60,
               last_ts=T0 - 1, reason="terminal", n_lines=12)
    events = tuple({"index": i, "template_id": 7, "template_key": "k", "template": template if i == 0 else f"t{i}",
                    "prob": 0.0003,
                    "expected": [{"template_key": "e", "template": "Receiving block <*>", "prob": 0.91}]}
                   for i in range(surprising))
    return WindowScore(w, {"count_tail": 5.2, "combined": combined}, True, tuple(reasons), events)


def envelope(session: str = "blk_123", start: int = 0, combined: float = 1.0, reasons=("count_tail 5.2 > 2.63",),
             surprising: int = 3, template: str = "Exception in receiveBlock for block <*>", now: float = T0,
             model: str = "hdfs-v1", v1: bool = False, evidence=None, **data) -> dict:
    """An alert envelope as the scorer writes it; `v1`: as written before schema v2 (no severity,
    summary, evidence, schema_version)."""
    event = make_event(window_score(session, start, combined, reasons, surprising, template), model,
                       {"count_tail": 2.63}, now=now, evidence=evidence)
    if v1:
        for f in V2_FIELDS:
            del event["data"][f]
    event["data"].update(data)
    return event


def record(event: dict) -> bytes:
    return orjson.dumps(event)


CFG = NotifyConfig(alertmanager_url="http://127.0.0.1:9093", quiet_s=10.0, resend_s=60.0)


def test_parse_alert_takes_severity_and_summary_of_a_v2_alert() -> None:
    quoted = {"index": 2, "position": {"file": "x.log", "line": 9}, "line": "ERROR receiveBlock  blk_123"}
    e = envelope(evidence=[quoted])
    a = parse_alert(record(e), now=T0 + 5)
    assert a.source == "hdfs" and a.session == "blk_123" and a.model_version == "hdfs-v1"
    assert a.time == pytest.approx(T0, abs=0.001)
    assert (a.severity, a.summary) == (e["data"]["severity"], e["data"]["summary"])
    assert a.summary.startswith("hdfs session blk_123: events 1-4") and "rules: count_tail" in a.summary
    assert "count_tail 5.2 > 2.63" in a.description and "closed by terminal" in a.description
    assert "expected 'Receiving block <*>'" in a.description and "line: ERROR receiveBlock blk_123" in a.description


@pytest.mark.parametrize("combined,reasons", [
    (0.1, ["count_tail 3 > 2.6"]), (1.5, ["count_tail 5 > 2.6"]), (7.0, ["count_tail 9 > 2.6"]),
    (0.1, ["unseen_rate 0.2 > 0.05"]), (float("nan"), ["x 1 > 0"]),
])
def test_a_v1_alert_gets_the_severity_and_summary_a_v2_producer_gives(combined, reasons) -> None:
    ws = window_score(combined=combined, reasons=reasons)
    a = parse_alert(record(envelope(combined=combined, reasons=reasons, v1=True)), now=T0)
    assert a.severity == severity_of(ws) and a.summary == summary_of(ws)


def test_envelope_severity_and_summary_win_when_present() -> None:
    a = parse_alert(record(envelope(severity="info", summary="disk\nfull  on node 7")), now=T0)
    assert a.severity == "info" and a.summary == "disk full on node 7"
    b = parse_alert(record(envelope(v1=True, combined=9.0, summary="")), now=T0)
    assert b.severity == "critical" and b.summary.startswith("hdfs session blk_123: events 1-4")


def test_summary_is_capped_and_early_alerts_say_so() -> None:
    a = parse_alert(record(envelope(summary="y" * 5000, early=True)), now=T0)
    assert len(a.summary) == SUMMARY_MAX and a.summary.endswith("...")
    assert "early alert: the session is still open" in a.description


def test_a_v1_alert_without_surprising_events_still_reads() -> None:
    a = parse_alert(record(envelope(surprising=0, reasons=["count_tail 5 > 2", "unseen_rate 0.3 > 0.05"], v1=True)),
                    now=T0)
    assert a.summary == "hdfs session blk_123: events 1-4 (4 scored); rules: count_tail, unseen_rate"


def test_a_bad_window_of_a_v1_alert_is_a_bad_alert() -> None:
    e = envelope(v1=True)
    e["data"]["window"]["end"] = 10**12
    with pytest.raises(BadAlert, match="window"):
        parse_alert(record(e), now=T0)


@pytest.mark.parametrize("value,match", [
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not an alert envelope"),
    (orjson.dumps({"id": "x"}), "not an alert envelope"),
    (orjson.dumps({**envelope(), "data": {**envelope()["data"], "reasons": "x"}}), "data/reasons: 'x' is not"),
    (orjson.dumps({**envelope(), "data": {**envelope()["data"], "severity": "loud"}}), None),
])
def test_bad_records_are_bad_alerts(value, match) -> None:
    if match is None:  # an unknown severity is not a reason to lose the alert: the derived one is used
        assert parse_alert(value, now=T0).severity == "error"
        return
    with pytest.raises(BadAlert, match=match):
        parse_alert(value, now=T0)


def test_score_envelopes_are_not_alerts() -> None:
    e = envelope()
    e["type"] = "io.logad.score"
    with pytest.raises(BadAlert, match="io.logad.score"):
        parse_alert(record(e), now=T0)


def test_future_or_unreadable_time_is_taken_as_now() -> None:
    assert parse_alert(record(envelope(now=T0 + 3600)), now=T0).time == T0
    e = envelope()
    e["time"] = "yesterday"
    assert parse_alert(record(e), now=T0).time == T0


def test_webhook_payload_is_slack_compatible_and_escaped() -> None:
    a = parse_alert(record(envelope()), now=T0)
    cfg = NotifyConfig(webhook_url="http://127.0.0.1:1/hook", link_url="https://grafana.local/d?alert={id}&s={session}")
    p = webhook_payload(a, cfg)
    assert p["text"].startswith("*[ERROR]* hdfs session blk_123: events 1-4")
    assert "&lt;*&gt;" in p["text"] and "<*>" not in p["text"].split("\n<")[0]
    assert p["text"].endswith(f"<https://grafana.local/d?alert={a.id}&s=blk_123|details>")
    assert p["alert"]["id"] == a.id and p["severity"] == "error" and p["summary"] == a.summary


def test_pagerduty_event_v2() -> None:
    a = parse_alert(record(envelope(template="z" * 3000)), now=T0)
    ev = pagerduty_event(a, "R0UTING")
    assert ev["routing_key"] == "R0UTING" and ev["event_action"] == "trigger" and ev["dedup_key"] == a.id
    p = ev["payload"]
    assert len(p["summary"]) <= 1024 and p["severity"] in ("critical", "error", "warning", "info")
    assert p["source"] == "logad/hdfs" and p["component"] == "blk_123"
    assert datetime.fromisoformat(p["timestamp"]).timestamp() == pytest.approx(T0, abs=0.001)
    assert p["custom_details"]["alert_id"] == a.id and p["custom_details"]["reasons"] == ["count_tail 5.2 > 2.63"]
    assert "client_url" not in ev


def test_seen_ids_drop_duplicates_within_capacity() -> None:
    seen = SeenIds(2)
    assert seen.add("a") and seen.add("b") and not seen.add("a")
    assert seen.add("c") and seen.add("b")  # "b" was the oldest: forgotten
    assert not seen.add("c")


def test_retry_delays_grow_with_jitter_and_a_cap() -> None:
    cfg = NotifyConfig(webhook_url="http://x", backoff_s=0.5, backoff_max_s=4.0)
    assert [retry_delay(i, cfg, 0.999999) for i in range(5)] == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0])
    assert [retry_delay(i, cfg, 0.0) for i in range(5)] == pytest.approx([0.25, 0.5, 1.0, 2.0, 2.0])
    assert retry_delay(10_000, cfg, 0.5) == pytest.approx(3.0)
    assert [retryable(s) for s in (None, 500, 503, 429, 408, 400, 404, 301)] == [True] * 5 + [False] * 3
    assert worst_case_batch_s(NotifyConfig(tries=3, timeout_s=10, backoff_s=1, batch_size=16, concurrency=8)) == 2 * 33


@pytest.mark.parametrize("kw,match", [
    ({"webhook_url": "ftp://x"}, "notify.webhook_url 'ftp://x' is not an http"),
    ({"alertmanager_url": "127.0.0.1:9093"}, "notify.alertmanager_url"),
    ({"pagerduty_url": ""}, None),
    ({"pagerduty_url": "", "pagerduty_routing_key": "k"}, "pagerduty_url is empty"),
    ({"quiet_s": 0}, "notify.quiet_s must be a positive number of seconds"),
    ({"timeout_s": float("inf")}, "notify.timeout_s"),
    ({"backoff_s": 5.0, "backoff_max_s": 1.0}, "backoff_max_s"),
    ({"tries": 0}, "notify.tries must be >= 1"),
    ({"extra_labels": {"severity": "x"}}, "not a usable label name"),
    ({"extra_labels": {"bad-name": "x"}}, "not a usable label name"),
    ({"link_url": "grafana/{id}"}, "notify.link_url"),
])
def test_config_is_validated(kw, match) -> None:
    if match is None:
        NotifyConfig(**kw)
        return
    with pytest.raises(ConfigError, match=match):
        NotifyConfig(**kw)


def test_targets_and_secret_kept_out_of_repr() -> None:
    cfg = NotifyConfig(alertmanager_url="http://a", pagerduty_routing_key="s3cret")
    assert cfg.targets() == ["alertmanager", "pagerduty"] and "s3cret" not in repr(cfg)
    assert NotifyConfig().targets() == []
