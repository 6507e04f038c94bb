"""Raw logs written by a transactional producer (real broker; worker and scorer as processes).

Each transaction ends with a marker the consumer skips, so the last record's offset + 1 is one short
of the partition's end. The worker must still count the raw topic as ingested to its end, close the
last idle sessions on the wall clock and score every window: the same alerts as `logad detect`.
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.reliability.harness import MODEL, RAW, Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def produce_in_transactions(bootstrap: str, topic: str, lines: list[bytes], per_txn: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-shipper",
                                enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(0, len(lines), per_txn):
            async with producer.transaction():
                for line in lines[i:i + per_txn]:
                    await producer.send(topic, value=line, partition=0)
    finally:
        await producer.stop()


def test_transactional_raw_topic_drains_with_every_session_closed(kafka_bootstrap: str, tmp_path: Path) -> None:
    from logad.detect_files import detect_paths

    with gzip.open(RAW, "rb") as f:
        lines = [line.rstrip(b"\n") for _, line in zip(range(3000), f)]
    log = tmp_path / "head.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    offline = detect_paths([log], MODEL, out=tmp_path / "offline.jsonl", evidence=0)
    expected = {orjson.loads(x)["id"] for x in (tmp_path / "offline.jsonl").read_bytes().splitlines()}

    p = Pipeline(kafka_bootstrap, tmp_path)
    try:
        p.start()
        asyncio.run(produce_in_transactions(kafka_bootstrap, p.raw, lines, per_txn=1000))
        p.wait_drained(timeout=90)
        scored = p.read_metrics("scorer").get("logad_scorer_windows_total", 0.0)
        got = {orjson.loads(r.value)["id"] for r in p.read(p.settings.topics.alerts)}
    finally:
        p.stop()
    assert scored == offline["windows"]
    assert got == expected
