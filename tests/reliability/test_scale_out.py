"""Scale-out on the real broker: several workers (one Faust app id: one consumer group per stage) and
scorers (one group) on a raw topic of six partitions, one per "host".

(a) failover:  3 workers + 2 scorers; one worker SIGKILLed mid-replay and not restarted: its raw
    and events partitions move to the survivors, which rebuild its sessions from the changelog.
(b) scale out: 2 workers + 2 scorers, a third worker started mid-replay (a rebalance): it takes
    partitions and their sessions over from the others.
(c) brokers:   a three-node KRaft cluster (scripts/kafka-cluster; replication factor 3,
    min.insync.replicas=2, internal topics too), 2 workers + 1 scorer; the group coordinator's
    node SIGKILLed mid-replay, restarted 5 s later. Nobody touches the logad processes.

Input: the HDFS sample in file order, each line to the raw partition of its block (crc32 mod 6;
every line of the sample names one block), so every session lives in one partition and the no-fault
result is exactly the offline one. Pass, in every scenario: deduped alerts = offline `logad detect`
ids; the windows scored, as (session, start, end), = the offline windows (1,454: a session whose
state was lost in a move would restart at 0 and show up as a different window); every labelled
session got a decision; every line is on the raw topic once the feed is acknowledged.

Why the idle timeout outlasts the feed plus the outage: see test_worker_faults (a session is only
closed early if its next line comes later than the idle timeout).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.harness import N_LINES, ROOT, record, wait_for
from tests.reliability.scaleout import (RAW_PARTITIONS, Feeder, ScaledPipeline, offline_windows, sample_lines,
                                        split_by_session, stream_windows)
from tests.reliability.test_worker_faults import SEED, check_no_fault

# several workers, scorers and brokers on 2 cores take minutes: in `make test-reliability`, not `make test`
pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.scaleout]

CLUSTER = ROOT / "scripts" / "kafka-cluster"


@pytest.fixture(scope="module")
def feed() -> dict:
    """The sample's lines, their raw partitions and the offline windows."""
    lines = sample_lines()
    parts = split_by_session(lines, RAW_PARTITIONS)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    from tests.reliability.scaleout import BLOCK

    for i, line in enumerate(lines):
        sid = BLOCK.search(line).group().decode()
        first.setdefault(sid, i)
        last[sid] = i
    return {"lines": lines, "parts": parts, "items": list(zip(parts, lines)), "first": first, "last": last,
            "windows": offline_windows(lines)}


def spanning(feed: dict, at: int, events_partitions: list[int]) -> int:
    """Sessions with lines on both sides of line `at` whose events partition is one of these: their
    first lines were applied before the fault, so only the changelog carries them over."""
    from streams.session_processor import key_partition

    owned = set(events_partitions)
    return sum(1 for sid, f in feed["first"].items()
               if f < at <= feed["last"][sid] and key_partition(sid, RAW_PARTITIONS) in owned)


def outcome_figures(p: ScaledPipeline, feed: dict, offline: dict[str, dict], labelled: set[str]) -> dict:
    """The pass criteria (assertions) and the figures every scenario records."""
    out = p.outcome()
    check_no_fault(out, offline, labelled, p.logs())
    got, want = stream_windows(out["scores"]), feed["windows"]
    assert got == want, (f"windows differ from offline: only in stream {sorted(got - want)[:5]}, "
                         f"missing {sorted(want - got)[:5]}\n{p.logs()}")
    decided = {s["subject"] for s in out["scores"].values()}
    return dict(alerts_expected=len(offline), alerts_observed=len(out["alerts"]),
                alert_records=len(out["alert_records"]),
                alert_duplicates=len(out["alert_records"]) - len(out["alerts"]),
                windows_expected=len(want), windows_scored=len(out["scores"]),
                score_duplicates=len(out["score_records"]) - len(out["scores"]),
                sessions_decided=len(decided), labelled_sessions=len(labelled),
                sessions_lost=len(labelled - decided))


def wait_assignment(p: ScaledPipeline, members: int, timeout: float = 90.0) -> dict:
    def ok() -> dict:
        a = p.assignment()
        return a if len(a) == members and all(v.get("events") and v.get("raw") for v in a.values()) else {}

    return wait_for(ok, timeout, f"{members} workers holding events and raw partitions", poll=0.5,
                    on_timeout=p.logs)


def wait_moving(p: ScaledPipeline, t0: float, moved: dict[str, list[int]], base: dict[str, dict[int, int]],
                new_owner: str | None, gone: str | None, timeout: float = 90.0) -> dict:
    """After a fault at t0: until the group is Stable with the moved partitions held by their new
    owner(s), and each moved partition's committed offset advanced past its value at t0 (the new
    owner handles its records). Returns the seconds from t0 of each step."""
    groups = {"events": (p.id, p.settings.topics.events), "raw": (f"{p.id}-ingest", p.raw)}
    t_assigned, advanced, owners = None, {k: {} for k in moved}, {}
    deadline = time.monotonic() + timeout
    while True:
        p.supervise(spared=())
        now = time.monotonic()
        if t_assigned is None:
            a = p.assignment()
            held = {k: {part: cid for cid, v in a.items() for part in v.get(k, [])} for k in moved}
            if a and (gone is None or gone not in a) and all(
                    part in held[k] and (new_owner is None or held[k][part] == new_owner)
                    for k in moved for part in moved[k]):
                t_assigned, owners = now, {k: {part: held[k][part] for part in moved[k]} for k in moved}
        for k, (group, topic) in groups.items():
            if len(advanced[k]) < len(moved[k]):
                c = p.committed(group, topic)
                for part in moved[k]:
                    if part not in advanced[k] and c.get(part, -1) > base[k].get(part, -1):
                        advanced[k][part] = round(now - t0, 1)
        if t_assigned is not None and all(len(advanced[k]) == len(moved[k]) for k in moved):
            return {"reassigned_s": round(t_assigned - t0, 1), "new_owners": owners,
                    **{f"{k}_partitions_committing_s": max(advanced[k].values(), default=None) for k in moved}}
        if now > deadline:
            raise AssertionError(f"moved partitions {moved} not taken over after {timeout:g} s "
                                 f"(assigned: {t_assigned is not None}, advanced: {advanced})\n{p.logs()}")
        time.sleep(0.3)


def committed_now(p: ScaledPipeline) -> dict[str, dict[int, int]]:
    return {"events": p.committed(p.id, p.settings.topics.events), "raw": p.committed(f"{p.id}-ingest", p.raw)}


# 1,500 lines/s: the feed takes ~11 s; a fault 2.5-4.5 s in leaves it running through the recovery.
RATE = 1500


@pytest.mark.timeout(420)
def test_worker_failover_sigkill(kafka_bootstrap: str, tmp_path: Path, offline: dict[str, dict],
                                 labelled: set[str], feed: dict) -> None:
    """(a) 3 workers + 2 scorers, 6 raw partitions; one worker SIGKILLed mid-replay, not restarted."""
    rng = random.Random(SEED + 10)
    p = ScaledPipeline(kafka_bootstrap, tmp_path, workers=3, scorers=2,
                       LOGAD_SESSIONS_IDLE_TIMEOUT_S="25", LOGAD_INGEST_BATCH_SIZE="500")
    try:
        p.create_topics()
        p.start()
        before = wait_assignment(p, 3)
        feeder = Feeder(p.settings, p.raw, feed["items"], RATE)
        t0 = time.monotonic()
        feeder.start()
        wait_for(lambda: feeder.sent > 0 and p.done() > 0, 60, "progress before the kill", on_timeout=p.logs)
        time.sleep(rng.uniform(2.0, 4.0))
        victim = rng.choice(p.workers)
        vid = p.client_id(victim)
        assign = p.assignment() or before
        moved = {k: assign[vid][k] for k in ("events", "raw")}
        base = committed_now(p)
        open_at_kill = p.proc_metrics(victim).get("logad_open_sessions")
        sent_at_kill = feeder.sent
        assert feeder.running(), "the feed ended before the kill: the test proved nothing"
        victim.kill()
        t_kill = time.monotonic()
        moving = wait_moving(p, t_kill, moved, base, None, vid)
        feed_s = feeder.wait()
        state = p.wait_drained(timeout=180, spared=(victim,), expect_windows=len(feed["windows"]))
        drained_s = time.monotonic() - t_kill
        assert state["raw"] == N_LINES
        survivors = [w for w in p.workers if w is not victim]
        assert all(w.alive() for w in survivors) and not victim.alive(), p.logs()
        figures = outcome_figures(p, feed, offline, labelled)
        record("10 worker failover: 3 workers + 2 scorers, 6 raw partitions, one worker SIGKILLed", True,
               seed=SEED, rate_lines_per_s=RATE, feed_s=round(feed_s, 1), kill_at_s=round(t_kill - t0, 1),
               lines_sent_at_kill=sent_at_kill, victim=vid, assignment_before=assign, moved_partitions=moved,
               victim_open_sessions_at_kill=open_at_kill,
               sessions_spanning_kill_on_moved_partitions=spanning(feed, sent_at_kill, moved["events"]),
               **moving, drained_after_kill_s=round(drained_s, 1), stall_restarts=p.stall_restarts,
               lag_after={k: state[k] for k in ("raw_lag", "events_lag", "windows_lag")},
               open_sessions_metric_after_drain=state["open_sessions_by_worker"],
               **figures, worker_group_joins={w.name: w.joins() for w in p.workers},
               worker_peak_rss_mb=max(w.peak_rss_mb() for w in p.workers),
               scorer_peak_rss_mb=max(s.peak_rss_mb() for s in p.scorers))
    finally:
        p.stop()


@pytest.mark.timeout(420)
def test_scale_out_add_worker(kafka_bootstrap: str, tmp_path: Path, offline: dict[str, dict],
                              labelled: set[str], feed: dict) -> None:
    """(b) 2 workers + 2 scorers; a third worker started mid-replay takes partitions over."""
    rng = random.Random(SEED + 11)
    p = ScaledPipeline(kafka_bootstrap, tmp_path, workers=2, scorers=2,
                       LOGAD_SESSIONS_IDLE_TIMEOUT_S="25", LOGAD_INGEST_BATCH_SIZE="500")
    try:
        p.create_topics()
        p.start()
        before = wait_assignment(p, 2)
        feeder = Feeder(p.settings, p.raw, feed["items"], RATE)
        t0 = time.monotonic()
        feeder.start()
        wait_for(lambda: feeder.sent > 0 and p.done() > 0, 60, "progress before the new worker", on_timeout=p.logs)
        time.sleep(rng.uniform(1.0, 2.5))
        assert feeder.running(), "the feed ended before the new worker: the test proved nothing"
        base = committed_now(p)
        sent_at_add = feeder.sent
        t_add = time.monotonic()
        new = p.add_worker()
        new_id = p.client_id(new)
        up_s = p.wait_proc(new)
        after = wait_assignment(p, 3)
        moved = {k: after[new_id][k] for k in ("events", "raw")}
        moving = wait_moving(p, t_add, moved, base, new_id, None)
        # The new worker's open sessions right after the take-over: what it rebuilt from the changelog.
        recovered = 0.0
        for _ in range(3):
            time.sleep(0.4)
            recovered = max(recovered, p.proc_metrics(new).get("logad_open_sessions") or 0)
        feed_s = feeder.wait()
        state = p.wait_drained(timeout=180, expect_windows=len(feed["windows"]))
        drained_s = time.monotonic() - t_add
        METRIC_AFTER_REBALANCE["open_sessions_by_worker"] = state["open_sessions_by_worker"]
        assert state["raw"] == N_LINES
        assert all(w.alive() for w in p.workers), p.logs()
        figures = outcome_figures(p, feed, offline, labelled)
        record("11 scale out: a third worker added mid-replay (2 -> 3 workers, 2 scorers, 6 raw partitions)", True,
               seed=SEED, rate_lines_per_s=RATE, feed_s=round(feed_s, 1), added_at_s=round(t_add - t0, 1),
               lines_sent_at_add=sent_at_add, assignment_before=before, assignment_after=after,
               moved_to_new_worker=moved, new_worker_up_s=round(up_s, 1),
               new_worker_open_sessions_after_takeover=recovered,
               sessions_spanning_add_on_moved_partitions=spanning(feed, sent_at_add, moved["events"]),
               **moving, drained_after_add_s=round(drained_s, 1), stall_restarts=p.stall_restarts,
               lag_after={k: state[k] for k in ("raw_lag", "events_lag", "windows_lag")},
               open_sessions_metric_after_drain=state["open_sessions_by_worker"],
               **figures, worker_group_joins={w.name: w.joins() for w in p.workers},
               worker_peak_rss_mb=max(w.peak_rss_mb() for w in p.workers),
               scorer_peak_rss_mb=max(s.peak_rss_mb() for s in p.scorers))
    finally:
        p.stop()


# logad_open_sessions of each worker once scenario (b) drained (every window scored, no lag).
METRIC_AFTER_REBALANCE: dict = {}


def test_scale_out_open_sessions_metric_after_rebalance() -> None:
    """After (b) drained, no worker reports open sessions (figures of test_scale_out_add_worker): the
    workers that handed partitions over forgot those sessions (streams/app.py forget_revoked)."""
    if not METRIC_AFTER_REBALANCE:
        pytest.skip("needs test_scale_out_add_worker in the same run")
    by_worker = METRIC_AFTER_REBALANCE["open_sessions_by_worker"]
    assert sum(v or 0 for v in by_worker.values()) == 0, f"open sessions after drain: {by_worker}"


def cluster(*args: str, state_dir: Path, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CLUSTER), "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def replication_state(p: ScaledPipeline) -> dict:
    """{"under_replicated": partitions of logad's topics + internal ones with ISR < 3, "replicas":
    min replication factor seen, "min_insync": the raw topic's min.insync.replicas}; {} on errors."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streams.kafka_clients import admin_kwargs
    from streams.topics import changelog_topic

    t = p.settings.topics
    names = [p.raw, t.events, t.windows, t.scores, t.alerts, t.dead_letter, changelog_topic(p.id),
             "__consumer_offsets"]

    async def go() -> dict:
        admin = AIOKafkaAdminClient(**admin_kwargs(p.settings.kafka, request_timeout_ms=5000))
        await admin.start()
        try:
            meta = await admin.describe_topics(names)
            under, replicas = 0, 99
            for m in meta:
                if m["error_code"] != 0:
                    return {}
                for part in m["partitions"]:
                    replicas = min(replicas, len(part["replicas"]))
                    under += len(part["isr"]) < 3
            cfg = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, p.raw)])
            entries = {e["config_names"]: e["config_value"] for r in cfg for res in r.to_object()["resources"]
                       for e in res["config_entries"]}
            return {"under_replicated": under, "replicas": replicas,
                    "min_insync": entries.get("min.insync.replicas")}
        finally:
            await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(go(), 10))
    except Exception:
        return {}


def coordinator(p: ScaledPipeline) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka_clients import admin_kwargs

    async def go() -> int:
        admin = AIOKafkaAdminClient(**admin_kwargs(p.settings.kafka))
        await admin.start()
        try:
            return await admin.find_coordinator(p.id)
        finally:
            await admin.close()

    return asyncio.run(go())


DOWN_S = 5.0


@pytest.mark.timeout(480)
def test_three_brokers_kill_one(tmp_path: Path, offline: dict[str, dict], labelled: set[str], feed: dict) -> None:
    """(c) 3-node KRaft cluster, RF 3, min.insync.replicas 2; the coordinator's node SIGKILLed mid-replay."""
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("java not found: this scenario starts its own cluster (scripts/kafka-cluster needs a JDK >= 17)")
    rng = random.Random(SEED + 12)
    state_dir = tmp_path / "cluster"
    started = cluster("start", "--nodes", "3", "--owner-pid", str(os.getpid()), state_dir=state_dir)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip().splitlines()[-1]
    p = ScaledPipeline(bootstrap, tmp_path, workers=2, scorers=1, LOGAD_TOPICS_REPLICATION="3",
                       LOGAD_SESSIONS_IDLE_TIMEOUT_S="30", LOGAD_INGEST_BATCH_SIZE="500")
    try:
        p.create_topics()
        p.start()
        wait_assignment(p, 2)
        repl = wait_for(lambda: (r := replication_state(p)) and r["under_replicated"] == 0 and r, 60,
                        "every partition fully replicated", on_timeout=p.logs)
        assert repl["replicas"] == 3 and repl["min_insync"] == "2", repl
        feeder = Feeder(p.settings, p.raw, feed["items"], RATE)
        t0 = time.monotonic()
        feeder.start()
        wait_for(lambda: feeder.sent > 0 and p.done() > 0, 60, "progress before the broker kill", on_timeout=p.logs)
        time.sleep(rng.uniform(1.5, 3.5))
        node = coordinator(p)
        before = p.done()
        sent_at_kill = feeder.sent
        assert feeder.running(), "the feed ended before the broker kill: the test proved nothing"
        killed = cluster("kill", str(node), state_dir=state_dir)
        t_kill = time.monotonic()
        assert killed.returncode == 0 and "killed" in killed.stdout, killed.stderr
        wait_for(lambda: p.done() > before, 90, "progress with one broker down", poll=0.25, on_timeout=p.logs)
        progress_s = time.monotonic() - t_kill
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - t_kill)))
        t_restart = time.monotonic()
        restarted = cluster("start-node", str(node), state_dir=state_dir)
        assert restarted.returncode == 0, restarted.stderr
        t_up = time.monotonic()
        wait_for(lambda: (r := replication_state(p)) and r["under_replicated"] == 0, 120,
                 "the restarted broker back in every ISR", poll=0.5, on_timeout=p.logs)
        isr_s = time.monotonic() - t_up
        feed_s = feeder.wait()
        state = p.wait_drained(timeout=180, expect_windows=len(feed["windows"]))
        drained_s = time.monotonic() - t_kill
        assert state["raw"] == N_LINES  # every acknowledged line is on the raw topic, once
        # No manual step: the logad processes of before the kill did it all.
        assert all(w.runs == 1 and w.alive() for w in p.workers) and all(s.runs == 1 and s.alive()
                                                                         for s in p.scorers), p.logs()
        figures = outcome_figures(p, feed, offline, labelled)
        record("12 three brokers (KRaft, RF 3, min.insync.replicas 2): the group coordinator's node SIGKILLed "
               "mid-replay, restarted", True,
               seed=SEED, rate_lines_per_s=RATE, feed_s=round(feed_s, 1), kill_at_s=round(t_kill - t0, 1),
               lines_sent_at_kill=sent_at_kill, killed_node=node, down_s=round(t_up - t_kill, 1),
               progress_after_kill_s=round(progress_s, 1), node_restart_s=round(t_up - t_restart, 1),
               isr_full_after_restart_s=round(isr_s, 1), drained_after_kill_s=round(drained_s, 1),
               stall_restarts=p.stall_restarts,
               lag_after={k: state[k] for k in ("raw_lag", "events_lag", "windows_lag")},
               open_sessions_metric_after_drain=state["open_sessions_by_worker"],
               **figures, worker_group_joins={w.name: w.joins() for w in p.workers},
               scorer_group_joins={s.name: s.joins() for s in p.scorers},
               worker_peak_rss_mb=max(w.peak_rss_mb() for w in p.workers),
               scorer_peak_rss_mb=max(s.peak_rss_mb() for s in p.scorers))
    finally:
        p.stop()
        cluster("stop", state_dir=state_dir, timeout=90)
