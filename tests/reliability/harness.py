"""Fault-injection harness: `logad worker` / `logad scorer` as real processes against a real broker,
with what the scenarios measure: peak RSS per process (psutil, sampled), consumer-group joins per
process (rebalances, from the logs), progress and lag per stage (group offsets), recovery times.

    Pipeline(bootstrap, tmp, **env)    unique topics + app id + scorer group, own metrics ports
      .start()                         worker + scorer up (both serve /metrics)
      .start_replay(rate=...)          `logad replay` of the HDFS sample as a background process
      .progress()                      {stage: (end offsets, committed offsets)} of raw/events/windows
      .wait_drained()                  every stage drained, no session open (streams.evaluate_stream)
      .read_json(topic)                every record of a topic, decoded
Figures go to stdout (pytest -s shows them) and, when $RELIABILITY_REPORT names a file, one JSON
line per scenario is appended there (bench/RELIABILITY.md is written from those).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil

from logad.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data/hdfs/HDFS_head20k.log.gz"
LABELS = ROOT / "data/hdfs/HDFS_head20k_anomaly_label.csv"
MODEL = Path(os.environ.get("LOGAD_TEST_MODEL", ROOT / "artifacts/models/hdfs"))
N_LINES = 16252
REPORT_ENV = "RELIABILITY_REPORT"  # not LOGAD_*: settings reject unknown LOGAD_ variables


def record(scenario: str, passed: bool | None = None, **figures: Any) -> dict:
    """Print a scenario's figures (one line) and append them to $RELIABILITY_REPORT when set."""
    doc = {"scenario": scenario, **({"passed": passed} if passed is not None else {}), **figures}
    line = json.dumps(doc, default=str, sort_keys=False)
    print(f"\nRELIABILITY {line}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return doc


@contextlib.contextmanager
def quiet_kafka_clients() -> Iterator[None]:
    """The harness's own polling clients stay silent while a broker is down (the processes under
    test log to their files; this only keeps the test's output readable)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f"\n{on_timeout()}" if on_timeout else ""))
        time.sleep(poll)


class RssSampler(threading.Thread):
    """Samples one process's RSS every `every` seconds until it exits: [(monotonic time, bytes)]."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            while not self._stop.is_set():
                self.samples.append((time.monotonic(), proc.memory_info().rss))
                self._stop.wait(self.every)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return

    def stop(self) -> None:
        self._stop.set()


class Proc:
    """A logad command as its own process group; every run logs to <name>-<run>.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.args, self.env, self.logdir = name, args, env, logdir
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log: Path | None = None
        self.samplers: list[RssSampler] = []
        self.started_at: list[float] = []

    def start(self) -> Proc:
        self.runs += 1
        self.log = self.logdir / f"{self.name}-{self.runs}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "logad_cli.main", *self.args], cwd=ROOT, env=self.env,
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at.append(time.monotonic())
        sampler = RssSampler(self.proc.pid)
        sampler.start()
        self.samplers.append(sampler)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit code (None: had to be killed after `timeout`)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def rss(self, since: float | None = None, until: float | None = None) -> list[int]:
        return [b for s in self.samplers for t, b in s.samples
                if (since is None or t >= since) and (until is None or t <= until)]

    def peak_rss_mb(self, since: float | None = None, until: float | None = None) -> float:
        values = self.rss(since, until)
        return round(max(values) / 2**20, 1) if values else 0.0

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob(f"{self.name}-*.log")))

    def joins(self) -> int:
        """Consumer-group joins over all runs ('Joined group' from aiokafka's coordinator): one per
        group per start, plus one per rebalance."""
        return self.text().count("Joined group")

    def tail(self, n: int = 30) -> str:
        if not self.log or not self.log.exists():
            return ""
        return f"--- {self.log.name}\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Pipeline:
    """Worker + scorer on unique topics (own app id, scorer group and metrics ports)."""

    def __init__(self, bootstrap: str, tmp: Path, **extra_env: str) -> None:
        self.id = f"r{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.raw = f"{self.id}.raw"  # the raw topic (of any source: topics.raw without {source})
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
        env.update({
            "LOGAD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOGAD_TOPICS_RAW": self.raw,
            **{f"LOGAD_TOPICS_{t.upper()}": f"{self.id}.{t}" for t in
               ("events", "windows", "scores", "alerts", "dead_letter")},
            "LOGAD_SESSIONS_IDLE_TIMEOUT_S": "3", "LOGAD_SESSIONS_SWEEP_EVERY_S": "0.5",
            "LOGAD_WEB_PORT": str(free_port()), "LOGAD_WEB_SCORER_PORT": str(free_port()),
            "LOGAD_SCORER_MODEL_DIR": str(MODEL), "LOGAD_SCORER_DEVICE": "cpu",
            # promotions of pending statements go to the test's folder, never into the shipped bundle
            "LOGAD_DRIFT_DECISIONS_FILE": str(tmp / "template_decisions.jsonl"),
            "LOGAD_LOGGING_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
            **extra_env,
        })
        self.env = env
        self.settings: Settings = load_settings(env=env)
        self.scorer_group = f"{self.id}-scorer"
        self.worker = Proc("worker", ["worker", "--app-id", self.id, "--data-dir", str(tmp / "faust")], env, tmp)
        self.scorer = Proc("scorer", ["scorer", "--group", self.scorer_group], env, tmp)
        self.replays: list[subprocess.Popen] = []

    # -- processes -------------------------------------------------------------------------------
    def metrics_url(self, which: str) -> str:
        port = self.settings.web.port if which == "worker" else self.settings.web.scorer_port
        return f"http://127.0.0.1:{port}/metrics"

    def metrics(self, which: str = "worker") -> dict[str, float]:
        from streams.prometheus import scrape

        return scrape(self.metrics_url(which), timeout_s=1.0)

    def read_metrics(self, which: str = "worker", timeout: float = 15.0) -> dict[str, float]:
        """metrics() of a process that is up: retried while a busy machine answers late (metrics()
        reads an unanswered scrape as {}, which is right while waiting for a start)."""
        return wait_for(lambda: self.metrics(which), timeout, f"{which} metrics", on_timeout=self.logs)

    def wait_up(self, which: str, timeout: float = 90.0) -> float:
        """Until the process serves its metrics (worker: Faust web up) and, for the scorer, says it
        is ready (model loaded, consumer started, signal handlers installed)."""
        proc = self.worker if which == "worker" else self.scorer

        def up() -> bool:
            if not proc.alive():
                return True
            if not self.metrics(which):
                return False
            return which == "worker" or "scorer ready:" in proc.log.read_text(errors="replace")

        t0 = time.monotonic()
        wait_for(up, timeout, f"{which} up", on_timeout=self.logs)
        assert proc.alive(), f"{which} exited with {proc.proc.returncode}\n{self.logs()}"
        return time.monotonic() - t0

    def start(self, timeout: float = 90.0) -> None:
        self.worker.start()
        self.scorer.start()
        self.wait_up("worker", timeout)
        self.wait_up("scorer", timeout)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in (self.worker, self.scorer))

    def stop(self) -> None:
        for r in self.replays:
            if r.poll() is None:
                r.kill()
                r.wait(10)
        for p in (self.worker, self.scorer):
            p.stop()

    # -- input -----------------------------------------------------------------------------------
    def start_replay(self, *args: str, file: Path = RAW) -> subprocess.Popen:
        """`logad replay` of `file` in the background; its output goes to replay-<n>.log (a pipe
        nobody reads would fill up with the client's reconnect warnings during an outage and block it)."""
        log = self.tmp / f"replay-{len(self.replays) + 1}.log"
        with open(log, "wb") as fh:
            r = subprocess.Popen([sys.executable, "-m", "logad_cli.main", "replay", str(file), "--no-progress", *args],
                                 cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        r.log = log  # type: ignore[attr-defined]
        self.replays.append(r)
        return r

    def wait_replay(self, r: subprocess.Popen, timeout: float = 120.0) -> str:
        """Wait for a replay to finish; its output (AssertionError when it failed)."""
        try:
            rc = r.wait(timeout)
        except subprocess.TimeoutExpired:
            r.kill()
            rc = None
        text = r.log.read_text(errors="replace")  # type: ignore[attr-defined]
        assert rc == 0, f"replay exit {rc}: {text[-2000:]}\n{self.logs()}"
        return text

    def produce(self, values: list[bytes]) -> None:
        """Raw records straight to partition 0 of the raw topic, in order (before any replay)."""
        from aiokafka import AIOKafkaProducer

        from streams.kafka_clients import producer_kwargs
        from streams.topics import RAW_MAX_MESSAGE_BYTES, create_topics

        async def go() -> None:
            await create_topics(self.settings, raw_topics=[self.raw])
            producer = AIOKafkaProducer(**producer_kwargs(self.settings.kafka, max_request_size=RAW_MAX_MESSAGE_BYTES))
            await producer.start()
            try:
                for v in values:
                    await producer.send_and_wait(self.raw, value=v, partition=0)
            finally:
                await producer.stop()

        asyncio.run(go())

    # -- observation -----------------------------------------------------------------------------
    def progress(self) -> dict[str, int]:
        """End and committed offsets (summed over partitions) of raw (ingest), events (sessions) and
        windows (scorer); {} while the broker cannot answer."""
        with quiet_kafka_clients():
            return self._progress()

    def _progress(self) -> dict[str, int]:
        from streams.evaluate_stream import group_lag

        t = self.settings.topics

        async def go() -> dict[str, int]:
            out = {}
            for stage, group, topic in (("raw", f"{self.id}-ingest", self.raw), ("events", self.id, t.events),
                                        ("windows", self.scorer_group, t.windows)):
                end, lag = await asyncio.wait_for(group_lag(self.settings, group, topic), 10)
                out[f"{stage}_end"], out[f"{stage}_done"] = end, end - lag
            return out

        try:
            return asyncio.run(go())
        except Exception:  # broker down or restarting
            return {}

    def done(self) -> int:
        """Records handled so far by every stage together (grows while the pipeline makes progress)."""
        p = self.progress()
        return sum(v for k, v in p.items() if k.endswith("_done")) if p else -1

    def wait_drained(self, timeout: float = 120.0) -> dict:
        from streams.evaluate_stream import wait_drained

        try:
            return asyncio.run(wait_drained(self.settings, app_id=self.id, scorer_group=self.scorer_group,
                                            timeout_s=timeout, raw_topic=self.raw, poll_s=0.5))
        except Exception as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None

    def wait_drained_supervised(self, timeout: float = 150.0, restarts: int = 2) -> tuple[dict, int]:
        """wait_drained, restarting the worker as its supervisor would when it exits because its
        table recovery stalled (streams.watchdog.STALL_EXIT_CODE; compose: restart: unless-stopped).
        Returns (the drained state, how many such restarts it took)."""
        from streams.watchdog import STALL_EXIT_CODE

        deadline, done = time.monotonic() + timeout, 0
        while True:
            try:
                return self.wait_drained(timeout=max(5.0, min(20.0, deadline - time.monotonic()))), done
            except AssertionError:
                w = self.worker
                if not w.alive() and w.proc is not None and w.proc.returncode == STALL_EXIT_CODE and done < restarts:
                    done += 1
                    w.start()
                    self.wait_up("worker")
                    continue
                if time.monotonic() >= deadline:
                    raise

    def read(self, topic: str) -> list[Any]:
        from streams.alerts_cli import read_topic

        async def go() -> list[Any]:
            return [r async for r in read_topic(self.settings, topic)]

        return asyncio.run(go())

    def windows_in_kafka(self) -> int:
        """Windows on the windows topic (its records are bundles of windows)."""
        from streams.codec import decode_windows

        return sum(len(decode_windows(r.value)) for r in self.read(self.settings.topics.windows))

    def read_json(self, topic: str) -> list[dict]:
        return [orjson.loads(r.value) for r in self.read(topic)]

    def outcome(self) -> dict[str, Any]:
        """Alerts and scores as delivered (with duplicates) and deduped by id."""
        t = self.settings.topics
        from streams.codec import decode_scores

        alerts = self.read_json(t.alerts)
        scores = [s for r in self.read(t.scores) for s in decode_scores(r.value)]  # bundles
        return {
            "alert_records": alerts, "alerts": {a["id"]: a for a in alerts},
            "score_records": scores, "scores": {s["id"]: s for s in scores},
            "dead": self.read_json(t.dead_letter),
        }


def labelled_sessions() -> set[str]:
    from streams.evaluate_stream import read_labels

    return set(read_labels(LABELS))
