"""The scorer's envelopes with the real HDFS detector (no Kafka): `scorer.score_details` off (the
default) leaves the surprising events out of normal windows' score records only; an anomalous
window's score record keeps them and is, byte for byte, its alert; a batch has one `time`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from logad.alerts import make_event, validate
from logad.config import ScorerConfig, SessionConfig, Settings, TopicsConfig
from logad.detector import Detector
from streams.codec import decode_scores, encode_windows, vocab_tag
from tests.streams.test_stream_units import FakeConsumer, FakeProducer

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data/hdfs/HDFS_head20k.log.gz"
MODEL = ROOT / "artifacts/models/hdfs"


@pytest.fixture(scope="module")
def windows():
    from logad.detect_files import session_rules, windows_from_lines
    from logad.formats import FORMATS
    from logad.parse import ParseStats, open_lines
    from logad.session_rules import Sessionizer

    det = Detector.load(MODEL, "cpu")
    fmt = FORMATS["hdfs"]
    return list(windows_from_lines(open_lines(RAW), fmt, det, Sessionizer("hdfs", session_rules(
        det, fmt, SessionConfig())), ParseStats()))[:400]


def run_scorer(windows, score_details: bool):
    from streams.scorer import Scorer

    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"),
                        scorer=ScorerConfig(score_details=score_details))
    det = Detector.load(MODEL, "cpu", batch_size=64, cache_size=1000)
    recs = [SimpleNamespace(topic="W", partition=0, offset=i, key=None, value=v, timestamp=0)
            for i, v in enumerate(encode_windows(windows, max_windows=50, vocab=vocab_tag(det.bundle.vocab)))]
    producer = FakeProducer()
    scorer = Scorer(det, FakeConsumer(), producer, settings)
    asyncio.run(scorer.handle(recs))  # one batch
    scores = [e for t, _, v in producer.sent if t == "S" for e in decode_scores(v)]
    alerts = [v for t, _, v in producer.sent if t == "A"]
    return det, scores, alerts, producer


def test_score_records_leave_out_normal_windows_details_but_alerts_keep_them(windows, monkeypatch) -> None:
    import time

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # both runs decide at the same instant
    det, lean, alerts, producer = run_scorer(windows, score_details=False)
    _, full, full_alerts, _ = run_scorer(windows, score_details=True)
    assert len(lean) == len(full) == len(windows) and alerts == full_alerts
    assert {e["time"] for e in lean} == {"2023-11-14T22:13:20.250Z"}  # formatted once per batch
    anomalous = [e for e in lean if e["data"]["is_anomaly"]]
    assert anomalous and len(anomalous) < len(lean)
    for a, b in zip(lean, full):
        validate(a)
        if a["data"]["is_anomaly"]:
            assert a == b and a["data"]["surprising"]
        else:
            assert a["data"]["surprising"] == [] and b["data"]["surprising"]
            assert {**a["data"], "surprising": b["data"]["surprising"]} == b["data"]
    # an alert is the same bytes as the anomalous window's score envelope, and complete (records go
    # out grouped by partition: compare as sets)
    stamp = lean[0]["time"]
    ws = det.score_windows(windows, details=True)
    tag = vocab_tag(det.bundle.vocab)  # the envelopes name the vocab their window ids refer to
    expected = {orjson.dumps(make_event(s, det.version, det.thresholds.values, stamp=stamp, vocab=tag))
                for s in ws if s.is_anomaly}
    assert len(alerts) == len(expected) and set(alerts) == expected
    assert sorted(alerts) == sorted(orjson.dumps(e) for e in anomalous)
    # the full records are what make_event gives by default (score_details=True: as before the option)
    by_id = {e["id"]: e for e in full}
    assert len(by_id) == len(full) and by_id == {
        e["id"]: e for e in (orjson.loads(orjson.dumps(make_event(s, det.version, det.thresholds.values, stamp=stamp,
                                                                  vocab=tag)))
                             for s in ws)}


def test_alert_records_carry_cloudevents_headers(windows) -> None:
    _, _, alerts, producer = run_scorer(windows, score_details=False)
    assert alerts
    for (topic, key, value), headers in zip(producer.sent, producer.headers):
        if topic != "A":
            assert headers is None  # score bundles are not events
            continue
        h = dict(headers)
        event = orjson.loads(value)
        assert h["content-type"] == b"application/cloudevents+json; charset=UTF-8"
        assert h["ce_specversion"] == b"1.0" and h["ce_id"].decode() == event["id"]
        assert h["ce_type"].decode() == event["type"] and h["ce_source"].decode() == event["source"]
        assert h["ce_subject"].decode() == event["subject"] == key.decode()
        assert h["ce_time"].decode() == event["time"]
