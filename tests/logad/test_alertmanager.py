"""logad.alertmanager: postable alerts, firing, refresh, re-send, resolution, bounds."""

from __future__ import annotations

import dataclasses

from logad.alertmanager import AlertmanagerState, alertmanager_payload
from logad.notify import alertmanager_endpoint, parse_alert
from tests.logad.test_notify import CFG, T0, envelope, record


def test_alertmanager_payload_labels_annotations_and_times() -> None:
    cfg = dataclasses.replace(CFG, extra_labels={"team": "storage"})
    a = parse_alert(record(envelope()), now=T0 + 2)
    (p,) = alertmanager_payload([a], cfg, now=T0 + 2)
    assert p["labels"] == {"team": "storage", "alertname": "LogAnomaly", "source": "hdfs", "session": "blk_123",
                           "model_version": "hdfs-v1", "severity": "error"}
    assert p["annotations"]["summary"] == a.summary and p["annotations"]["alert_id"] == a.id
    assert p["annotations"]["description"] == a.description
    assert p["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert p["endsAt"] == "2023-11-14T22:13:32.000Z"  # now + quiet period (10 s)
    assert "generatorURL" not in p
    assert alertmanager_endpoint("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert alertmanager_endpoint("http://am/x/api/v2/alerts") == "http://am/x/api/v2/alerts"


def ends(st: AlertmanagerState, items, now) -> list[float]:
    return [st.ends_at(t, now) for t in items]


def test_quiet_period_resolves_and_later_alerts_extend_it() -> None:
    st = AlertmanagerState(CFG)
    (t,) = st.add(parse_alert(record(envelope(start=0)), now=T0), now=T0)
    st.sent([t], T0)
    assert st.due(T0 + 5) == []
    (t2,) = st.add(parse_alert(record(envelope(start=4)), now=T0 + 5), now=T0 + 5)  # same session: refreshed
    assert t2 is t and ends(st, [t], T0 + 5) == [T0 + 15]
    st.sent([t], T0 + 5)
    assert st.due(T0 + 14.9) == []
    (r,) = st.due(T0 + 15.2)  # 10 s without an alert of the session: resolved, with endsAt in the past
    assert r is t and r.resolved and st.payload([r], T0 + 15.2)[0]["endsAt"] == "2023-11-14T22:13:35.000Z"
    st.sent([r], T0 + 15.2)
    assert st.due(T0 + 100) == [] and not st.firing


def test_firing_alerts_are_resent_before_they_would_expire() -> None:
    cfg = dataclasses.replace(CFG, quiet_s=3600.0, resend_s=60.0)
    st = AlertmanagerState(cfg)
    (t,) = st.add(parse_alert(record(envelope()), now=T0), now=T0)
    assert ends(st, [t], T0) == [T0 + 240]  # never relies on Alertmanager's resolve_timeout
    st.sent([t], T0)
    assert st.due(T0 + 59) == []
    assert st.due(T0 + 60) == [t] and ends(st, [t], T0 + 60) == [T0 + 300]
    st.sent([t], T0 + 60)
    assert st.due(T0 + 3600) == [t] and t.resolved


def test_severity_rises_with_a_new_label_set_and_never_falls() -> None:
    st = AlertmanagerState(CFG)
    (t,) = st.add(parse_alert(record(envelope(combined=1.5)), now=T0), now=T0)
    st.sent([t], T0)
    new, old = st.add(parse_alert(record(envelope(start=4, combined=6.0)), now=T0 + 1), now=T0 + 1)
    assert old is t and old.resolved and new.labels["severity"] == "critical"
    assert st.payload([old], T0 + 1)[0]["endsAt"] == "2023-11-14T22:13:21.000Z"
    st.sent([new, old], T0 + 1)
    (same,) = st.add(parse_alert(record(envelope(start=8, combined=0.1)), now=T0 + 2), now=T0 + 2)
    assert same is new and same.labels["severity"] == "critical"


def test_failed_posts_stay_due_and_sessions_are_separate() -> None:
    st = AlertmanagerState(CFG)
    a = st.add(parse_alert(record(envelope(session="a")), now=T0), now=T0)
    b = st.add(parse_alert(record(envelope(session="b")), now=T0), now=T0)
    st.failed(a + b, T0)
    assert st.due(T0 + 1) == a + b  # never posted: re-sent by the next tick
    st.sent(a + b, T0 + 1)
    (r1, r2) = st.due(T0 + 12)
    st.failed([r1, r2], T0 + 12)  # Alertmanager resolved them itself at the endsAt we sent (T0 + 10)
    assert st.due(T0 + 12) == []
    (c,) = st.add(parse_alert(record(envelope(session="c")), now=T0 + 13), now=T0 + 13)
    st.sent([c], T0 + 13)
    (c2,) = st.add(parse_alert(record(envelope(session="c", start=4)), now=T0 + 14), now=T0 + 14)
    st.failed([c2], T0 + 14)  # the refresh (a later endsAt) did not get through: due at once, not in resend_s
    assert st.due(T0 + 14.5) == [c]


def test_tracking_is_bounded() -> None:
    st = AlertmanagerState(CFG, max_tracked=2)
    for i in range(3):
        st.add(parse_alert(record(envelope(session=f"s{i}")), now=T0 + i), now=T0 + i)
    assert [k[2] for k in st.firing] == ["s1", "s2"] and [t.labels["session"] for t in st.ending] == ["s0"]
