"""`logad replay FILE --topic logs.hdfs`: publish a log file's lines, in order, to a raw topic.

    file lines (gzip ok) -> [--lines-per-record N: newline-joined groups] -> raw topic, one partition
Pacing: --max (as fast as the broker takes them), --rate N (lines per second), or --speed K (the
format's timestamps, K times faster than they happened). Every record goes to ONE partition
(--partition, default 0): Kafka orders only within a partition, and the lines of a session must
arrive in file order (see streams/topics.py). Keys are left empty: they carry no meaning for raw lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logad.config import Settings
from logad.errors import ConfigError
from logad.formats import LogFormat
from logad.parse import open_lines


@dataclass(frozen=True)
class Pace:
    rate: float | None = None  # lines per second
    speed: float | None = None  # event-time speed-up factor
    # neither: as fast as possible

    def __post_init__(self) -> None:
        if self.rate is not None and self.speed is not None:
            raise ConfigError("choose one of --rate, --speed, --max")
        if (self.rate is not None and self.rate <= 0) or (self.speed is not None and self.speed <= 0):
            raise ConfigError("--rate and --speed must be > 0")


def records(path: str | Path, lines_per_record: int, max_line_bytes: int = 1 << 20) -> Iterator[tuple[bytes, int, bytes]]:
    """(value, number of lines, first line) per record, in file order."""
    if lines_per_record < 1:
        raise ConfigError("--lines-per-record must be >= 1")
    group: list[bytes] = []
    for line in open_lines(path, max_line_bytes):
        group.append(line.rstrip(b"\n"))
        if len(group) == lines_per_record:
            yield b"\n".join(group), len(group), group[0]
            group = []
    if group:
        yield b"\n".join(group), len(group), group[0]


def _event_time(line: bytes, fmt: LogFormat) -> float | None:
    m = fmt.header_re.match(line.decode("utf-8", "replace"))
    if m is None:
        return None
    ts = fmt.header_fields(m)[0]
    return fmt.parse_timestamp(ts) if ts else None


async def replay(settings: Settings, path: str | Path, topic: str, pace: Pace, *, lines_per_record: int = 1,
                 partition: int = 0, fmt: LogFormat | None = None, progress: bool = True) -> dict[str, float]:
    """Publish the file; returns {"records", "lines", "seconds", "lines_per_s"} once all are acknowledged."""
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    from streams.kafka_clients import check_broker, producer_kwargs
    from streams.topics import RAW_MAX_MESSAGE_BYTES, create_topics

    if pace.speed is not None and fmt is None:
        raise ConfigError("--speed needs the log format (--format) to read timestamps")
    await check_broker(settings.kafka)
    await create_topics(settings, raw_topics=[topic])
    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka, linger_ms=10, max_batch_size=256 * 1024,
                                                  max_request_size=RAW_MAX_MESSAGE_BYTES))
    await producer.start()
    n_records = n_lines = 0
    bar = tqdm(unit=" lines", disable=not progress, mininterval=0.5, smoothing=0.1)
    t0 = time.perf_counter()
    first_ts: float | None = None
    pending: list[asyncio.Future] = []
    try:
        for value, n, first in records(path, lines_per_record):
            if pace.rate is not None:
                delay = t0 + n_lines / pace.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif pace.speed is not None:
                ts = _event_time(first, fmt)  # type: ignore[arg-type]
                if ts is not None:
                    first_ts = ts if first_ts is None else first_ts
                    delay = t0 + (ts - first_ts) / pace.speed - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, partition=partition))
            n_records += 1
            n_lines += n
            bar.update(n)
            if len(pending) >= 10_000:  # bound memory; keeps the order (one partition, idempotent)
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    seconds = time.perf_counter() - t0
    return {"records": n_records, "lines": n_lines, "seconds": round(seconds, 3),
            "lines_per_s": round(n_lines / seconds, 1) if seconds > 0 else 0.0}
