"""Worker faults against the real broker, as separate processes:

1. crash loop: SIGKILL the worker 3 times at random points while the HDFS sample is replayed, restart
   it each time. Pass: deduped by id, the alerts are the no-fault ones (offline `logad detect` ids),
   every labelled session got a decision (a score record); raw duplicates are reported.
2. graceful stop: SIGTERM mid-replay, restart. Pass: zero duplicate alerts (and the no-fault ones).
   Poison pills go first on the same raw topic: each is dead-lettered with reason + offset or
   parsed as documented, and the stream goes on (every later session is scored).

Why the idle timeout outlasts the replay: a session is closed as idle only when the worker has no
lag, so with idle > the replay's wall time no session can close before its last line arrives, and
the no-fault result is exactly the offline one whatever the faults (see streams/session_processor.py).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import psutil
import pytest

from logad.alerts import validate
from tests.reliability.harness import N_LINES, Pipeline, record, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

SEED = int(os.environ.get("RELIABILITY_SEED", random.SystemRandom().randrange(1 << 30)))


def check_no_fault(out: dict, offline: dict[str, dict], labelled: set[str], logs: str) -> None:
    alerts = out["alerts"]
    for a in out["alert_records"]:
        validate(a)
    only_stream, lost = sorted(set(alerts) - set(offline)), sorted(set(offline) - set(alerts))
    assert not only_stream and not lost, f"only in stream: {only_stream[:5]}, lost: {lost[:5]}\n{logs}"
    scored = {s["subject"] for s in out["scores"].values()}
    missing = labelled - scored
    assert not missing, f"{len(missing)} labelled sessions never got a decision: {sorted(missing)[:5]}\n{logs}"


@pytest.mark.timeout(300)
def test_worker_crash_loop(kafka_bootstrap: str, tmp_path: Path, offline: dict[str, dict],
                           labelled: set[str]) -> None:
    """SIGKILL x3 at random points (seeded; RELIABILITY_SEED reproduces a run), restart each time."""
    rng = random.Random(SEED)
    rate = 2000  # lines/s: the replay takes ~8 s; the idle timeout outlasts it (module docstring)
    p = Pipeline(kafka_bootstrap, tmp_path, LOGAD_SESSIONS_IDLE_TIMEOUT_S="10", LOGAD_INGEST_BATCH_SIZE="500")
    kills: list[dict] = []
    try:
        p.start()
        t0 = time.monotonic()
        replay = p.start_replay("--rate", str(rate))
        for k in range(3):
            # A random point while the worker holds work it has not handed on (input lag, or open
            # sessions that live only in its table): the first kill hits the live stream, the next
            # ones a fresh incarnation during its recovery / catch-up (a crash loop).
            if k == 0:
                base = p.done()
                wait_for(lambda: p.done() > base, 90, "progress before the first kill", on_timeout=p.logs)
                time.sleep(rng.uniform(0.5, 2.5))
            else:
                time.sleep(rng.uniform(0.0, 1.5))
            before, m = p.progress(), p.metrics("worker")
            lag = (before["raw_end"] - before["raw_done"]) + (before["events_end"] - before["events_done"])
            replaying, open_sessions = replay.poll() is None, m.get("logad_open_sessions")
            assert replaying or lag > 0 or (open_sessions or 0) > 0 or not m, \
                f"kill {k + 1} would hit a worker with nothing in hand: {before} {open_sessions}"
            p.worker.kill()
            t_kill = time.monotonic()
            p.worker.start()
            p.wait_up("worker")
            kills.append({"at_s": round(t_kill - t0, 1), "replay_running": replaying, "input_lag": lag,
                          "raw_ingested": before["raw_done"], "open_sessions": open_sessions,
                          "up_again_s": round(time.monotonic() - t_kill, 1)})
        # Recovery of the last incarnation: it handles records again (the re-delivered ones first).
        def handled() -> float:
            m = p.metrics("worker")
            return m.get("logad_ingest_raw_records_total", 0) + m.get("logad_session_records_total", 0)

        if kills[-1]["input_lag"] or kills[-1]["replay_running"]:
            wait_for(handled, 90, "the last incarnation to handle records", on_timeout=p.logs)
            kills[-1]["handling_again_s"] = round(time.monotonic() - t_kill, 1)
        p.wait_replay(replay)
        # (faust-streaming 0.15.3 can hang in table recovery after such a loop: the worker then exits
        # with streams.watchdog.STALL_EXIT_CODE and is started again, as compose's restart policy does)
        state, stall_restarts = p.wait_drained_supervised(timeout=150)
        seconds = time.monotonic() - t0
        dups_dropped = p.metrics("worker").get("logad_duplicate_events_total")
        out = p.outcome()
        check_no_fault(out, offline, labelled, p.logs())
        assert state["raw"] == N_LINES
        figures = dict(
            seed=SEED, kills=kills, recovery_stall_restarts=stall_restarts,
            alerts_expected=len(offline), alerts_observed=len(out["alerts"]),
            alert_records=len(out["alert_records"]),
            alert_duplicates=len(out["alert_records"]) - len(out["alerts"]),
            score_records=len(out["score_records"]), windows_scored=len(out["scores"]),
            score_duplicates=len(out["score_records"]) - len(out["scores"]),
            sessions_decided=len({s["subject"] for s in out["scores"].values()}), labelled_sessions=len(labelled),
            redelivered_events_dropped_last_run=dups_dropped,
            worker_peak_rss_mb=p.worker.peak_rss_mb(), scorer_peak_rss_mb=p.scorer.peak_rss_mb(),
            seconds_to_drained=round(seconds, 1))
        record("1 worker crash loop (SIGKILL x3)", True, **figures)
    finally:
        p.stop()


@pytest.mark.timeout(300)
def test_worker_sigterm_and_poison_pills(kafka_bootstrap: str, tmp_path: Path, offline: dict[str, dict],
                                         labelled: set[str]) -> None:
    """SIGTERM mid-replay + restart: zero duplicate alerts. Poison records precede the replay."""
    from tests.reliability.test_poison_pills import STREAM_POISON, check_poison_dead_letters

    rng = random.Random(SEED + 1)
    p = Pipeline(kafka_bootstrap, tmp_path, LOGAD_SESSIONS_IDLE_TIMEOUT_S="9", LOGAD_INGEST_BATCH_SIZE="500")
    try:
        p.start()
        # The web/metrics servers of both processes listen on loopback only (web.host's default).
        for proc in (p.worker, p.scorer):
            listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN}
            assert listening and listening <= {"127.0.0.1"}, f"{proc.name} listens on {listening}"
        p.produce([v for _, v, _ in STREAM_POISON])
        t0 = time.monotonic()
        replay = p.start_replay("--rate", "2500")
        base = p.done()
        wait_for(lambda: p.done() > base + 2000, 60, "progress before SIGTERM", on_timeout=p.logs)
        time.sleep(rng.uniform(0.0, 1.5))
        before = p.progress()
        assert replay.poll() is None, "the replay finished before the stop: the test proved nothing"
        t_stop = time.monotonic()
        rc = p.worker.stop(timeout=30)
        stop_s = time.monotonic() - t_stop
        assert rc == 0, f"worker exit code {rc} on SIGTERM\n{p.logs()}"
        p.worker.start()
        after = p.done()
        p.wait_up("worker")
        wait_for(lambda: p.done() > after, 90, "progress after restart", on_timeout=p.logs)
        recovery_s = time.monotonic() - t_stop - stop_s
        p.wait_replay(replay)
        state, _ = p.wait_drained_supervised(timeout=150)  # as compose restarts a stalled table recovery
        out = p.outcome()
        # Alerts of the file's sessions equal the no-fault ones; the poison lines that parse opened
        # sessions of their own (fake block ids), which are scored too.
        poison_sessions = {sid for _, _, sid in STREAM_POISON if sid}
        file_alerts = {i: a for i, a in out["alerts"].items() if a["subject"] not in poison_sessions}
        check_no_fault({**out, "alerts": file_alerts,
                        "alert_records": [a for a in out["alert_records"] if a["subject"] not in poison_sessions]},
                       offline, labelled, p.logs())
        dup_alerts = len(out["alert_records"]) - len(out["alerts"])
        dup_scores = len(out["score_records"]) - len(out["scores"])
        assert dup_alerts == 0, f"{dup_alerts} duplicate alerts after a graceful stop\n{p.logs()}"
        scored = {s["subject"] for s in out["scores"].values()}
        assert poison_sessions <= scored, f"poison sessions not scored: {poison_sessions - scored}"
        dead = check_poison_dead_letters(out["dead"], p.raw)
        assert state["raw"] == N_LINES + len(STREAM_POISON)
        m = p.metrics("worker")
        record("2 graceful stop (SIGTERM) + restart, poison pills first", True,
               stop_seconds=round(stop_s, 1), worker_exit_code=rc, recovery_s=round(recovery_s, 1),
               stopped_at={k: before[k] for k in ("raw_done", "events_done", "events_end")},
               alerts_expected=len(offline), alerts_observed=len(file_alerts),
               alert_records=len(out["alert_records"]), alert_duplicates=dup_alerts,
               score_duplicates=dup_scores, redelivered_events_dropped_after_restart=m.get(
                   "logad_duplicate_events_total"),
               dead_letters=dead, poison_sessions_scored=len(poison_sessions & scored),
               worker_peak_rss_mb=p.worker.peak_rss_mb(), scorer_peak_rss_mb=p.scorer.peak_rss_mb(),
               seconds_to_drained=round(time.monotonic() - t0, 1))
    finally:
        p.stop()
