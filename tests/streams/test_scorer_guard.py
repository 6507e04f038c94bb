"""The scorer's two refusals (no Kafka): windows records of another vocab are dead-lettered
("vocab_mismatch", counted, logged, never scored); windows the worker marked held are scored and
their score records published, but no alert goes out (logad_alerts_held_total{reason})."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import CollectorRegistry

from logad.config import Settings, TopicsConfig
from logad.records import Window
from streams.codec import CodecError, decode_scores, decode_windows_record, encode_windows, vocab_tag, window_dict
from streams.prometheus import ScorerMetrics
from tests.streams.test_stream_units import TAG, FakeConsumer, FakeDetector, FakeProducer

SETTINGS = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))


def window(i: int, n: int = 4) -> Window:  # FakeDetector: more than 2 ids is anomalous
    return Window("hdfs", f"blk_{i}", 0, tuple(range(3, 3 + n)), 0, 1.0, 2.0, "idle", True, n)


def rec(offset: int, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic="W", partition=0, offset=offset, key=None, value=value, timestamp=0)


def run(records: list) -> tuple[FakeDetector, FakeProducer, FakeConsumer, ScorerMetrics, CollectorRegistry, object]:
    from streams.scorer import Scorer

    reg = CollectorRegistry()
    metrics = ScorerMetrics(reg)
    det, producer, consumer = FakeDetector(set()), FakeProducer(), FakeConsumer()
    scorer = Scorer(det, consumer, producer, SETTINGS, metrics)
    asyncio.run(scorer.handle(records))
    return det, producer, consumer, metrics, reg, scorer


def test_vocab_tag_roundtrip() -> None:
    from logad.formats import FORMATS
    from logad.templates import TemplateVocab

    vocab = TemplateVocab.fit(["a b c", "d e f"], FORMATS["hdfs"])
    tag = vocab_tag(vocab)
    assert len(tag) == 16 and vocab.fingerprint().startswith(tag)
    (value,) = encode_windows([window(1)], vocab=tag, hold="unknown")
    assert decode_windows_record(value) == ([window(1)], tag, "unknown")
    (value,) = encode_windows([window(1)], vocab=tag)
    assert decode_windows_record(value) == ([window(1)], tag, "") and b"hold" not in value
    assert decode_windows_record(orjson.dumps({"w": [window_dict(window(1))]})) == ([window(1)], "", "")  # no vocab
    with pytest.raises(CodecError):  # a bare window is no windows record
        decode_windows_record(orjson.dumps(window_dict(window(1))))


def test_scorer_refuses_another_vocab(caplog) -> None:
    """Another bundle's windows (or windows without a fingerprint) are never scored: dead letter
    with reason vocab_mismatch, one per record, a counter, and an ERROR log (rate-limited)."""
    other = encode_windows([window(1), window(2)], vocab="0123456789abcdef")[0]
    records = [rec(0, other), rec(1, orjson.dumps({"w": [window_dict(window(3))]})), rec(2, encode_windows([window(4)], vocab=TAG)[0])]
    with caplog.at_level(logging.ERROR, logger="logad.scorer"):
        det, producer, consumer, metrics, reg, scorer = run(records)
    assert det.calls == [1]  # only the record with the scorer's own fingerprint
    dead = [orjson.loads(v) for t, _, v in producer.sent if t == "D"]
    assert [(d["reason"], d["offset"], d["line"]) for d in dead] == [("vocab_mismatch", 0, None), ("vocab_mismatch", 1, None)]
    assert "0123456789abcdef" in dead[0]["detail"] and "no vocab fingerprint" in dead[1]["detail"]
    assert reg.get_sample_value("logad_scorer_vocab_mismatch_total") == 2
    assert reg.get_sample_value("logad_scorer_dead_letters_total", {"reason": "vocab_mismatch"}) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "same model bundle" in errors[0].getMessage()  # rate-limited: one of two
    scores = [e for t, _, v in producer.sent if t == "S" for e in decode_scores(v)]
    assert [e["subject"] for e in scores] == ["blk_4"] and scorer.mismatches == 2
    ((offsets),) = consumer.commits  # refused records are settled too: committed past
    assert {tp.partition: o for tp, o in offsets.items()} == {0: 3}


def test_scorer_holds_alerts_of_held_windows() -> None:
    """hold on a windows record: every window is scored and published, anomalous ones are counted
    as held instead of alerted; records without hold alert as always."""
    held = encode_windows([window(1), window(2, n=1), window(3)], vocab=TAG, hold="unparsed")[0]
    normal = encode_windows([window(4)], vocab=TAG)[0]
    det, producer, _, _, reg, scorer = run([rec(0, held), rec(1, normal)])
    scores = [e for t, _, v in producer.sent if t == "S" for e in decode_scores(v)]
    assert sorted(e["subject"] for e in scores) == ["blk_1", "blk_2", "blk_3", "blk_4"]
    assert sum(e["data"]["is_anomaly"] for e in scores) == 3
    alerts = [orjson.loads(v) for t, _, v in producer.sent if t == "A"]
    assert [a["subject"] for a in alerts] == ["blk_4"]
    assert reg.get_sample_value("logad_alerts_held_total", {"reason": "unparsed"}) == 2
    assert reg.get_sample_value("logad_scorer_alerts_total") == 1 and scorer.held == 2
