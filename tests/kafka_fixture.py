"""Real-broker fixtures: one Apache Kafka per test run, started by scripts/kafka-local.

    kafka_bootstrap  (session)  "127.0.0.1:PORT" of a broker in an isolated state dir, or the broker
                                named by LOGAD_TEST_BOOTSTRAP (then nothing is started or stopped).
    kafka_config     (session)  logad.config.KafkaConfig pointing at it.
    kafka_topics     (function) make(partitions=1, prefix="t") -> a fresh, uniquely named topic.

Mark tests that use them with @pytest.mark.kafka. The broker is stopped at session end, on
failure and on ^C (finalizer + atexit); a watchdog in the script also stops it if pytest is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logad.config import KafkaConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "kafka-local"
BOOTSTRAP_ENV = "LOGAD_TEST_BOOTSTRAP"
# Taken out of the environment at import: it is not a settings key, so load_settings() (and any
# `logad` subprocess inheriting os.environ) would reject it as an unknown LOGAD_ variable.
_EXTERNAL_BOOTSTRAP = os.environ.pop(BOOTSTRAP_ENV, None)


def kafka_local(*args: str, state_dir: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run scripts/kafka-local with an isolated state dir (never the developer's broker)."""
    return subprocess.run([sys.executable, str(SCRIPT), "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def start_broker(state_dir: Path) -> str:
    """Start a broker that stops itself when this process dies; return its bootstrap address."""
    proc = kafka_local("start", "--owner-pid", str(os.getpid()), state_dir=state_dir)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/kafka-local start failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def stop_broker(state_dir: Path) -> None:
    kafka_local("stop", state_dir=state_dir, timeout=60.0)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _EXTERNAL_BOOTSTRAP:
        yield _EXTERNAL_BOOTSTRAP
        return
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("java not found: the kafka tests need a JDK >= 17 (or set LOGAD_TEST_BOOTSTRAP)")
    state_dir = tmp_path_factory.mktemp("kafka-local")
    stopped = False

    def stop_once() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            stop_broker(state_dir)

    atexit.register(stop_once)  # covers exits that skip fixture finalizers (e.g. a second ^C)
    try:
        yield start_broker(state_dir)
    finally:
        stop_once()


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka_bootstrap, client_id="logad-tests")


def delete_topics(cfg: KafkaConfig, names: list[str]) -> None:
    """Best effort: a throwaway broker does not need it, a shared one (LOGAD_TEST_BOOTSTRAP) does."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka_clients import admin_kwargs

    async def delete() -> None:
        admin = AIOKafkaAdminClient(**admin_kwargs(cfg))
        try:
            await admin.start()
            await admin.delete_topics(names)
        finally:
            await admin.close()

    if names:
        try:
            asyncio.run(delete())
        except Exception:
            pass


@pytest.fixture
def kafka_topics(kafka_config: KafkaConfig) -> Iterator[Callable[..., str]]:
    """Factory of fresh topics with explicit partition counts; deleted again after the test."""
    from streams.kafka_clients import ensure_topics

    made: list[str] = []

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
        asyncio.run(ensure_topics(kafka_config, {name: partitions}))
        made.append(name)
        return name

    yield make
    delete_topics(kafka_config, made)
