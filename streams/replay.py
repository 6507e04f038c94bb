"""`logad replay FILE`: publish a log file's lines, in order, to the raw topic of its format.

    file lines (gzip ok) -> [--lines-per-record N: newline-joined groups] -> raw topic, one partition
A multi-line format's records hold whole entries (a header line and its continuation lines): the
ingest joins continuation lines only within a record, so an entry is never split across records.
Pacing: --max (as fast as the broker takes them), --rate N (lines per second), or --speed K (the
format's timestamps, K times faster than they happened). Every record goes to ONE partition
(--partition, default 0): Kafka orders only within a partition, and the lines of a session must
arrive in file order (see streams/topics.py). The record key is the lines' origin for formats that
name sessions from it (session_from_path, session_window_s: the file path, as `logad detect` sees
it, unless --key); other formats leave it empty.
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
from logad.parse import open_lines, parse_fields
from logad.records import Rejected

ORIGIN_RULES = ("session_from_path", "session_window_s")  # formats whose sessions are named from the key


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


def records(path: str | Path, lines_per_record: int, max_line_bytes: int = 1 << 20, fmt: LogFormat | None = None
            ) -> Iterator[tuple[bytes, int, bytes]]:
    """(value, number of lines, first line) per record, in file order. With a multi-line `fmt`, a
    record holds whole entries: entries are added while it has fewer than `lines_per_record` lines
    (an entry longer than that is a record of its own)."""
    if lines_per_record < 1:
        raise ConfigError("--lines-per-record must be >= 1")
    lines = (line.rstrip(b"\n") for line in open_lines(path, max_line_bytes))
    units = _entries(lines, fmt) if fmt is not None and fmt.multiline else ([line] for line in lines)
    group: list[bytes] = []
    for unit in units:
        if group and len(group) + len(unit) > lines_per_record:
            yield b"\n".join(group), len(group), group[0]
            group = []
        group += unit
        if len(group) >= lines_per_record:
            yield b"\n".join(group), len(group), group[0]
            group = []
    if group:
        yield b"\n".join(group), len(group), group[0]


def _entries(lines: Iterator[bytes], fmt: LogFormat) -> Iterator[list[bytes]]:
    """The lines of each entry: a line the header matches starts one (as logad.readers.entries
    decides; here nothing is capped or joined, the ingest does that)."""
    match = fmt.header_re.match
    entry: list[bytes] = []
    for line in lines:
        if entry and match(line.decode("utf-8", "replace").rstrip("\r")) is not None:
            yield entry
            entry = []
        entry.append(line)
    if entry:
        yield entry


def default_key(path: str | Path, fmt: LogFormat | None) -> bytes | None:
    """The record key of a replayed file: its path for formats that name sessions from the origin."""
    return str(path).encode() if fmt is not None and fmt.session_rule in ORIGIN_RULES else None


def _event_time(line: bytes, fmt: LogFormat, origin: str = "") -> float | None:
    if fmt.full_header:
        m = fmt.header_re.match(line.decode("utf-8", "replace"))
        if m is None:
            return None
        ts = fmt.header_fields(m)[0]
        return fmt.parse_timestamp(ts) if ts else None
    f = parse_fields(line, fmt, origin=origin)
    return None if type(f) is Rejected else f[0]  # type: ignore[index]


async def replay(settings: Settings, path: str | Path, topic: str, pace: Pace, *, lines_per_record: int = 1,
                 partition: int = 0, fmt: LogFormat | None = None, key: bytes | None = None,
                 progress: bool = True) -> dict[str, float]:
    """Publish the file (records keyed `key`); returns {"records", "lines", "seconds", "lines_per_s"}
    once all are acknowledged."""
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
        origin = key.decode("utf-8", "replace") if key else ""
        for value, n, first in records(path, lines_per_record, fmt=fmt):
            if pace.rate is not None:
                delay = t0 + n_lines / pace.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif pace.speed is not None:
                ts = _event_time(first, fmt, origin)  # type: ignore[arg-type]
                if ts is not None:
                    first_ts = ts if first_ts is None else first_ts
                    delay = t0 + (ts - first_ts) / pace.speed - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
            pending.append(await producer.send(topic, key=key, value=value, partition=partition))
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
