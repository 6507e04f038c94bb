"""Session state under hostile input, in-process, with the worker's own pieces (streams.ingest.Ingestor,
streams.session_processor.SessionProcessor over a dict table: the store, watermarks and tombstones the Faust
table gets) and the shipped model:

6. out-of-order and late events inside sessions: the same input twice (cut into different records
   and batches, once with re-delivered batches) gives the same windows and the same alerts, equal
   to offline `logad detect` on the same lines; late events are counted (Sessionizer `late_events`)
   and equal the number of events older than their session's newest one.
7. session explosion: 10^6 distinct session ids (+3 %) against the deployed cap (sessions.
   max_open_sessions = 10^6), and one session that never ends: the cap holds, every session over
   it evicts one (counted, each with its window), RSS stops growing at the cap, and the endless
   session is cut into sliding windows of length L with stride S (the model's rule) all along,
   closing at max_events_per_session and starting again.
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from pathlib import Path

import psutil
import pytest

from logad.config import IngestConfig, SessionConfig
from logad.detect_files import detect_file, windows_from_lines
from logad.detector import Detector
from logad.formats import FORMATS
from logad.parse import ParseStats, open_lines, parse_line
from logad.records import LogRecord, Window
from logad.session_rules import Sessionizer
from logad.windows import plan_windows
from streams.codec import decode_events_record
from streams.ingest import Ingestor, RawRecord
from streams.session_processor import SessionProcessor, load_session_rules
from tests.reliability.harness import MODEL, RAW, record

pytestmark = [pytest.mark.reliability, pytest.mark.slow]  # ~6 s and ~25 s

HDFS = FORMATS["hdfs"]


def key_of(w: Window) -> tuple:
    return (w.session_id, w.start, w.ids, w.n_context, w.first_ts, w.last_ts, w.final, w.n_lines)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(MODEL, "cpu")


def shuffled_lines(seed: int, share: float = 0.05, max_delay: int = 2000) -> list[bytes]:
    """The sample with `share` of its lines delivered up to `max_delay` lines (~20 s of the log) late (their events are
    then older than later events of the same block: out of order inside the session)."""
    rng = random.Random(seed)
    lines = list(open_lines(RAW))
    keyed = [(i + (rng.randint(1, max_delay) + 0.5 if rng.random() < share else 0), line)
             for i, line in enumerate(lines)]
    return [line for _, line in sorted(keyed, key=lambda kv: kv[0])]


def expected_late(lines: list[bytes]) -> int:
    newest: dict[str, float] = {}
    late = 0
    for line in lines:
        rec = parse_line(line, HDFS)
        if not isinstance(rec, LogRecord) or rec.timestamp is None:
            continue
        for key in rec.session_keys:
            if key in newest and rec.timestamp < newest[key]:
                late += 1
            newest[key] = max(rec.timestamp, newest.get(key, rec.timestamp))
    return late


def stream_windows(lines: list[bytes], seed: int, redeliver: bool = False) -> tuple[list[Window], Counter]:
    """The worker's pure steps over the lines cut into random records (1-4 lines) and batches; with
    `redeliver`, batches overlap as after a crash (ingest re-reads, the agent re-applies)."""
    vocab, fmt, rules = load_session_rules(MODEL, None, SessionConfig())
    rng = random.Random(seed)
    records, i = [], 0
    while i < len(lines):
        n = rng.randint(1, 4)
        records.append(RawRecord("logs.hdfs", 0, len(records), None, b"".join(lines[i:i + n])))
        i += n
    batches, i = [], 0
    while i < len(records):
        n = rng.randint(1, 800)
        batches.append(records[i:i + n])
        if redeliver and rng.random() < 0.3:
            batches.append(records[max(0, i - rng.randint(1, 300)):i + n])  # re-read from an older offset
        i += n
    ing = Ingestor(fmt, vocab, max_record_bytes=IngestConfig().max_record_bytes,
                   max_line_bytes=IngestConfig().max_line_bytes)
    proc = SessionProcessor(fmt.name, rules, {})
    out: list[Window] = []
    for batch in batches:
        for _part, value in ing.process(batch).bundles:
            _, rp, sessions, _clock = decode_events_record(value)
            for sid, events, _arrival in sessions:
                out += proc.apply(sid, rp, events, now=1.0)
            proc.store.flush()
    out += proc.sweep(now=1e9, final=True)  # the idle timer once the stream is silent
    proc.store.flush()
    return out, proc.sessionizer.counters


def test_out_of_order_events_are_deterministic_and_counted(detector: Detector, tmp_path: Path) -> None:
    lines = shuffled_lines(seed=11)
    late = expected_late(lines)
    assert late > 100, "the reordering must put events out of order inside sessions"
    runs = [stream_windows(lines, seed=1), stream_windows(lines, seed=2), stream_windows(lines, seed=3, redeliver=True)]
    keys = [sorted(set(map(key_of, ws))) for ws, _ in runs]
    assert keys[0] == keys[1] == keys[2], "same input, different cuts/re-deliveries: different windows"
    for _, counters in runs[:2]:  # (a re-delivery drops its repeated events before the sessionizer)
        assert counters["late_events"] == late
    assert runs[2][1]["late_events"] == late
    # Offline on the same lines: the same windows (the stream closes them as idle, offline as end).
    vocab, fmt, rules = load_session_rules(MODEL, None, SessionConfig())
    offline = list(windows_from_lines(lines, fmt, detector, Sessionizer(fmt.name, rules), ParseStats()))
    assert sorted(set(map(key_of, offline))) == keys[0]
    # Same windows -> same alerts: score each run's windows; and `logad detect` on the reordered file.
    from logad.alerts import make_event

    th = detector.thresholds.values if detector.thresholds else {}
    alert_sets = []
    for ws, _ in runs[:2]:
        unique = list({key_of(w): w for w in ws}.values())
        scored = detector.score_windows(unique, details=True)
        alert_sets.append({make_event(s, detector.version, th)["id"]: s.scores["combined"]
                           for s in scored if s.is_anomaly})
    path = tmp_path / "reordered.log.gz"
    with gzip.open(path, "wb") as fh:
        fh.writelines(lines)
    out = tmp_path / "alerts.jsonl"
    summary = detect_file(path, MODEL, None, out, SessionConfig(), device="cpu")
    import orjson

    offline_alerts = {a["id"]: a["data"]["scores"]["combined"]
                      for a in map(orjson.loads, out.read_bytes().splitlines())}
    assert set(alert_sets[0]) == set(alert_sets[1]) == set(offline_alerts)
    for aid, score in offline_alerts.items():
        assert alert_sets[0][aid] == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert alert_sets[1][aid] == alert_sets[0][aid]
    record("6 out-of-order / late events", True, lines=len(lines), reordered_share=0.05,
           late_events_expected=late, late_events_counted=[c["late_events"] for _, c in runs],
           windows=len(keys[0]), runs_identical=True, alerts=len(offline_alerts),
           offline_equal=True, offline_summary_windows=summary["windows"])


def test_session_explosion_and_endless_session(detector: Detector) -> None:
    cfg = SessionConfig()  # the deployed caps
    vocab, fmt, rules = load_session_rules(MODEL, None, cfg)
    L, S = rules.rule.length, rules.rule.stride
    cap, max_events = rules.max_open_sessions, rules.max_events_per_session
    assert cap == 1_000_000
    n_sessions = cap + cap // 33  # ~3 % over the cap
    every = 4  # one event of the endless session after every 3 new sessions
    rp, tid = "logs.hdfs/0", 3
    proc = SessionProcessor(fmt.name, rules, {})
    me = psutil.Process()
    rss0 = me.memory_info().rss
    endless: list[Window] = []
    evicted: list[Window] = []
    n_endless, pos = 0, 0
    rss_at_cap = None
    for i in range(n_sessions):
        pos += 1
        now = 1000.0 + i * 1e-4  # wall clock: later sessions are more recently active
        for w in proc.apply(f"blk_{i}", rp, [(tid, 1.0e9 + i * 1e-3, pos)], now=now):
            evicted.append(w)
        if i % every == 0:
            pos += 1
            n_endless += 1
            for w in proc.apply("blk_endless", rp, [(tid + 1, 1.0e9 + i * 1e-3, pos)], now=now):
                (endless if w.session_id == "blk_endless" else evicted).append(w)
        proc.store.flush()
        if i == cap:
            rss_at_cap = me.memory_info().rss
        if i >= cap:
            assert len(proc.store) <= cap
    rss_end = me.memory_info().rss
    c = proc.sessionizer.counters
    open_now = proc.store.count_open()
    tombstones = len(proc.store.table) - open_now
    # The cap holds; every session over it evicted one (the least recently active), with its window.
    assert open_now == len(proc.store) <= cap
    assert c["evicted"] == c["opened"] - open_now - c["closed_max_events"] > 0
    assert len(evicted) == c["evicted"] and all(w.reason == "evicted" for w in evicted)
    assert "blk_endless" in proc.store  # the endless session is the most active: never evicted
    # RSS stops growing at the cap (what grows after it is one small tombstone per eviction, until
    # the next caught-up sweep purges them, below).
    growth = (rss_end - rss_at_cap) / max(1, rss_at_cap - rss0)
    assert growth < 0.10, f"RSS grew {growth:.0%} of the cap's footprint after the cap was reached"
    proc.sweep(now=1000.0, final=True)  # a caught-up tick: nothing idle (now is old), tombstones purged
    proc.store.flush()
    assert len(proc.store.table) == open_now
    # The endless session: sliding windows all along; at max_events it closes and starts again.
    segments = [max_events] * (n_endless // max_events)
    expected_spans = [span for n in segments for span in plan_windows(n, rules.rule)]
    tail = n_endless % max_events
    expected_spans += [span for span in plan_windows(tail, rules.rule) if span[1] - span[0] == L]  # still open
    sliding = [w for w in endless if w.reason == "max_length"]
    assert len(endless) == len(expected_spans)
    assert all(len(w.ids) == L for w in sliding) and all(w.n_context == L - S for w in sliding if w.start)
    assert [(w.start, w.end) for w in endless] == [(a, b) for a, b, _ in expected_spans]
    assert c["closed_max_events"] == len(segments)
    scored = detector.score_windows(sliding[:64])
    assert all(s.window.n_lines == (L if s.window.start == 0 else S) for s in scored)
    record("7 session explosion + endless session", True,
           distinct_sessions=n_sessions, max_open_sessions=cap, open_at_end=open_now,
           evictions_counted=c["evicted"], evicted_windows=len(evicted),
           tombstones_before_purge=tombstones,
           rss_mb_start=round(rss0 / 2**20), rss_mb_at_cap=round(rss_at_cap / 2**20), rss_mb_end=round(rss_end / 2**20),
           rss_growth_after_cap=round(growth, 3),
           bytes_per_open_session=round((rss_at_cap - rss0) / cap),
           endless_events=n_endless, endless_windows=len(endless), window_length=L, window_stride=S,
           endless_restarts_at_max_events=c["closed_max_events"], endless_windows_scored=len(scored))
