"""Scale-out harness: several `logad worker` and `logad scorer` processes on one pipeline (the workers
share the Faust app id, i.e. one consumer group per stage; the scorers share the scorer group), a
raw topic with one partition per "host", and a paced producer that keeps every session in one raw
partition.

    split_by_session(lines, 6)         line -> raw partition by a hash of its block id (every HDFS
                                       line of the sample names exactly one block: checked)
    ScaledPipeline(bootstrap, tmp, workers=3, scorers=2)
      .create_topics()                 raw topic with 6 partitions + every pipeline topic (6 each)
      .start() / .add_worker()         processes up (metrics served, scorers "ready")
      .feed(rate)                      Feeder thread: the sample in file order, each line to its partition
      .assignment()                    {client id: {"events": [...], "raw": [...]}} from the groups
      .committed(group, topic)         {partition: committed offset}
      .wait_drained()                  every stage drained, no session open in any live worker
      .supervise()                     restart workers that exited with the recovery-stall code
Offline reference of the windows: offline_windows() = `logad detect`'s windows of the same file.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from tests.reliability.harness import MODEL, RAW, Pipeline, Proc, free_port, quiet_kafka_clients, wait_for

RAW_PARTITIONS = 6
BLOCK = re.compile(rb"blk_-?\d+")


def sample_lines(path: Path = RAW) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return fh.read().splitlines()


def split_by_session(lines: list[bytes], parts: int) -> list[int]:
    """The raw partition of each line: crc32 of its block id mod `parts`. Refuses a line that names
    no block or several (its session could then span partitions and differ from offline)."""
    out = []
    for i, line in enumerate(lines):
        blocks = set(BLOCK.findall(line))
        if len(blocks) != 1:
            raise AssertionError(f"line {i + 1} names {len(blocks)} blocks: a session could span partitions")
        out.append(zlib.crc32(blocks.pop()) % parts)
    return out


def offline_windows(lines: list[bytes]) -> set[tuple[str, int, int]]:
    """(session id, start, end) of every window `logad detect` makes of the lines, in file order."""
    from types import SimpleNamespace

    from logad.config import SessionConfig
    from logad.detect_files import windows_from_lines
    from logad.parse import ParseStats
    from logad.session_rules import Sessionizer
    from streams.session_processor import load_session_rules

    vocab, fmt, rules = load_session_rules(MODEL, None, SessionConfig())
    det = SimpleNamespace(bundle=SimpleNamespace(vocab=vocab, rule=rules.rule))
    return {(w.session_id, w.start, w.end)
            for w in windows_from_lines(lines, fmt, det, Sessionizer(fmt.name, rules), ParseStats())}


def stream_windows(scores: dict[str, dict]) -> set[tuple[str, int, int]]:
    return {(s["subject"], s["data"]["window"]["start"], s["data"]["window"]["end"]) for s in scores.values()}


class Feeder(threading.Thread):
    """Produces (partition, line) pairs in order at `rate` lines/s, acks=all (producer_kwargs), in
    its own thread and event loop. `sent` counts lines handed to the producer so far."""

    def __init__(self, settings: Any, topic: str, items: list[tuple[int, bytes]], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.topic, self.items, self.rate = settings, topic, items, rate
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at = self.finished_at = 0.0

    def run(self) -> None:
        try:
            with quiet_kafka_clients():
                asyncio.run(self._go())
        except BaseException as e:  # reported by wait()
            self.error = e

    async def _go(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.kafka_clients import producer_kwargs

        producer = AIOKafkaProducer(**producer_kwargs(self.settings.kafka, linger_ms=10, max_batch_size=256 * 1024))
        await producer.start()
        try:
            self.started_at = time.monotonic()
            t0 = time.perf_counter()
            pending: list[asyncio.Future] = []
            for i, (p, v) in enumerate(self.items):
                delay = t0 + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(await producer.send(self.topic, value=v, partition=p))
                self.sent = i + 1
                if len(pending) >= 2000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
            self.finished_at = time.monotonic()
        finally:
            await producer.stop()

    def running(self) -> bool:
        return self.is_alive()

    def wait(self, timeout: float = 180.0) -> float:
        """Until every line is acknowledged; the wall time of the feed."""
        self.join(timeout)
        assert not self.is_alive(), f"feeder still running after {timeout:g} s ({self.sent}/{len(self.items)} sent)"
        if self.error is not None:
            raise AssertionError(f"feeder failed: {self.error!r}")
        return self.finished_at - self.started_at


class ScaledPipeline(Pipeline):
    """Pipeline with several workers (one app id: one consumer group per stage) and scorers (one
    group); each process has its own metrics port and client id (logad-w1, logad-s2: how the
    groups' members are told apart)."""

    def __init__(self, bootstrap: str, tmp: Path, workers: int = 3, scorers: int = 2, **extra_env: str) -> None:
        super().__init__(bootstrap, tmp, LOGAD_TOPICS_PARTITIONS=str(RAW_PARTITIONS), **extra_env)
        self.workers: list[Proc] = []
        self.scorers: list[Proc] = []
        self.ports: dict[str, int] = {}  # proc name -> metrics port
        for _ in range(workers):
            self._new_worker()
        for i in range(scorers):
            port = free_port()
            env = {**self.env, "LOGAD_WEB_SCORER_PORT": str(port), "LOGAD_KAFKA_CLIENT_ID": f"logad-s{i + 1}"}
            proc = Proc(f"scorer{i + 1}", ["scorer", "--group", self.scorer_group], env, tmp)
            self.ports[proc.name] = port
            self.scorers.append(proc)
        self.worker, self.scorer = self.workers[0], self.scorers[0] if self.scorers else self.scorer
        self.stall_restarts = 0

    def _new_worker(self) -> Proc:
        i = len(self.workers) + 1
        port = free_port()
        env = {**self.env, "LOGAD_WEB_PORT": str(port), "LOGAD_KAFKA_CLIENT_ID": f"logad-w{i}"}
        proc = Proc(f"worker{i}", ["worker", "--app-id", self.id, "--data-dir", str(self.tmp / f"faust{i}")],
                    env, self.tmp)
        self.ports[proc.name] = port
        self.workers.append(proc)
        return proc

    @staticmethod
    def client_id(proc: Proc) -> str:
        return proc.env["LOGAD_KAFKA_CLIENT_ID"]

    # -- processes -------------------------------------------------------------------------------
    def proc_metrics(self, proc: Proc) -> dict[str, float]:
        from streams.prometheus import scrape

        return scrape(f"http://127.0.0.1:{self.ports[proc.name]}/metrics", timeout_s=1.0)

    def wait_proc(self, proc: Proc, timeout: float = 120.0) -> float:
        def up() -> bool:
            if not proc.alive():
                return True
            if not self.proc_metrics(proc):
                return False
            return proc.name.startswith("worker") or "scorer ready:" in proc.log.read_text(errors="replace")

        t0 = time.monotonic()
        wait_for(up, timeout, f"{proc.name} up", on_timeout=self.logs)
        assert proc.alive(), f"{proc.name} exited with {proc.proc.returncode}\n{self.logs()}"
        return time.monotonic() - t0

    def create_topics(self) -> None:
        """The raw topic with RAW_PARTITIONS partitions (one per "host", LogAppendTime like the
        ones logad creates) and every pipeline topic, before any process starts."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        from streams.kafka_clients import admin_kwargs
        from streams.topics import RAW_TOPIC_CONFIG, create_topics

        async def go() -> None:
            admin = AIOKafkaAdminClient(**admin_kwargs(self.settings.kafka, request_timeout_ms=20_000))
            await admin.start()
            try:
                await admin.create_topics([NewTopic(self.raw, RAW_PARTITIONS, self.settings.topics.replication,
                                                    topic_configs=RAW_TOPIC_CONFIG)], timeout_ms=20_000)
            finally:
                await admin.close()
            await create_topics(self.settings, raw_topics=[self.raw])  # the rest; keeps our raw topic

        asyncio.run(go())

    def start(self, timeout: float = 150.0) -> None:
        for p in (*self.workers, *self.scorers):
            p.start()
        for p in (*self.workers, *self.scorers):
            self.wait_proc(p, timeout)

    def add_worker(self) -> Proc:
        return self._new_worker().start()

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def logs(self) -> str:
        return "\n".join(p.tail(15) for p in (*self.workers, *self.scorers))

    def stop(self) -> None:
        for p in (*self.workers, *self.scorers):
            p.stop()

    def supervise(self, spared: tuple[Proc, ...] = ()) -> None:
        """Restart workers (not `spared`) that exited because their table recovery stalled
        (streams.watchdog.STALL_EXIT_CODE), as the compose restart policy does."""
        from streams.watchdog import STALL_EXIT_CODE

        for w in self.workers:
            if w in spared or w.alive() or w.proc is None or w.proc.returncode != STALL_EXIT_CODE:
                continue
            self.stall_restarts += 1
            w.start()

    # -- observation -----------------------------------------------------------------------------
    def assignment(self) -> dict[str, dict[str, list[int]]]:
        """{client id: {"events": partitions, "raw": partitions}} of the worker groups, from the
        group coordinator; {} unless both groups are Stable."""
        with quiet_kafka_clients():
            try:
                return asyncio.run(asyncio.wait_for(self._assignment(), 10))
            except Exception:
                return {}

    async def _assignment(self) -> dict[str, dict[str, list[int]]]:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        from streams.kafka_clients import admin_kwargs

        admin = AIOKafkaAdminClient(**admin_kwargs(self.settings.kafka))
        await admin.start()
        out: dict[str, dict[str, list[int]]] = {}
        try:
            for stage, group, topic in (("events", self.id, self.settings.topics.events),
                                        ("raw", f"{self.id}-ingest", self.raw)):
                for resp in await admin.describe_consumer_groups([group]):
                    for g in resp.to_object()["groups"]:
                        if g["state"] != "Stable":
                            return {}
                        for m in g["members"]:
                            parts: list[int] = []
                            if m["member_assignment"]:
                                a = ConsumerProtocolMemberAssignment.decode(m["member_assignment"])
                                parts = sorted(p for t, ps in a.assignment if t == topic for p in ps)
                            out.setdefault(m["client_id"], {}).setdefault(stage, []).extend(parts)
        finally:
            await admin.close()
        return out

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """{partition: committed offset} (partitions without a commit left out); {} on errors."""
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        from streams.kafka_clients import admin_kwargs

        async def go() -> dict[int, int]:
            admin = AIOKafkaAdminClient(**admin_kwargs(self.settings.kafka))
            await admin.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(RAW_PARTITIONS)]
                got = await admin.list_consumer_group_offsets(group, partitions=tps)
                return {tp.partition: om.offset for tp, om in got.items() if om is not None and om.offset >= 0}
            finally:
                await admin.close()

        with quiet_kafka_clients():
            try:
                return asyncio.run(asyncio.wait_for(go(), 10))
            except Exception:
                return {}

    def scored_windows(self) -> int:
        """Distinct windows on the scores topic (by score id)."""
        from streams.codec import decode_scores

        with quiet_kafka_clients():
            return len({s["id"] for r in self.read(self.settings.topics.scores) for s in decode_scores(r.value)})

    def drained(self, expect_windows: int | None = None) -> dict[str, Any]:
        """One look at every stage. Done: no lag anywhere, every live worker caught up, and no open
        session in any worker's metrics, or (`expect_windows`) that many distinct windows scored (a
        worker keeps counting sessions of partitions that moved away: see the scale-out test)."""
        from streams.evaluate_stream import group_lag

        t = self.settings.topics

        async def go() -> dict[str, Any]:
            state: dict[str, Any] = {}
            for stage, group, topic in (("raw", f"{self.id}-ingest", self.raw), ("events", self.id, t.events),
                                        ("windows", self.scorer_group, t.windows)):
                state[stage], state[f"{stage}_lag"] = await asyncio.wait_for(group_lag(self.settings, group, topic), 10)
            return state

        with quiet_kafka_clients():
            try:
                state = asyncio.run(go())
            except Exception as e:
                return {"done": False, "error": repr(e)}
        ms = [self.proc_metrics(w) for w in self.live_workers()]
        state["open_sessions"] = sum(m.get("logad_open_sessions", 0) for m in ms)
        state["caught_up"] = [m.get("logad_caught_up") for m in ms]
        state["open_sessions_by_worker"] = {w.name: m.get("logad_open_sessions") for w, m in zip(self.live_workers(), ms)}
        state["done"] = (state["raw"] > 0 and state["raw_lag"] == 0 and state["events_lag"] == 0
                         and state["windows_lag"] == 0 and state["windows"] > 0
                         and bool(ms) and all(c == 1 for c in state["caught_up"]))
        if state["done"] and state["open_sessions"] != 0:
            state["scored_windows"] = self.scored_windows() if expect_windows else None
            state["done"] = expect_windows is not None and state["scored_windows"] >= expect_windows
        return state

    def wait_drained(self, timeout: float = 150.0, spared: tuple[Proc, ...] = (),  # type: ignore[override]
                     expect_windows: int | None = None) -> dict:
        deadline, streak, state = time.monotonic() + timeout, 0, {}
        while time.monotonic() < deadline:
            self.supervise(spared)
            state = self.drained(expect_windows)
            streak = streak + 1 if state["done"] else 0
            if streak >= 2:
                return state
            time.sleep(0.5)
        raise AssertionError(f"pipeline not drained after {timeout:g} s: {state}\n{self.logs()}")
