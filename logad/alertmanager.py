"""Alerts -> Alertmanager (v2 API): postable alerts, and which of them fire, and when they resolve.

Pure: no HTTP (streams/notify.py posts what this builds).

    alertmanager_payload(alerts)  the firing postable alerts of new alerts (the body of POST /api/v2/alerts)
    AlertmanagerState             one Alertmanager alert per (alertname, source, session): fired on the
                                  session's first alert, refreshed by later ones, re-sent every resend_s,
                                  resolved (re-sent with endsAt) after quiet_s without a new alert

Every firing alert carries an explicit endsAt (never later than now + RESEND_HORIZON x resend_s):
Alertmanager's resolve_timeout then never applies, and alerts of a notifier that died resolve on
their own instead of firing forever.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from logad.alerts import SEVERITIES, iso_time
from logad.notify import RESEND_HORIZON, Alert, NotifyConfig, link


def am_labels(alert: Alert, cfg: NotifyConfig) -> dict[str, str]:
    return {**cfg.extra_labels, "alertname": cfg.alertname, "source": alert.source, "session": alert.session,
            "model_version": alert.model_version, "severity": alert.severity}


def am_annotations(alert: Alert) -> dict[str, str]:
    return {"summary": alert.summary, "description": alert.description, "alert_id": alert.id,
            "alert_time": iso_time(alert.time)}


def postable(labels: dict[str, str], annotations: dict[str, str], starts_at: float, ends_at: float,
             generator_url: str = "") -> dict[str, Any]:
    """One Alertmanager v2 postable alert (RFC 3339 times, UTC)."""
    out: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": iso_time(starts_at),
                           "endsAt": iso_time(max(ends_at, starts_at + 0.001))}  # endsAt <= startsAt is refused
    if generator_url:
        out["generatorURL"] = generator_url
    return out


def alertmanager_payload(alerts: Sequence[Alert], cfg: NotifyConfig, now: float) -> list[dict[str, Any]]:
    """Firing postable alerts for `alerts` as first seen at `now` (the body of POST /api/v2/alerts)."""
    ends = now + min(cfg.quiet_s, RESEND_HORIZON * cfg.resend_s)
    return [postable(am_labels(a, cfg), am_annotations(a), a.time, ends, link(cfg, a)) for a in alerts]


@dataclass(eq=False)  # identity: two alerts with equal fields are still two entries
class Tracked:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    last_seen: float  # when its latest alert reached us: the quiet period counts from here
    generator_url: str = ""
    sent_at: float | None = None  # last successful post
    sent_ends: float | None = None  # the endsAt of that post
    resolved: bool = False  # to be posted as resolved, then forgotten


def _key(labels: dict[str, str]) -> tuple[str, str, str]:
    return labels["alertname"], labels["source"], labels["session"]


class AlertmanagerState:
    """Which Alertmanager alerts fire, and what to post when.

    One alert per (alertname, source, session): a later alert of the session refreshes it (latest
    annotations, quiet period restarted); its severity only rises (a critical window then a
    warning one stays critical). A change of labels (severity raised, new model version) resolves
    the old label set and fires the new one, since Alertmanager identifies an alert by its labels.
    Time is wall-clock epoch seconds (startsAt/endsAt are absolute times). The quiet period counts
    from when an alert reached us, not from its envelope time: a backlog read after an outage then
    fires and resolves later, instead of arriving already resolved (which Alertmanager would never
    notify). `max_tracked` bounds the memory: beyond it, the sessions quiet the longest are resolved
    early."""

    def __init__(self, cfg: NotifyConfig, max_tracked: int = 100_000) -> None:
        self.cfg = cfg
        self.max_tracked = max_tracked
        self.firing: OrderedDict[tuple[str, str, str], Tracked] = OrderedDict()  # least recently seen first
        self.ending: list[Tracked] = []  # resolved, not yet posted

    def add(self, alert: Alert, now: float) -> list[Tracked]:
        """Account for a new alert; returns what must be posted now (the firing alert, and a
        resolved one when the labels changed)."""
        labels = am_labels(alert, self.cfg)
        key = _key(labels)
        old = self.firing.pop(key, None)
        out: list[Tracked] = []
        if old is not None:
            if SEVERITIES.index(old.labels["severity"]) < SEVERITIES.index(labels["severity"]):
                labels["severity"] = old.labels["severity"]  # never downgrade a firing alert
            if labels == old.labels:
                old.annotations, old.last_seen = am_annotations(alert), now
                self.firing[key] = old
                return [old]
            old.resolved = True
            self.ending.append(old)
            out.append(old)
        t = Tracked(labels, am_annotations(alert), starts_at=min(alert.time, now), last_seen=now,
                    generator_url=link(self.cfg, alert))
        self.firing[key] = t
        while len(self.firing) > self.max_tracked:
            _, evicted = self.firing.popitem(last=False)
            evicted.resolved = True
            self.ending.append(evicted)
        return [t, *out]

    def due(self, now: float) -> list[Tracked]:
        """What to post at `now`: alerts whose quiet period ended (as resolved), firing ones not
        posted for resend_s, and resolutions not posted yet."""
        for key in [k for k, t in self.firing.items() if now >= t.last_seen + self.cfg.quiet_s]:
            t = self.firing.pop(key)
            t.resolved = True
            self.ending.append(t)
        resend = [t for t in self.firing.values() if t.sent_at is None or now - t.sent_at >= self.cfg.resend_s]
        return [*self.ending, *resend]

    def ends_at(self, t: Tracked, now: float) -> float:
        if t.resolved:
            return min(now, t.last_seen + self.cfg.quiet_s)
        return min(t.last_seen + self.cfg.quiet_s, now + RESEND_HORIZON * self.cfg.resend_s)

    def payload(self, items: Sequence[Tracked], now: float) -> list[dict[str, Any]]:
        return [postable(t.labels, t.annotations, t.starts_at, self.ends_at(t, now), t.generator_url) for t in items]

    def sent(self, items: Sequence[Tracked], now: float) -> None:
        """The post of `items` succeeded: resolved ones are done."""
        for t in items:
            t.sent_at, t.sent_ends = now, self.ends_at(t, now)
        self._forget(lambda t: t in items)

    def failed(self, items: Sequence[Tracked], now: float) -> None:
        """The post failed: all stay due (a firing one at the next tick, not a resend_s later: its
        refresh may carry a later endsAt than Alertmanager has), except resolutions Alertmanager has
        made on its own (the endsAt it has passed) or never needed (it never got the firing alert)."""
        for t in items:
            if not t.resolved:
                t.sent_at = None
        self._forget(lambda t: t in items and (t.sent_ends is None or now >= t.sent_ends))

    def _forget(self, done: Callable[[Tracked], bool]) -> None:
        self.ending = [t for t in self.ending if not done(t)]
