"""Shared pieces of the streaming benches (not a bench itself: `make bench` skips bench/_*.py).

    broker()            a local Apache Kafka (scripts/kafka-local, own temp state dir), stopped at exit
    hdfs_lines(n)       the bundled 16k-line HDFS sample repeated to n lines, block ids rewritten per copy
    Pipeline            `logad worker` (1..k processes) + `logad scorer` as subprocesses on unique topics
    produce(...)        fast aiokafka producer (optionally one transaction: all records visible at once)
    read_topic(...)     every record of a topic (from the beginning to the end offsets)
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logad.config import Settings, load_settings  # noqa: E402
from logad.parse import open_lines  # noqa: E402

SAMPLE = ROOT / "data/hdfs/HDFS_head20k.log.gz"
# BENCH_MODEL: another model bundle (e.g. a copy of the committed one while artifacts/ is being rebuilt)
MODEL = Path(os.environ.get("BENCH_MODEL") or ROOT / "artifacts/models/hdfs")
_BLK = re.compile(rb"blk_(-?)(\d+)")
BROKER: dict[str, int] = {"pid": 0}  # the running broker's JVM (for CPU accounting)


def log(msg: str) -> None:
    print(msg, flush=True)


@contextmanager
def broker() -> Iterator[str]:
    """Start a throwaway broker (stops itself if we die: --owner-pid); yield its bootstrap address."""
    state = Path(tempfile.mkdtemp(prefix="logad-bench-kafka."))
    script = [sys.executable, str(ROOT / "scripts/kafka-local"), "--state-dir", str(state)]
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            subprocess.run([*script, "stop"], capture_output=True, timeout=60)
            shutil.rmtree(state, ignore_errors=True)

    atexit.register(stop)
    t0 = time.perf_counter()
    out = subprocess.run([*script, "start", "--owner-pid", str(os.getpid())], capture_output=True, text=True,
                         timeout=180)
    if out.returncode != 0:
        raise SystemExit(f"kafka-local start failed: {out.stderr.strip() or out.stdout.strip()}")
    addr = out.stdout.strip().splitlines()[-1]
    try:
        import json

        BROKER["pid"] = int(json.loads((state / "state.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        BROKER["pid"] = 0
    log(f"broker {addr} started in {time.perf_counter() - t0:.1f} s (state {state})")
    try:
        yield addr
    finally:
        stop()


def hdfs_lines(n: int) -> list[bytes]:
    """n raw lines (no newline): copy k of the sample has its block ids prefixed with k as 4 digits
    (blk_-123 -> blk_-0001123), so every copy's sessions are new sessions with the same traces."""
    base = [line.rstrip(b"\n") for line in open_lines(SAMPLE)]
    out: list[bytes] = []
    k = 0
    while len(out) < n:
        if k == 0:
            out += base
        else:
            prefix = b"%04d" % k
            out += [_BLK.sub(rb"blk_\g<1>" + prefix + rb"\g<2>", line) for line in base]
        k += 1
    return out[:n]


def group(lines: list[bytes], per_record: int) -> list[bytes]:
    return [b"\n".join(lines[i:i + per_record]) for i in range(0, len(lines), per_record)]


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(bootstrap: str, prefix: str, **env: str) -> tuple[dict[str, str], Settings]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
    e.update({
        "LOGAD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOGAD_TOPICS_RAW": f"{prefix}.raw",  # the raw topic of any source
        **{f"LOGAD_TOPICS_{t.upper()}": f"{prefix}.{t}" for t in
           ("events", "windows", "scores", "alerts", "dead_letter")},
        "LOGAD_SCORER_MODEL_DIR": str(MODEL), "LOGAD_SCORER_DEVICE": "cpu",
        # promotions of pending statements go to a file of this run, never into the shipped bundle
        "LOGAD_DRIFT_DECISIONS_FILE": str(Path(tempfile.gettempdir()) / f"logad-bench-{prefix}.decisions.jsonl"),
        "LOGAD_LOGGING_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        **env,
    })
    return e, load_settings(env=e)


PROFILE_DIR = os.environ.get("BENCH_PROFILE_DIR")  # set: worker/scorer run under pyinstrument (text report there)
# set: worker/scorer run under cProfile (<name>-<id>.prof there; CPU per function, threads not included)
CPROFILE_DIR = os.environ.get("BENCH_CPROFILE_DIR")


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.log = name, logdir / f"{name}.log"
        cmd = [sys.executable, "-m", "logad_cli.main", *args]
        if PROFILE_DIR:
            Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
            out = Path(PROFILE_DIR) / f"{name}-{uuid.uuid4().hex[:6]}.txt"
            cmd = [sys.executable, "-m", "pyinstrument", "-i", "0.002", "-r", "text", "-p", "show_all",
                   "-p", "time=percent_of_total", "-o", str(out), "-m",
                   "logad_cli.main", *args]
        elif CPROFILE_DIR:
            Path(CPROFILE_DIR).mkdir(parents=True, exist_ok=True)
            out = Path(CPROFILE_DIR) / f"{name}-{uuid.uuid4().hex[:6]}.prof"
            cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "logad_cli.main", *args]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        atexit.register(self.stop)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


class Pipeline:
    """k `logad worker` processes (one app id) + one `logad scorer`, on topics of their own."""

    def __init__(self, bootstrap: str, workers: int = 1, raw_partitions: int = 1, **env: str) -> None:
        self.id = f"b{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"logad-bench-{self.id}."))
        self.ports = [free_port() for _ in range(workers)]
        self.env, self.settings = settings_for(bootstrap, self.id, LOGAD_WEB_SCORER_PORT=str(free_port()), **env)
        self.raw = f"{self.id}.raw"
        self.raw_partitions = raw_partitions
        asyncio.run(self._topics())
        self.workers = [Proc(f"worker{i}", ["worker", "--app-id", self.id, "--data-dir", str(self.tmp / f"faust{i}")],
                             {**self.env, "LOGAD_WEB_PORT": str(port)}, self.tmp)
                        for i, port in enumerate(self.ports)]
        self.scorer = Proc("scorer", ["scorer", "--group", f"{self.id}-scorer"], self.env, self.tmp)

    async def _topics(self) -> None:
        from streams.topics import _ensure_raw, create_topics

        await _ensure_raw(self.settings, {self.raw: self.raw_partitions})  # as `create-topics` makes them
        await create_topics(self.settings, raw_topics=[self.raw])

    def metrics(self, i: int = 0) -> dict[str, float]:
        from streams.prometheus import scrape

        return scrape(f"http://127.0.0.1:{self.ports[i]}/metrics", timeout_s=1.0)

    def scorer_metrics(self) -> dict[str, float]:
        from streams.prometheus import scrape

        return scrape(f"http://127.0.0.1:{self.settings.web.scorer_port}/metrics", timeout_s=1.0)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Until every worker reports caught_up (ingest and session agent assigned and idle) and
        the scorer serves metrics (model loaded). Returns the seconds it took."""
        t0 = time.perf_counter()
        while True:
            procs = [*self.workers, self.scorer]
            dead = [p for p in procs if not p.alive()]
            if dead:
                raise SystemExit(f"{dead[0].name} exited:\n{dead[0].tail()}")
            if all(self.metrics(i).get("logad_caught_up") == 1 for i in range(len(self.workers))) \
                    and self.scorer_metrics():
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"pipeline not ready after {timeout:.0f} s:\n" + "\n".join(p.tail() for p in procs))
            time.sleep(0.2)

    def wait_scored(self, n_windows: int, timeout: float = 600.0) -> None:
        """Until the scorer has published n_windows scores (its metric), or SystemExit."""
        t0 = time.perf_counter()
        last = -1.0
        while True:
            done = self.scorer_metrics().get("logad_scorer_windows_total", 0.0)
            if done >= n_windows:
                return
            if not all(p.alive() for p in [*self.workers, self.scorer]):
                raise SystemExit("a pipeline process died:\n" + "\n".join(p.tail() for p in [*self.workers, self.scorer]))
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"only {done:.0f} of {n_windows} windows scored after {timeout:.0f} s")
            if done != last:
                last = done
            time.sleep(0.1)

    def stop(self) -> None:
        for p in [*self.workers, self.scorer]:
            p.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def produce(bootstrap: str, topic: str, values: Iterable[bytes], *, partition: int | Iterable[int] = 0,
                  transactional: bool = False) -> tuple[float, float]:
    """Send every value; with `transactional`, all of them in ONE transaction (readers that use
    read_committed see none, then all at once). Returns (seconds spent, wall time of the commit)."""
    from aiokafka import AIOKafkaProducer

    from logad.config import KafkaConfig
    from streams.kafka_clients import producer_kwargs
    from streams.topics import RAW_MAX_MESSAGE_BYTES

    kw = producer_kwargs(KafkaConfig(bootstrap_servers=bootstrap), linger_ms=20, max_batch_size=1 << 20,
                         max_request_size=RAW_MAX_MESSAGE_BYTES)
    if transactional:
        kw["transactional_id"] = f"bench-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(**kw)
    await producer.start()
    parts = [partition] if isinstance(partition, int) else list(partition)
    t0 = time.perf_counter()
    try:
        if transactional:
            await producer.begin_transaction()
        pending = []
        for i, v in enumerate(values):
            pending.append(await producer.send(topic, value=v, partition=parts[i % len(parts)]))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if transactional:
            await producer.commit_transaction()
        return time.perf_counter() - t0, time.time()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` up to its current end offsets (no consumer group)."""
    from logad.config import KafkaConfig
    from streams.alerts_cli import read_topic as records

    settings = Settings(kafka=KafkaConfig(bootstrap_servers=bootstrap))
    return [r async for r in records(settings, topic, from_beginning=True, follow=False)]
