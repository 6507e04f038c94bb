"""scripts/kafka-local: start/status/stop cycles leave nothing behind; failures are one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kafka_fixture import SCRIPT, kafka_local

java = pytest.mark.skipif(not (os.environ.get("JAVA_HOME") or shutil.which("java")), reason="java not found")


def broker_pids(state_dir: Path) -> set[int]:
    """Broker processes started from this state dir (other brokers may run beside the test)."""
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {state_dir}"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.kafka
@pytest.mark.slow
@java
def test_start_status_stop_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for _ in range(2):
        started = kafka_local("start", state_dir=state)
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip().splitlines()[-1]
        host, port = address.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        info = json.loads((state / "state.json").read_text())
        assert info["ready_s"] > 0  # recorded; the script itself gives up past READY_TIMEOUT_S
        assert broker_pids(state) == {info["pid"]}

        again = kafka_local("start", state_dir=state)  # idempotent: reports the running broker
        assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == address
        status = kafka_local("status", state_dir=state)
        assert status.returncode == 0 and status.stdout.startswith(f"running {address}")

        stopped = kafka_local("stop", state_dir=state)
        assert stopped.returncode == 0, stopped.stderr
        assert broker_pids(state) == set()
        assert not Path(info["run_dir"]).exists() and not (state / "state.json").exists()
        status = kafka_local("status", state_dir=state)
        assert status.returncode == 3 and status.stdout.strip() == "stopped"


@pytest.mark.kafka
@pytest.mark.slow
@java
def test_broker_stops_when_its_owner_dies(tmp_path: Path) -> None:
    """--owner-pid: a killed test run must not leave a broker behind."""
    state = tmp_path / "state"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = kafka_local("start", "--owner-pid", str(owner.pid), state_dir=state)
        assert started.returncode == 0, started.stderr
        assert broker_pids(state)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 60  # the watcher's 0.5 s poll + a controlled shutdown (up to STOP_TIMEOUT_S)
    while broker_pids(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert broker_pids(state) == set()
    assert kafka_local("status", state_dir=state).returncode == 3


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """PATH with python3 only (no java, no mvn), and an empty jar cache."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=str(bin_dir), LOGAD_KAFKA_HOME=str(tmp_path / "home"))
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_missing_java_is_one_line(tmp_path: Path) -> None:
    proc = _run(_bare_env(tmp_path), "--state-dir", str(tmp_path / "s"), "start")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "java not found" in proc.stderr


def test_missing_maven_is_one_line(tmp_path: Path) -> None:
    proc = _run(_bare_env(tmp_path), "fetch")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kafka-local: error:")]
    assert len(lines) == 1 and "mvn not found" in lines[0] and "Traceback" not in proc.stderr


def test_status_without_state_is_stopped(tmp_path: Path) -> None:
    proc = _run(_bare_env(tmp_path), "--state-dir", str(tmp_path / "s"), "status")
    assert (proc.returncode, proc.stdout.strip()) == (3, "stopped")
