"""3. Broker restart mid-replay, on a dedicated broker (not the session's shared one):
`scripts/kafka-local stop --keep` while the HDFS sample is replayed and processed, a few seconds
down, `start` again on the same state dir (same port, same log dirs: topics, offsets and the
session changelog survive). Nobody touches the worker, the scorer or the replay.

Pass: both processes are still the ones started before the outage and make progress again within
60 s of the broker being back; every lag drains to zero (no session left open); deduped alerts are
the no-fault ones; every labelled session got a decision.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.kafka_fixture import kafka_local, start_broker, stop_broker
from tests.reliability.harness import N_LINES, Pipeline, record, wait_for
from tests.reliability.test_worker_faults import SEED, check_no_fault

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

DOWN_S = 3.0  # the broker stays down this long after its controlled shutdown, before the restart
RECOVERY_LIMIT_S = 60.0


@pytest.mark.timeout(300)
def test_broker_restart_mid_replay(tmp_path: Path, offline: dict[str, dict], labelled: set[str]) -> None:
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("java not found: this scenario starts its own broker (scripts/kafka-local needs a JDK >= 17)")
    rng = random.Random(SEED + 2)
    state_dir = tmp_path / "broker"
    bootstrap = start_broker(state_dir)
    # The replay (~6.5 s) stalls while the broker is down: the idle timeout outlasts its wall time
    # with the outage (10-15 s measured: a controlled shutdown, DOWN_S, a JVM start; more on a busy
    # machine), so no session closes early (see test_worker_faults).
    p = Pipeline(bootstrap, tmp_path, LOGAD_SESSIONS_IDLE_TIMEOUT_S="40", LOGAD_INGEST_BATCH_SIZE="500")
    try:
        p.start()
        t0 = time.monotonic()
        replay = p.start_replay("--rate", "2500")
        base = p.done()
        wait_for(lambda: p.done() > base, 60, "progress before the outage", on_timeout=p.logs)
        time.sleep(rng.uniform(0.5, 2.0))
        before = p.progress()
        assert replay.poll() is None, "the replay finished before the outage: the test proved nothing"
        t_down = time.monotonic()
        stopped = kafka_local("stop", "--keep", state_dir=state_dir, timeout=60)
        assert stopped.returncode == 0 and "kept" in stopped.stdout, stopped.stderr
        time.sleep(DOWN_S)
        started = kafka_local("start", "--owner-pid", str(os.getpid()), state_dir=state_dir)
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().splitlines()[-1] == bootstrap  # same address: clients need no change
        t_up = time.monotonic()
        outage_s = t_up - t_down
        assert outage_s + 8 < float(p.env["LOGAD_SESSIONS_IDLE_TIMEOUT_S"]), (
            f"the outage took {outage_s:.1f} s: sessions may close as idle across it, the comparison "
            "with the no-fault run would not hold")
        at_up = p.done()
        wait_for(lambda: p.done() > max(at_up, 0), RECOVERY_LIMIT_S, "progress after the broker came back",
                 poll=0.25, on_timeout=p.logs)
        recovery_s = time.monotonic() - t_up
        p.wait_replay(replay)
        state = p.wait_drained(timeout=150)
        drained_s = time.monotonic() - t_up
        # No manual action: the processes of before the outage did it all.
        assert p.worker.runs == 1 and p.worker.alive() and p.scorer.runs == 1 and p.scorer.alive(), p.logs()
        out = p.outcome()
        check_no_fault(out, offline, labelled, p.logs())
        assert state["raw"] == N_LINES and state["raw_lag"] == state["events_lag"] == state["windows_lag"] == 0
        assert state["open_sessions"] == 0
        record("3 broker restart mid-replay (stop --keep / start, dedicated broker)", True,
               down_at_s=round(t_down - t0, 1), outage_s=round(outage_s, 1),
               progress_at_outage={k: before[k] for k in ("raw_done", "events_done", "events_end")},
               recovery_s=round(recovery_s, 1), drained_after_broker_back_s=round(drained_s, 1),
               lag_after={k: state[k] for k in ("raw_lag", "events_lag", "windows_lag", "open_sessions")},
               alerts_expected=len(offline), alerts_observed=len(out["alerts"]),
               alert_records=len(out["alert_records"]),
               alert_duplicates=len(out["alert_records"]) - len(out["alerts"]),
               score_duplicates=len(out["score_records"]) - len(out["scores"]),
               sessions_decided=len({s["subject"] for s in out["scores"].values()}),
               worker_group_joins=p.worker.joins(), scorer_group_joins=p.scorer.joins(),
               worker_peak_rss_mb=p.worker.peak_rss_mb(), scorer_peak_rss_mb=p.scorer.peak_rss_mb())
    finally:
        p.stop()
        stop_broker(state_dir)
