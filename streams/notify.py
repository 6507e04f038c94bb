"""`logad notify`: the alerts topic -> Alertmanager, a webhook (Slack-compatible), PagerDuty Events v2.

    alerts topic (group notify.group_id) -> batch -> every configured target -> commit
                                                  \\-> dead-letter topic (bad JSON, undeliverable)

At-least-once: a batch's offsets are committed once each of its alerts was delivered to every
target or dead-lettered with the reason ("notify_failed: webhook: HTTP 500 after 5 tries"); a crash
before that re-reads the batch, and so does a SIGTERM once the batch has had notify.stop_grace_s to
finish. Alert ids already handled by this process are dropped
(the detector may send the same id twice; PagerDuty dedupes on it too). Failed requests are retried
with exponential backoff and jitter (logad.notify.retry_delay); a 4xx other than 408/425/429 is not
retried: the receiver will refuse the same payload again.

Alertmanager also gets, outside the commit path, the re-sends of firing alerts and the
resolutions after the quiet period (logad.alertmanager.AlertmanagerState); a failed one is tried again
later, and the explicit endsAt of every firing alert bounds what a lost resolution can cost.
HTTP is urllib in a thread pool: no client dependency, and redirects are refused rather than
followed (urllib would turn a redirected POST into a GET and report success).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from logad.alertmanager import AlertmanagerState, Tracked
from logad.config import Settings
from logad.errors import ConfigError
from logad.notify import (
    Alert, BadAlert, NotifyConfig, SeenIds, alertmanager_endpoint, pagerduty_event, parse_alert, retry_delay,
    retryable, webhook_payload, worst_case_batch_s,
)

log = logging.getLogger("logad.notify")
AM_CHUNK = 500  # alerts per Alertmanager post from the re-send/resolve tick


class PostFailed(Exception):
    def __init__(self, status: int | None, why: str, head: str = "") -> None:
        super().__init__(why)
        self.status, self.why, self.head = status, why, head


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError: not delivered


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: bytes, timeout_s: float) -> None:
    """POST `body`; returns on 2xx, raises PostFailed (status None when there was no HTTP answer)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "logad-notify"})
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            resp.read(65536)
    except urllib.error.HTTPError as e:
        try:
            head = e.read(300).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            head = ""
        raise PostFailed(e.code, f"HTTP {e.code}", " ".join(head.split())) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise PostFailed(None, " ".join(str(why).split())[:200] or type(why).__name__) from None


@dataclass
class NotifyStats:
    """What one run did (tests read it; the metrics count the same)."""
    delivered: Counter = field(default_factory=Counter)  # target -> alerts delivered
    dead_lettered: Counter = field(default_factory=Counter)  # reason code -> records
    duplicates: int = 0
    resolved: int = 0  # Alertmanager resolutions posted
    resent: int = 0  # Alertmanager re-sends of firing alerts posted
    committed: int = 0  # records whose offsets were committed


class _Metrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.delivered = PromCounter("logad_notify_delivered", "alerts delivered, by target", ["target"], registry=r)
        self.failed = PromCounter("logad_notify_failed_requests", "failed requests (retried or not), by target",
                                  ["target"], registry=r)
        self.dead = PromCounter("logad_notify_dead_letters", "records dead-lettered, by target or bad_alert",
                                ["target"], registry=r)
        self.duplicates = PromCounter("logad_notify_duplicates", "alerts dropped as already handled", registry=r)


class Notifier:
    """Delivery of one batch at a time, and the Alertmanager tick. No Kafka here: `dead_letter` is
    called for each record to dead-letter (a coroutine), the caller commits."""

    def __init__(self, cfg: NotifyConfig, dead_letter: Callable[[Any, str, str], Any],
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 stats: NotifyStats | None = None) -> None:
        self.cfg = cfg
        self.dead_letter = dead_letter
        self.clock = clock
        self.stats = stats if stats is not None else NotifyStats()
        self.metrics = _Metrics(registry or CollectorRegistry())
        self.seen = SeenIds(cfg.dedupe_ids)
        self.am = AlertmanagerState(cfg) if cfg.alertmanager_url else None
        self.am_url = alertmanager_endpoint(cfg.alertmanager_url) if cfg.alertmanager_url else ""
        self._am_retry_at = 0.0
        self._am_failures = 0
        self._rand = random.Random()
        self._pool = ThreadPoolExecutor(max_workers=3 * cfg.concurrency, thread_name_prefix="notify-http")
        self._sem = {t: asyncio.Semaphore(cfg.concurrency) for t in ("alertmanager", "webhook", "pagerduty")}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def post(self, target: str, url: str, body: bytes, tries: int | None = None) -> str | None:
        """None once delivered; else why not, after the tries."""
        tries = self.cfg.tries if tries is None else tries
        loop = asyncio.get_running_loop()
        err = PostFailed(None, "not tried")
        for attempt in range(tries):
            try:
                async with self._sem[target]:
                    await loop.run_in_executor(self._pool, post_json, url, body, self.cfg.timeout_s)
                return None
            except PostFailed as e:
                err = e
                self.metrics.failed.labels(target).inc()
                if not retryable(e.status):
                    return f"{target}: {e.why} (not retried)" + (f": {e.head[:200]}" if e.head else "")
            if attempt + 1 < tries:
                await asyncio.sleep(retry_delay(attempt, self.cfg, self._rand.random()))
        return f"{target}: {err.why} after {tries} tries" + (f": {err.head[:200]}" if err.head else "")

    async def handle(self, records: Sequence[Any]) -> None:
        """Deliver a batch of alerts-topic records to every target; dead-letter what cannot be."""
        now = self.clock()
        fresh: list[tuple[Any, Alert]] = []
        for r in records:
            try:
                alert = parse_alert(r.value, now)
            except BadAlert as e:
                await self._dead(r, "bad_alert", f"bad_alert: {e}")
                continue
            if not self.seen.add(alert.id):
                self.stats.duplicates += 1
                self.metrics.duplicates.inc()
                continue
            fresh.append((r, alert))
        if not fresh:
            return
        results = await asyncio.gather(self._to_alertmanager(fresh, now), self._each(fresh, "webhook"),
                                       self._each(fresh, "pagerduty"))
        for target, failures in zip(("alertmanager", "webhook", "pagerduty"), results):
            for r, why in failures:
                log.warning("alert %s/%d@%d not delivered, dead-lettered: %s", r.topic, r.partition, r.offset, why)
                await self._dead(r, target, f"notify_failed: {why}")

    async def _dead(self, r: Any, target: str, reason: str) -> None:
        code = reason.split(":", 1)[0]
        self.stats.dead_lettered[code] += 1
        self.metrics.dead.labels(target).inc()
        await self.dead_letter(r, reason, target)

    def _delivered(self, target: str, n: int) -> None:
        if not n:
            return
        self.stats.delivered[target] += n
        self.metrics.delivered.labels(target).inc(n)

    async def _to_alertmanager(self, fresh: list[tuple[Any, Alert]], now: float) -> list[tuple[Any, str]]:
        if self.am is None:
            return []
        items: dict[int, Tracked] = {}
        for _, a in fresh:
            for t in self.am.add(a, now):
                items[id(t)] = t
        batch = list(items.values())
        why = await self.post("alertmanager", self.am_url, orjson.dumps(self.am.payload(batch, now)))
        if why is None:
            self.am.sent(batch, now)
            self._delivered("alertmanager", len(fresh))
            return []
        self.am.failed(batch, now)  # still firing here: the tick re-sends them once Alertmanager is back
        return [(r, why) for r, _ in fresh]

    async def _each(self, fresh: list[tuple[Any, Alert]], target: str) -> list[tuple[Any, str]]:
        cfg = self.cfg
        if target == "webhook" and cfg.webhook_url:
            url, build = cfg.webhook_url, (lambda a: webhook_payload(a, cfg))
        elif target == "pagerduty" and cfg.pagerduty_routing_key:
            url, build = cfg.pagerduty_url, (lambda a: pagerduty_event(a, cfg.pagerduty_routing_key, cfg))
        else:
            return []
        whys = await asyncio.gather(*(self.post(target, url, orjson.dumps(build(a))) for _, a in fresh))
        self._delivered(target, sum(w is None for w in whys))
        return [(r, w) for (r, _), w in zip(fresh, whys) if w is not None]

    async def tick(self) -> None:
        """Alertmanager re-sends and resolutions that are due; one try each, backing off while it fails."""
        now = self.clock()
        if self.am is None or now < self._am_retry_at:
            return
        due = self.am.due(now)
        for i in range(0, len(due), AM_CHUNK):
            chunk = due[i:i + AM_CHUNK]
            why = await self.post("alertmanager", self.am_url, orjson.dumps(self.am.payload(chunk, now)), tries=1)
            if why is not None:
                self.am.failed(chunk, now)
                self._am_retry_at = now + retry_delay(self._am_failures, self.cfg, self._rand.random())
                self._am_failures += 1
                log.warning("Alertmanager re-send/resolve failed (%d due): %s", len(due), why)
                return
            self.stats.resolved += sum(t.resolved for t in chunk)
            self.stats.resent += sum(not t.resolved for t in chunk)
            self.am.sent(chunk, now)
        self._am_failures = 0


def notify_config(settings: Settings, cfg: NotifyConfig | None = None) -> NotifyConfig:
    """`cfg`, else settings.notify; ConfigError when no target is configured."""
    cfg = cfg or settings.notify
    if not cfg.targets():
        raise ConfigError("notify has no target: set notify.alertmanager_url (LOGAD_NOTIFY_ALERTMANAGER_URL), "
                          "notify.webhook_url (LOGAD_NOTIFY_WEBHOOK_URL) or notify.pagerduty_routing_key "
                          "(LOGAD_NOTIFY_PAGERDUTY_ROUTING_KEY)")
    return cfg


async def serve_notify(settings: Settings, cfg: NotifyConfig | None = None, *, stop: asyncio.Event | None = None,
                       registry: CollectorRegistry | None = None, stats: NotifyStats | None = None) -> NotifyStats:
    """Consume settings.topics.alerts until `stop` is set (default: until SIGTERM/SIGINT); `stats`
    is filled as it goes (and returned)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.errors import CommitFailedError

    from streams.codec import encode_dead_letter
    from streams.kafka_clients import check_broker, consumer_kwargs, ensure_topics, producer_kwargs

    cfg = notify_config(settings, cfg)
    topics = settings.topics
    await check_broker(settings.kafka)
    await ensure_topics(settings.kafka, {topics.alerts: topics.partitions, topics.dead_letter: topics.partitions},
                        topics.replication)
    loop = asyncio.get_running_loop()
    signals = stop is None
    stop = stop or asyncio.Event()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # Between two polls a batch may retry for its worst case: leaving the group meanwhile would
    # hand its partitions to another member, which then delivers the batch a second time.
    poll_ms = int((worst_case_batch_s(cfg) + 60.0) * 1000)
    consumer = AIOKafkaConsumer(topics.alerts, **consumer_kwargs(
        settings.kafka, group_id=cfg.group_id, max_poll_interval_ms=max(poll_ms, 300_000)))
    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka))

    async def dead_letter(r: Any, reason: str, target: str) -> None:
        await producer.send_and_wait(topics.dead_letter, key=r.key, value=encode_dead_letter(
            reason, r.topic, r.partition, r.offset, r.value, detail=f"target={target}"))

    notifier = Notifier(cfg, dead_letter, registry, stats=stats)
    tick_ms = int(min(1.0, cfg.quiet_s / 4, cfg.resend_s / 4) * 1000) or 1
    await producer.start()
    await consumer.start()
    log.info("notify ready: %s -> %s (group %s)", topics.alerts, ", ".join(cfg.targets()), cfg.group_id)
    waiter = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=tick_ms, max_records=cfg.batch_size)
            records = [r for recs in batch.values() for r in recs]
            if records:
                work = asyncio.create_task(notifier.handle(records))
                await asyncio.wait([work, waiter], return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    # Stopping mid-batch: some of it may already be delivered, so let it finish (and be
                    # committed) rather than deliver it twice after a restart; past the grace it is
                    # cancelled uncommitted and read again then (at-least-once either way).
                    await asyncio.wait([work], timeout=cfg.stop_grace_s)
                    if not work.done():
                        log.warning("stopping: a batch of %d alerts still in delivery after %.1f s is left "
                                    "uncommitted (delivered again after a restart)", len(records), cfg.stop_grace_s)
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                        break
                work.result()  # a producer failure ends the run uncommitted
                offsets = {TopicPartition(tp.topic, tp.partition): recs[-1].offset + 1
                           for tp, recs in batch.items() if recs}
                try:
                    await consumer.commit(offsets)
                    notifier.stats.committed += len(records)
                except CommitFailedError as e:  # the group rebalanced: the new owner delivers these again
                    log.warning("commit failed after delivery (%s): %d alerts may be delivered twice", e, len(records))
            await notifier.tick()
    finally:
        waiter.cancel()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        notifier.close()
        await consumer.stop()
        await producer.stop()
        s = notifier.stats
        log.info("notify stopped: delivered %s, dead-lettered %s, %d duplicates dropped, %d resolved",
                 dict(s.delivered), dict(s.dead_lettered), s.duplicates, s.resolved)
    return notifier.stats


def run_notify(settings: Settings, cfg: NotifyConfig | None = None) -> None:
    """`logad notify`: deliver alerts until SIGTERM/SIGINT. ConfigError / BrokerError propagate (one line)."""
    from prometheus_client import start_http_server

    from streams.worker import banner, setup_logging, use_uvloop

    cfg = notify_config(settings, cfg)
    use_uvloop()
    setup_logging(settings.logging)
    banner("notify", settings, targets=cfg.targets(), group=cfg.group_id, alerts=settings.topics.alerts)
    registry = CollectorRegistry()
    if cfg.metrics_port:
        try:
            start_http_server(cfg.metrics_port, addr=settings.web.host, registry=registry)
        except OSError as e:
            log.warning("metrics server not started on %s:%d: %s", settings.web.host, cfg.metrics_port, e)
    asyncio.run(serve_notify(settings, cfg, registry=registry))
