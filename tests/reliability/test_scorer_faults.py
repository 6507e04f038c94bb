"""4. Scorer down, then slow, while the HDFS sample is replayed.

down: the scorer is stopped (SIGTERM) before the replay and stays down DOWN_S seconds, long enough
      for the worker to ingest everything and close every session: all windows then wait in Kafka.
slow: the restarted scorer works through that backlog while it is frozen 2 s of every 3 (SIGSTOP /
      SIGCONT: a scorer 3x too slow, e.g. an overloaded CPU); the pauses stay under the group's
      session timeout (6 s), so a slow scorer must not be taken for a dead one.
Pass: the worker's RSS stays flat while the windows wait (they are in Kafka, not in the worker);
the windows lag equals every window produced at the end of the outage; after recovery every window
is scored (deduped alerts = the no-fault ones, every labelled session decided); no rebalance storm:
the worker joins its two groups once, the scorer once per start (no join while slow).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.reliability.harness import N_LINES, Pipeline, record, wait_for
from tests.reliability.test_worker_faults import check_no_fault

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

DOWN_S = 15.0
SLOW_S = 8.0  # length of the slow phase: frozen 2 s, running 1 s, repeated
FROZEN_S = 2.0  # with 1 s heartbeats, the longest silence stays well under the scorer's 6 s group session timeout
FLAT_RSS = 1.10  # the worker's RSS while windows wait: at most +10 % over its value when they started waiting


@pytest.mark.timeout(300)
def test_scorer_down_then_slow(kafka_bootstrap: str, tmp_path: Path, reference: dict, labelled: set[str]) -> None:
    offline = reference["alerts"]
    n_windows = reference["summary"]["windows"]
    p = Pipeline(kafka_bootstrap, tmp_path, LOGAD_SESSIONS_IDLE_TIMEOUT_S="6")
    try:
        p.start()
        assert p.scorer.stop() == 0, p.logs()
        t_down = time.monotonic()
        replay = p.start_replay("--rate", "4000")  # ~4 s, under the idle timeout
        p.wait_replay(replay)

        def worker_done() -> dict:
            st, m = p.progress(), p.metrics("worker")
            ok = (st and st["raw_done"] == N_LINES and st["events_done"] == st["events_end"]
                  and m.get("logad_open_sessions") == 0 and p.windows_in_kafka() >= n_windows)
            return st if ok else {}

        st = wait_for(worker_done, DOWN_S + 60, "the worker to close every session", poll=0.5, on_timeout=p.logs)
        t_waiting = time.monotonic()  # every window is in Kafka now, none scored
        assert st["windows_done"] == 0, st
        time.sleep(max(0.0, t_down + DOWN_S - time.monotonic()))
        at_end = p.progress()
        waiting = p.windows_in_kafka()  # windows records are bundles: count the windows in them
        assert at_end["windows_done"] == 0 and waiting >= n_windows, (at_end, waiting)  # they wait in Kafka
        t_up = time.monotonic()
        rss_waiting = p.worker.rss(since=t_waiting, until=t_up)
        assert rss_waiting, "no RSS samples of the worker while the windows waited"

        # Back, but slow: frozen 2 s of every 3 while it works through the backlog.
        p.scorer.start()
        p.wait_up("scorer")
        t_slow = time.monotonic()
        cycles = 0
        while time.monotonic() - t_slow < SLOW_S:
            p.scorer.signal(signal.SIGSTOP)
            time.sleep(FROZEN_S)
            p.scorer.signal(signal.SIGCONT)
            time.sleep(1.0)
            cycles += 1
        slow_progress = p.progress()
        state = p.wait_drained(timeout=120)
        recovery_s = time.monotonic() - t_up
        out = p.outcome()
        check_no_fault(out, offline, labelled, p.logs())
        assert len(out["scores"]) == n_windows
        worker_joins, scorer_joins = p.worker.joins(), p.scorer.joins()
        rss_ratio = max(rss_waiting) / rss_waiting[0]
        figures = dict(
            scorer_down_s=round(t_up - t_down, 1), windows_waiting_in_kafka=waiting,
            window_records_waiting=at_end["windows_end"] - at_end["windows_done"],
            worker_rss_mb_when_windows_started_waiting=round(rss_waiting[0] / 2**20, 1),
            worker_rss_mb_peak_while_waiting=round(max(rss_waiting) / 2**20, 1), worker_rss_ratio=round(rss_ratio, 3),
            slow_phase_s=round(SLOW_S, 1), slow_cycles=cycles,
            window_records_scored_during_slow_phase=slow_progress.get("windows_done"),
            recovery_s_to_drained=round(recovery_s, 1), windows_scored=len(out["scores"]),
            alerts_expected=len(offline), alerts_observed=len(out["alerts"]),
            alert_duplicates=len(out["alert_records"]) - len(out["alerts"]),
            score_duplicates=len(out["score_records"]) - len(out["scores"]),
            worker_group_joins=worker_joins, scorer_group_joins=scorer_joins, scorer_starts=p.scorer.runs,
            worker_peak_rss_mb=p.worker.peak_rss_mb(), scorer_peak_rss_mb=p.scorer.peak_rss_mb(),
            lag_after={k: state[k] for k in ("raw_lag", "events_lag", "windows_lag")})
        ok = rss_ratio <= FLAT_RSS and worker_joins == 2 and scorer_joins == p.scorer.runs
        record("4 scorer down 15 s, then slow (frozen 2 s of 3)", ok, **figures)
        assert rss_ratio <= FLAT_RSS, f"worker RSS grew {rss_ratio:.2f}x while the windows waited in Kafka"
        # Two groups (ingest, sessions) joined once each; the scorer's group once per start.
        assert worker_joins == 2, f"worker joined its groups {worker_joins} times\n{p.worker.text()[-3000:]}"
        assert scorer_joins == p.scorer.runs, f"scorer joined {scorer_joins} times in {p.scorer.runs} starts"
    finally:
        p.scorer.signal(signal.SIGCONT)
        p.stop()
