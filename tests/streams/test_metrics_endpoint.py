"""The metrics endpoints serve every logad_ metric the dashboard and README queries use, and JSON logs
are one object per line; no Kafka needed (fakes stand in for the clients)."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import urllib.request
from types import SimpleNamespace

import orjson
from prometheus_client import CollectorRegistry, start_http_server

from logad.config import LoggingConfig, Settings, TopicsConfig
from logad.records import Window
from streams.codec import encode_windows
from streams.ingest import Ingestor, RawRecord
from streams.prometheus import SCORER_METRICS, WORKER_METRICS, ScorerMetrics, WorkerMetrics, set_model_info
from tests.streams.test_stream_units import HDFS, LINES, TAG, FakeConsumer, FakeDetector, FakeProducer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(registry: CollectorRegistry) -> str:
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        return resp.read().decode()


def declared(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_worker_metrics_endpoint_serves_every_metric(tmp_path) -> None:
    from logad.templates import TemplateVocab
    from logad.parse import content_of

    reg = CollectorRegistry()
    m = WorkerMetrics(reg)
    contents = [c for c in (content_of(line, HDFS) for line in LINES[:500]) if c is not None]
    ing = Ingestor(HDFS, TemplateVocab.fit(contents, HDFS), max_record_bytes=1 << 20, max_line_bytes=65536,
                   partitions=4)
    records = [RawRecord("logs.hdfs", 0, i, None, line) for i, line in enumerate(LINES[:2000])]
    records.append(RawRecord("logs.hdfs", 0, 2000, None, b"not a log line"))
    out = ing.process(records)
    m.ingest_batch(len(records), out, 0.01, ing)
    m.sessions({"closed_idle": 3, "closed_evicted": 1, "evicted": 1, "opened": 4})
    m.lag.labels("ingest", "logs.hdfs", "0").set(0)
    m.windows.labels("idle").inc(3)
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"weights": {"sha256": "cd" * 32}}))
    set_model_info(m.model_info, tmp_path, "hdfs", ing.vocab)
    text = serve(reg)
    names = declared(text)
    for name in WORKER_METRICS:
        assert name in names or f"{name}_total" in names or name.removesuffix("_total") in names, name
    assert 'logad_ingest_lines_total{source="hdfs",topic="logs.hdfs"} 2001.0' in text
    assert 'logad_parse_failures_total{reason="unparseable"} 1.0' in text
    assert 'logad_session_closes_total{reason="evicted"} 1.0' in text and "logad_evictions_total 1.0" in text
    assert "logad_unk_line_ratio" in text and 'logad_consumer_lag{partition="0",stage="ingest",topic="logs.hdfs"}' in text


def test_scorer_metrics_endpoint_serves_every_metric() -> None:
    from streams.scorer import Scorer

    reg = CollectorRegistry()
    m = ScorerMetrics(reg)
    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))
    windows = [Window("hdfs", f"blk_{i}", 0, tuple(range(3, 3 + i)), 0, 1.0, 2.0, "idle", True, i) for i in (1, 3)]
    recs = [SimpleNamespace(topic="W", partition=0, offset=i, key=w.session_id.encode(),
                            value=encode_windows([w], vocab=TAG)[0],
                            timestamp=1_700_000_000_000) for i, w in enumerate(windows)]
    (bundle,) = encode_windows([Window("hdfs", f"blk_b{i}", 0, (3, 4), 0, 1.0, 2.0, "idle", True, 2) for i in (1, 2)],
                              vocab=TAG)
    recs.append(SimpleNamespace(topic="W", partition=0, offset=2, key=None, value=bundle, timestamp=1_700_000_000_000))
    scorer = Scorer(FakeDetector(set()), FakeConsumer(), FakeProducer(), settings, m)
    asyncio.run(scorer.handle(recs))
    m.lag.labels("scorer", "W", "0").set(0)
    m.model_info.labels("m-0123456789ab", "hdfs", TAG, "0123456789ab").set(1)
    text = serve(reg)
    names = declared(text)
    for name in SCORER_METRICS:
        assert name in names or f"{name}_total" in names or name.removesuffix("_total") in names, name
    assert "logad_scorer_windows_total 4.0" in text and "logad_scorer_alerts_total 1.0" in text
    assert "logad_scoring_latency_seconds_count 3.0" in text  # one observation per windows record (a bundle: one)


def test_model_info_names_the_running_bundle(tmp_path) -> None:
    """logad_model_info{version, source, vocab, weights} 1: one series, the bundle's, from its manifest."""
    import json

    from logad.templates import TemplateVocab
    from logad.parse import content_of
    from streams.codec import vocab_tag

    vocab = TemplateVocab.fit([c for c in (content_of(line, HDFS) for line in LINES[:200]) if c], HDFS)
    (tmp_path / "mymodel").mkdir()
    (tmp_path / "mymodel/manifest.json").write_text(json.dumps({"weights": {"sha256": "ab" * 32}}))
    reg = CollectorRegistry()
    m = WorkerMetrics(reg)
    labels = set_model_info(m.model_info, tmp_path / "mymodel", "hdfs", vocab)
    assert labels == {"version": "mymodel-" + "ab" * 6, "source": "hdfs", "vocab": vocab_tag(vocab), "weights": "ab" * 6}
    set_model_info(m.model_info, tmp_path / "mymodel", "hdfs", vocab, version="given")  # the scorer's Detector.version
    text = serve(reg)
    lines = [line for line in text.splitlines() if line.startswith("logad_model_info{")]
    assert lines == [f'logad_model_info{{source="hdfs",version="given",vocab="{vocab_tag(vocab)}",'
                     f'weights="{"ab" * 6}"}} 1.0'], lines


def test_json_logs_are_one_object_per_line(monkeypatch) -> None:
    from streams.worker import setup_logging

    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    try:
        setup_logging(LoggingConfig(level="INFO", json=True))
        logging.getLogger("logad.test").info("hello %s", "world", extra={"session": "blk_1"})
    finally:
        root.handlers[:] = old_handlers
        root.setLevel(old_level)
    doc = orjson.loads(buf.getvalue().strip().splitlines()[-1])
    assert doc["msg"] == "hello world" and doc["level"] == "INFO" and doc["logger"] == "logad.test"
    assert doc["session"] == "blk_1"  # `extra` fields travel as keys


def test_dashboard_queries_only_served_metrics() -> None:
    import json
    import re
    from pathlib import Path

    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana-dashboard.json").read_text())
    names = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"logad_\w+", t["expr"])}
    known = set(WORKER_METRICS) | set(SCORER_METRICS)
    for n in names:
        base = re.sub(r"_(total|bucket|count|sum)$", "", n)
        assert base in known, n
    assert len(dash["panels"]) >= 12
    # every series is named in the legend (a person reading the panel sees what each line is)
    assert all(t.get("legendFormat") for p in dash["panels"] for t in p["targets"])
    assert all(p["options"]["legend"]["showLegend"] for p in dash["panels"])
