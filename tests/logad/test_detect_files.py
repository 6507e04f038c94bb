"""`logad detect` on the bundled raw HDFS sample: decisions equal `logad score` on the same sessions,
every alert follows the schema, and the labelled anomalous blocks the model can see are flagged."""

import csv
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from logad.alerts import validate
from logad.config import SessionConfig
from logad.detect_files import detect_file
from logad.detector import Detector
from logad.formats import FORMATS
from logad.parse import iter_records

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data/hdfs/HDFS_head20k.log.gz"
LABELS = ROOT / "data/hdfs/HDFS_head20k_anomaly_label.csv"
MODEL = ROOT / "artifacts/models/hdfs"


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "alerts.jsonl"
    summary = detect_file(RAW, MODEL, "hdfs", out, SessionConfig(), device="cpu")
    return summary, [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_detect_equals_score_on_same_sessions(detected):
    summary, alerts = detected
    det = Detector.load(MODEL, "cpu")
    sessions = defaultdict(list)
    for rec in iter_records(RAW, FORMATS["hdfs"]):
        key = det.bundle.vocab.key_of(det.bundle.vocab.match(rec.content))
        for s in rec.session_keys:
            sessions[s].append(key)
    # The raw sample is the head of a log: its sessions may be cut, as `detect` assumes at end of input.
    res = det.score_sessions(((s, None, keys) for s, keys in sessions.items()), complete=False)
    assert {r.session_id for r in res if r.is_anomaly} == {a["subject"] for a in alerts}
    assert summary["sessions"] == len(sessions) == 1443
    assert summary["lines"]["lines"] == 16252


def test_alerts_follow_schema_and_ids_are_stable(detected):
    _, alerts = detected
    assert alerts
    for a in alerts:
        validate(a)
        assert a["data"]["model_version"].startswith("hdfs-")
    assert len({a["id"] for a in alerts}) == len(alerts)


def test_flags_visible_labelled_anomalies(detected):
    _, alerts = detected
    labels = {r["BlockId"]: r["Label"] for r in csv.DictReader(LABELS.open())}
    flagged = {a["subject"] for a in alerts}
    anomalous = {b for b, lab in labels.items() if lab == "Anomaly"}
    det = Detector.load(MODEL, "cpu")
    # "Visible": the block's trace in these first 20k lines holds a template never seen in normal training.
    seen = det.reference.seen
    visible = set()
    for rec in iter_records(RAW, FORMATS["hdfs"]):
        tid = det.bundle.vocab.match(rec.content)
        if not bool(seen[tid]):
            visible.update(b for b in rec.session_keys if b in anomalous)
    assert visible, "the sample should contain anomalies with unseen templates"
    assert visible <= flagged


def test_score_cache_and_length_buckets_keep_every_decision():
    """Windows scored in length-sorted batches and answered from the (ids, n_context) cache get the
    decisions, reasons and surprising events of plain in-order batches; repeats hit the cache."""
    from logad.detect_files import session_rules, windows_from_lines
    from logad.parse import ParseStats, open_lines
    from logad.session_rules import Sessionizer

    plain = Detector.load(MODEL, "cpu", batch_size=1)
    fmt = FORMATS["hdfs"]
    windows = list(windows_from_lines(open_lines(RAW), fmt, plain, Sessionizer("hdfs", session_rules(
        plain, fmt, SessionConfig())), ParseStats()))[:300]
    expected = plain.score_windows(windows, details=True)  # one window per forward pass: no padding
    cached = Detector.load(MODEL, "cpu", batch_size=64, cache_size=1000)
    for _ in range(2):  # cold, then warm
        got = cached.score_windows(windows, details=True)
        assert [(g.window, g.is_anomaly, g.reasons) for g in got] == [(e.window, e.is_anomaly, e.reasons) for e in expected]
        assert [[d["template_id"] for d in g.surprising] for g in got] == \
            [[d["template_id"] for d in e.surprising] for e in expected]
        for g, e in zip(got, expected):
            assert g.scores.keys() == e.scores.keys()
            assert all(abs(g.scores[k] - e.scores[k]) <= 1e-4 * max(1.0, abs(e.scores[k])) for k in e.scores)
    distinct = len({(w.ids, w.n_context) for w in windows})
    assert cached.cache_misses == distinct and cached.cache_hits == 2 * len(windows) - distinct


def test_decision_cache_gives_the_uncached_window_scores():
    """The cache answers repeats with their cached decision (scores with "combined", flag, reasons)
    and shared surprising-event dicts: every WindowScore equals the uncached one, for repeats that
    close complete and cut (the count scores apply to the first only), at other session offsets
    (the events' indexes shift) and within one call as across calls."""
    import dataclasses

    from logad.detect_files import session_rules, windows_from_lines
    from logad.parse import ParseStats, open_lines
    from logad.session_rules import Sessionizer
    from logad.windows import is_complete

    # adapt=False pins the sealed level: this is about the cache, not about the instability estimate
    # (whose level moves between calls); one window per pass: scores do not depend on batching
    plain = Detector.load(MODEL, "cpu", batch_size=1, adapt=False)
    fmt = FORMATS["hdfs"]
    base = list(windows_from_lines(open_lines(RAW), fmt, plain, Sessionizer("hdfs", session_rules(
        plain, fmt, SessionConfig())), ParseStats()))[:200]
    windows = []
    for k, w in enumerate(base):
        windows.append(w)
        windows.append(dataclasses.replace(w, session_id=f"r{k}", start=w.start + 7 * k,
                                           reason="idle" if is_complete(w.reason) else "terminal"))
    windows += base[:50]  # plain repeats
    expected = plain.score_windows(windows, details=True)
    for w, e in zip(windows, expected):  # the uncached path against the rule, from the model's own output
        (sc,), (ev,) = plain.scorer.score([w], details=True)
        complete = is_complete(w.reason)
        assert (e.is_anomaly, e.reasons) == plain.thresholds.decide(sc, complete=complete)
        assert e.scores == {**sc, "combined": plain.combined(sc, complete)}
        assert [(d["index"], d["template_id"], d["prob"]) for d in e.surprising] == \
            [(w.start + x.index, x.template_id, x.prob) for x in ev]
    assert {is_complete(e.window.reason) for e in expected} == {True, False}
    assert any(e.is_anomaly for e in expected) and any(e.window.start and e.surprising for e in expected)
    assert any(a.reasons != b.reasons for a, b in zip(expected[0::2], expected[1::2]))  # the reason matters
    cached = Detector.load(MODEL, "cpu", batch_size=1, cache_size=1000, adapt=False)
    for _ in range(2):  # cold (repeats within the call), then warm
        assert cached.score_windows(windows, details=True) == expected
    distinct = len({(w.ids, w.n_context) for w in windows})
    assert cached.cache_misses == distinct and cached.cache_hits == 2 * len(windows) - distinct
    tiny = Detector.load(MODEL, "cpu", batch_size=1, cache_size=3, adapt=False)  # cleared again and again
    assert tiny.score_windows(windows, details=True) == expected


def test_adaptive_detector_decides_a_call_at_its_sources_level() -> None:
    """The shipped thresholds carry instability levels: a fresh detector decides at the start level,
    with that level's thresholds, until its estimate of the source's instability moves it."""
    from logad.detect_files import session_rules, windows_from_lines
    from logad.parse import ParseStats, open_lines
    from logad.session_rules import Sessionizer
    from logad.windows import is_complete

    det = Detector.load(MODEL, "cpu")
    assert det.adapt and len(det.thresholds.levels) > 1
    fmt = FORMATS["hdfs"]
    windows = list(windows_from_lines(open_lines(RAW), fmt, det, Sessionizer("hdfs", session_rules(
        det, fmt, SessionConfig())), ParseStats()))[:300]
    level = det.level_of("hdfs")
    assert level == det.thresholds.start_level()
    th = det.thresholds.at_level(level)
    out = det.score_windows(windows)
    assert {is_complete(ws.window.reason) for ws in out} == {True, False}
    for ws in out:
        complete = is_complete(ws.window.reason)
        # whole traces at the level's thresholds; cut ones by the prefix-safe rules at the sealed values
        want = th.decide(ws.scores, complete=True) if complete else det.thresholds.decide(ws.scores, complete=False)
        assert (ws.is_anomaly, ws.reasons) == want
