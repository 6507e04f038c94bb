"""streams/notify.py on the real broker: a real Alertmanager (scripts/alertmanager-local), and local
HTTP receivers for the webhook and PagerDuty payloads; retries, dead letters, commits, dedupe."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from logad.alerts import make_event
from logad.config import KafkaConfig, Settings
from logad.notify import NotifyConfig
from logad.records import Window, WindowScore
from streams.notify import NotifyStats, serve_notify

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
AM_SCRIPT = REPO / "scripts" / "alertmanager-local"
AM_UNAVAILABLE = 4  # the script's exit status when the binary is absent and cannot be installed


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that records every JSON POST as (path, body) and
    answers with the status `answer(path)` returns (200 by default)."""

    def __init__(self, port: int = 0, answer: Callable[[str], int] = lambda path: 200) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.answer = answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((self.path, json.loads(body)))
                status = outer.answer(self.path)
                out = b'{"status": "success"}' if status < 300 else b'{"error": "refused by the test receiver"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [b for p, b in list(self.posts) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alert(session: str, start: int = 0, combined: float = 1.5, reasons=("count_tail 5.2 > 2.63",)) -> dict:
    w = Window(source="hdfs", session_id=session, start=start, ids=(1, 2, 3, 4), n_context=0, first_ts=1.0,
               last_ts=2.0, reason="terminal", n_lines=4)
    ev = ({"index": 1, "template_id": 9, "template_key": "E9", "template": "Exception in receiveBlock for block <*>",
           "prob": 0.0004, "expected": [{"template_key": "E5", "template": "Receiving block <*>", "prob": 0.9}]},)
    ws = WindowScore(w, {"count_tail": 5.2, "combined": combined}, True, tuple(reasons), ev)
    return make_event(ws, "hdfs-test", {"count_tail": 2.63}, now=time.time())


def settings_for(kafka_config: KafkaConfig, kafka_topics: Callable[..., str]) -> Settings:
    base = Settings()
    topics = dataclasses.replace(base.topics, alerts=kafka_topics(2, "alerts"), dead_letter=kafka_topics(2, "dead"),
                                 partitions=2)
    return dataclasses.replace(base, kafka=kafka_config, topics=topics)


def cfg_for(**kw: Any) -> NotifyConfig:
    kw.setdefault("group_id", f"notify-test-{uuid.uuid4().hex[:8]}")
    return NotifyConfig(**{"tries": 3, "backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 2.0, **kw})


async def produce(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    from streams.kafka_clients import producer_kwargs

    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka))
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topics.alerts, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def notify_until(settings: Settings, cfg: NotifyConfig, done: Callable[[NotifyStats], Awaitable[bool] | bool],
                       timeout_s: float = 60.0, started: Callable[[], None] | None = None) -> NotifyStats:
    """Run the notifier until done(stats) holds (polled), then stop it cleanly; fail after timeout_s."""
    stats = NotifyStats()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_notify(settings, cfg, stop=stop, stats=stats))
    if started:
        started()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ok = done(stats)
            if ok if isinstance(ok, bool) else await ok:
                break
            if task.done():
                task.result()
                raise AssertionError("the notifier stopped by itself")
            assert time.monotonic() < deadline, f"not done after {timeout_s} s: {stats}"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 30)
    return stats


async def dead_letters(settings: Settings) -> list[dict]:
    from streams.alerts_cli import read_topic

    return [orjson.loads(r.value) async for r in read_topic(settings, settings.topics.dead_letter)]


def rfc3339(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


# -------------------------------------------------------------------------------- Alertmanager
@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1 whose notifications (resolved too) go to `receiver` /am."""
    state = tmp_path / "am"
    cmd = [sys.executable, str(AM_SCRIPT), "--state-dir", str(state)]
    proc = subprocess.run([*cmd, "start", "--webhook-url", receiver.url("/am"), "--owner-pid", str(os.getpid())],
                          capture_output=True, text=True, timeout=700)
    if proc.returncode == AM_UNAVAILABLE:
        pytest.skip(f"no Alertmanager binary and it cannot be installed here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"scripts/alertmanager-local start failed: {proc.stderr.strip()}"
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([*cmd, "stop"], capture_output=True, text=True, timeout=60)


def am_alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_alertmanager_fires_then_resolves_after_the_quiet_period(
        kafka_config: KafkaConfig, kafka_topics: Callable[..., str], alertmanager: str, receiver: Receiver) -> None:
    settings = settings_for(kafka_config, kafka_topics)
    a1, a2, b = alert("blk_A", 0), alert("blk_A", 4, combined=0.5), alert("blk_B", 0, combined=6.0)
    records = [("blk_A", orjson.dumps(a1)), ("blk_A", orjson.dumps(a2)), ("blk_B", orjson.dumps(b)),
               ("blk_A", orjson.dumps(a1))]  # a re-delivered duplicate
    asyncio.run(produce(settings, records))
    # quiet_s leaves room for Alertmanager's group_wait (1 s) to send the firing notice before the resolution
    cfg = cfg_for(alertmanager_url=alertmanager, quiet_s=6.0, extra_labels={"env": "test"})
    seen: dict[str, dict] = {}

    async def firing_then_resolved(stats: NotifyStats) -> bool:
        listed = {a["labels"]["session"]: a for a in await asyncio.to_thread(am_alerts, alertmanager)}
        if len(listed) == 2 and not seen:
            seen.update(listed)
        resolved = {a["labels"]["session"] for body in receiver.bodies("/am") for a in body["alerts"]
                    if a["status"] == "resolved"}
        return bool(seen) and not listed and resolved == {"blk_A", "blk_B"} and stats.resolved == 2

    t0 = time.time()
    stats = asyncio.run(notify_until(settings, cfg, firing_then_resolved, timeout_s=60))
    assert set(seen) == {"blk_A", "blk_B"}
    am_a = seen["blk_A"]
    assert am_a["labels"] == {"alertname": "LogAnomaly", "source": "hdfs", "session": "blk_A",
                              "model_version": "hdfs-test", "severity": "error", "env": "test"}
    assert seen["blk_B"]["labels"]["severity"] == "critical"
    assert am_a["status"]["state"] == "active"
    # one Alertmanager alert per session: the later window refreshed it (its annotations), the
    # severity did not fall to a's warning, and it started when the first alert was decided
    assert am_a["annotations"]["alert_id"] == a2["id"] and am_a["annotations"]["summary"] == a2["data"]["summary"]
    assert "count_tail 5.2 > 2.63" in am_a["annotations"]["description"]
    assert abs(rfc3339(am_a["startsAt"]) - rfc3339(a1["time"])) < 0.01
    assert 5.0 < rfc3339(am_a["endsAt"]) - t0 < 6.0 + 30  # explicit endsAt: receipt + quiet period
    firing = [a for body in receiver.bodies("/am") for a in body["alerts"] if a["status"] == "firing"]
    assert {a["labels"]["session"] for a in firing} == {"blk_A", "blk_B"}  # Alertmanager notified both
    assert stats.delivered["alertmanager"] == 3 and stats.duplicates == 1 and stats.committed == 4
    assert not stats.dead_lettered


# ----------------------------------------------------------------------- webhook and PagerDuty
def test_webhook_and_pagerduty_payloads_once_per_alert_id(
        kafka_config: KafkaConfig, kafka_topics: Callable[..., str], receiver: Receiver) -> None:
    settings = settings_for(kafka_config, kafka_topics)
    alerts = [alert("blk_1"), alert("blk_2", combined=7.0), alert("blk_1", 4, reasons=("unseen_rate 0.5 > 0.05",))]
    records = [(a["subject"], orjson.dumps(a)) for a in alerts]
    asyncio.run(produce(settings, records + records[:2]))  # the first two twice (at-least-once upstream)
    cfg = cfg_for(webhook_url=receiver.url("/hook"), pagerduty_url=receiver.url("/pd"),
                  pagerduty_routing_key="test-routing-key")
    stats = asyncio.run(notify_until(settings, cfg, lambda s: s.committed == 5))
    assert stats.duplicates == 2 and stats.delivered == {"webhook": 3, "pagerduty": 3}
    hooks, pds = receiver.bodies("/hook"), receiver.bodies("/pd")
    by_id = {a["id"]: a for a in alerts}
    assert sorted(h["alert"]["id"] for h in hooks) == sorted(by_id)  # each alert exactly once
    for h in hooks:
        a = by_id[h["alert"]["id"]]
        assert h["text"].startswith(f"*[{a['data']['severity'].upper()}]* hdfs session {a['subject']}: events")
        assert "&lt;*&gt;" in h["text"] and h["summary"] == a["data"]["summary"]
    assert sorted(p["dedup_key"] for p in pds) == sorted(by_id)
    for p in pds:
        a = by_id[p["dedup_key"]]
        assert p["routing_key"] == "test-routing-key" and p["event_action"] == "trigger"
        assert p["payload"]["summary"] == a["data"]["summary"] and len(p["payload"]["summary"]) <= 1024
        assert p["payload"]["severity"] == a["data"]["severity"] and p["payload"]["source"] == "logad/hdfs"
        assert p["payload"]["custom_details"]["alert_id"] == a["id"]
    assert {p["payload"]["severity"] for p in pds} == {"error", "critical"}


def test_failing_receivers_dead_letter_with_the_reason_and_commit(
        kafka_config: KafkaConfig, kafka_topics: Callable[..., str], receiver: Receiver) -> None:
    settings = settings_for(kafka_config, kafka_topics)
    receiver.answer = lambda path: 500 if path == "/hook" else 400 if path == "/pd" else 200
    a, b = alert("blk_1"), alert("blk_2")
    asyncio.run(produce(settings, [("blk_1", orjson.dumps(a)), ("blk_x", b'{"not": json'), ("blk_2", orjson.dumps(b))]))
    cfg = cfg_for(webhook_url=receiver.url("/hook"), pagerduty_url=receiver.url("/pd"), pagerduty_routing_key="k")
    stats = asyncio.run(notify_until(settings, cfg, lambda s: s.committed == 3))
    assert len(receiver.bodies("/hook")) == 2 * 3  # 3 tries per alert on a 500
    assert len(receiver.bodies("/pd")) == 2  # a 400 is not retried
    assert stats.dead_lettered == {"notify_failed": 4, "bad_alert": 1} and not stats.delivered
    dead = asyncio.run(dead_letters(settings))
    reasons = sorted(d["reason"] for d in dead)
    assert reasons[0].startswith("bad_alert: not JSON")
    assert reasons[1:3] == ["notify_failed: pagerduty: HTTP 400 (not retried): "
                            '{"error": "refused by the test receiver"}'] * 2
    assert reasons[3:] == ["notify_failed: webhook: HTTP 500 after 3 tries: "
                           '{"error": "refused by the test receiver"}'] * 2
    assert {(d["topic"], d["head"][:40]) for d in dead} >= {(settings.topics.alerts, '{"not": json')}
    failed = [d["head"] for d in dead if d["reason"].startswith("notify_failed")]  # the record's first bytes
    assert sorted(sum(x["id"] in h for h in failed) for x in (a, b)) == [2, 2]

    # Restarted with working receivers, the same group reads on from its committed offsets: only
    # the new alert is delivered.
    receiver.answer = lambda path: 200
    before = len(receiver.posts)
    c = alert("blk_3")
    asyncio.run(produce(settings, [("blk_3", orjson.dumps(c))]))
    stats = asyncio.run(notify_until(settings, cfg, lambda s: s.committed == 1))
    assert [b["alert"]["id"] for p, b in receiver.posts[before:] if p == "/hook"] == [c["id"]]
    assert [b["dedup_key"] for p, b in receiver.posts[before:] if p == "/pd"] == [c["id"]]
    assert stats.delivered == {"webhook": 1, "pagerduty": 1} and not stats.dead_lettered


def test_a_receiver_down_at_first_gets_every_alert_once_after_retries(
        kafka_config: KafkaConfig, kafka_topics: Callable[..., str]) -> None:
    settings = settings_for(kafka_config, kafka_topics)
    alerts = [alert(f"blk_{i}") for i in range(3)]
    records = [(a["subject"], orjson.dumps(a)) for a in alerts]
    asyncio.run(produce(settings, records + records[:1]))
    port = free_port()
    cfg = cfg_for(webhook_url=f"http://127.0.0.1:{port}/hook", tries=10, backoff_s=0.2, backoff_max_s=1.0)
    late: list[Receiver] = []

    def start_later() -> None:  # nothing listens on the port for the first ~1.5 s
        threading.Timer(1.5, lambda: late.append(Receiver(port))).start()

    try:
        stats = asyncio.run(notify_until(settings, cfg, lambda s: s.committed == 4, started=start_later))
        assert late, "the receiver was never started"
        ids = [b["alert"]["id"] for b in late[0].bodies("/hook")]
        assert sorted(ids) == sorted(a["id"] for a in alerts)  # each exactly once
        assert stats.delivered == {"webhook": 3} and stats.duplicates == 1 and not stats.dead_lettered
    finally:
        for r in late:
            r.close()


def test_sigterm_stops_the_notifier_cleanly(kafka_config: KafkaConfig, kafka_topics: Callable[..., str],
                                            receiver: Receiver) -> None:
    """run_notify (what `logad notify` calls) in its own process: SIGTERM ends it with status 0."""
    import signal

    settings = settings_for(kafka_config, kafka_topics)
    a = alert("blk_1")
    asyncio.run(produce(settings, [("blk_1", orjson.dumps(a))]))
    env = {**os.environ, "LOGAD_KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
           "LOGAD_TOPICS_ALERTS": settings.topics.alerts, "LOGAD_TOPICS_DEAD_LETTER": settings.topics.dead_letter,
           "LOGAD_TOPICS_PARTITIONS": "2"}
    code = ("import sys; from logad.config import load_settings; from logad.notify import NotifyConfig; "
            "from streams.notify import run_notify; "
            "run_notify(load_settings(), NotifyConfig(webhook_url=sys.argv[1], group_id=sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, receiver.url("/hook"), f"notify-test-{uuid.uuid4().hex[:8]}"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not receiver.bodies("/hook") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [b["alert"]["id"] for b in receiver.bodies("/hook")] == [a["id"]]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-2000:]
    assert "notify stopped: delivered {'webhook': 1}" in out


@pytest.mark.parametrize("grace_s, finished", [(10.0, True), (0.2, False)])
def test_a_stop_mid_batch_lets_the_batch_finish_within_the_grace(
        kafka_config: KafkaConfig, kafka_topics: Callable[..., str], grace_s: float, finished: bool) -> None:
    """Stop while the receiver is still answering: within notify.stop_grace_s the batch finishes and is
    committed (a restarted notifier has nothing to deliver); past it the batch is left uncommitted and
    the next run delivers it again (at-least-once)."""
    settings = settings_for(kafka_config, kafka_topics)
    a = alert("blk_1")
    asyncio.run(produce(settings, [("blk_1", orjson.dumps(a))]))
    slow = Receiver(answer=lambda path: time.sleep(1.5) or 200)
    cfg = cfg_for(webhook_url=slow.url("/hook"), stop_grace_s=grace_s, timeout_s=5.0)

    async def stop_mid_batch() -> NotifyStats:
        stats, stop = NotifyStats(), asyncio.Event()
        task = asyncio.create_task(serve_notify(settings, cfg, stop=stop, stats=stats))
        deadline = time.monotonic() + 60
        while not slow.bodies("/hook"):  # the request arrived; its answer is 1.5 s away
            assert time.monotonic() < deadline and not task.done(), "the alert never reached the receiver"
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 30)
        return stats

    try:
        first = asyncio.run(stop_mid_batch())
        # The restarted notifier (same group) runs until it commits the batch again; when the first
        # committed it, for 6 s with nothing to deliver.
        until = time.monotonic() + 6
        second = asyncio.run(notify_until(settings, cfg, lambda s: s.committed >= 1 or (
            finished and time.monotonic() > until)))
    finally:
        slow.close()
    ids = [b["alert"]["id"] for b in slow.bodies("/hook")]
    if finished:
        assert (first.committed, first.delivered) == (1, {"webhook": 1})
        assert (second.committed, dict(second.delivered), ids) == (0, {}, [a["id"]])
    else:
        assert (first.committed, dict(first.delivered)) == (0, {})
        assert (second.committed, dict(second.delivered), ids) == (1, {"webhook": 1}, [a["id"], a["id"]])
