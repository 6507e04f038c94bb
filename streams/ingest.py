"""Ingest: raw log records -> templated events, one record per session per batch; bad input -> dead letter.

    raw records (bytes: one line or newline-separated lines), consumed in batches
      -> split lines -> logad.parse.parse_line -> LogRecord | Rejected          (Rejected -> dead letter)
      -> TemplateVocab.match(content) -> template id (UNK when nothing matches; UNK -> DriftMiner)
      -> per (raw partition, session id): [[tid, ts, pos], ...] in arrival order
      -> events topic: ONE record per session per batch, key = session id

These are exactly the steps of logad.detect.windows_from_lines, so the stream decides like
`logad detect`. `Ingestor.process` is pure (no Kafka): the unit tests call it directly.

Why a batched aiokafka consumer inside a Faust service and not a Faust agent: measured on this
2-core box against the local broker, 16,252 one-line raw records: a Faust agent with
`stream.take(2000, within=0.2)` consumed 4.0k records/s, `AIOKafkaConsumer.getmany(max_records=2000)`
175k records/s. Faust's cost is per record, and the raw topic has one record per line. The events
topic has one record per session per batch (far fewer), so the session agent stays a Faust agent.
At-least-once: offsets are committed only after every events / dead-letter record of the batch is
acknowledged; a crash re-reads the batch, and the session agent drops the re-delivered events by
their raw positions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from logad.formats import LogFormat
from logad.parse import ParseStats, parse_line
from logad.records import LogRecord
from logad.templates import UNK, DriftMiner, TemplateVocab
from streams.codec import MAX_LINES_PER_RECORD, encode_dead_letter, encode_events, position

log = logging.getLogger("logad.ingest")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What ingest needs of a consumed raw record (an aiokafka ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class IngestOutput:
    events: list[tuple[bytes, bytes]] = field(default_factory=list)  # (session id, events record)
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (raw key, dead-letter record)
    lines: int = 0


class Ingestor:
    """Parse, template and coalesce raw records; pure and synchronous (one per worker, not thread-safe)."""

    def __init__(self, fmt: LogFormat, vocab: TemplateVocab, *, max_record_bytes: int, max_line_bytes: int,
                 drift: DriftMiner | None = None) -> None:
        self.fmt = fmt
        self.vocab = vocab
        self.max_record_bytes = max_record_bytes
        self.max_line_bytes = max_line_bytes
        self.drift = drift
        self.stats = ParseStats()  # per line, as `logad detect` reports them
        self.counters: Counter[str] = Counter()  # records, events, unk, non_utf8, dead_<reason>

    def _dead(self, out: IngestOutput, r: RawRecord, reason: str, value: bytes | None, line: int | None = None,
              detail: str = "") -> None:
        self.counters[f"dead_{reason}"] += 1
        out.dead.append((r.key, encode_dead_letter(reason, r.topic, r.partition, r.offset, value, line, detail)))

    def process(self, records: Iterable[RawRecord]) -> IngestOutput:
        """A batch of raw records -> one events record per (raw partition, session) + dead letters."""
        out = IngestOutput()
        sessions: dict[tuple[str, str], list[list[Any]]] = {}  # (raw partition, session) -> [[tid, ts, pos]]
        fmt, match, src = self.fmt, self.vocab.match, self.fmt.name
        for r in records:
            try:
                self._record(r, out, sessions, fmt, match)
            except Exception as e:  # a bug or an input we did not foresee: never lose the record silently
                self._dead(out, r, "error", r.value, detail=f"{type(e).__name__}: {e}")
                n = self.counters["dead_error"]
                if n <= 5 or n % 1000 == 0:  # bounded logs when every record fails the same way
                    log.exception("ingest failed on %s/%d@%d (%d records so far)", r.topic, r.partition, r.offset, n)
        for (rp, sid), rows in sessions.items():
            out.events.append((sid.encode(), encode_events(src, rp, rows)))
        self.counters["events_records"] += len(out.events)
        return out

    def _record(self, r: RawRecord, out: IngestOutput, sessions: dict, fmt: LogFormat, match: Any) -> None:
        self.counters["records"] += 1
        value = r.value
        if not value:
            self._dead(out, r, "empty", value)
            return
        if len(value) > self.max_record_bytes:
            self._dead(out, r, "too_large", value, detail=f"{len(value)} bytes > ingest.max_record_bytes "
                                                          f"{self.max_record_bytes}")
            return
        lines = value.split(b"\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # "a\nb\n": the final newline ends a line, it does not start one
        if len(lines) > MAX_LINES_PER_RECORD:
            self._dead(out, r, "too_many_lines", value, detail=f"{len(lines)} lines > {MAX_LINES_PER_RECORD}")
            return
        rp = f"{r.topic}/{r.partition}"
        for i, line in enumerate(lines):
            out.lines += 1
            if not line.isascii():
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    self.counters["non_utf8"] += 1  # parsed anyway, with U+FFFD (as `logad detect` does)
            rec = parse_line(line, fmt, self.max_line_bytes)
            self.stats.add(rec)
            if not isinstance(rec, LogRecord):
                self._dead(out, r, rec.reason, line, line=i, detail=rec.detail)
                continue
            tid = match(rec.content)
            if tid == UNK:
                self.counters["unk"] += 1
                if self.drift is not None:
                    self.drift.observe(rec.content)
            pos = position(r.offset, i)
            for key in rec.session_keys:
                rows = sessions.get((rp, key))
                if rows is None:
                    rows = sessions[(rp, key)] = []
                rows.append([tid, rec.timestamp, pos])
                self.counters["events"] += 1


class IngestLoop:
    """The raw-topic consumer of a worker: getmany -> Ingestor.process -> produce -> commit.

    `caught_up()` tells the session timer whether every raw record that exists has been turned into
    acknowledged events (idle sessions are only closed then; see streams/sessionize.py).
    """

    def __init__(self, *, ingestor: Ingestor, consumer: Any, producer: Any, events_topic: str,
                 dead_letter_topic: str, batch_size: int, within_s: float, drift_every_s: float,
                 metrics: Any = None) -> None:
        self.ingestor = ingestor
        self.consumer = consumer
        self.producer = producer
        self.events_topic = events_topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.within_ms = max(1, int(within_s * 1000))
        self.drift_every_s = drift_every_s
        self.metrics = metrics
        self.busy = False  # a batch is between fetch and commit
        self.produced_end: dict[int, int] = {}  # events partition -> next offset after our last produce
        self._idle_polls = 0
        self._stopping = False
        self._next_drift = time.monotonic() + drift_every_s

    async def caught_up(self) -> bool:
        """No batch in flight, the last poll found nothing, and every assigned raw partition is read
        (and, since batches commit before `busy` clears, committed) up to its high-water mark."""
        if self.busy or self._idle_polls == 0:
            return False
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            hw = self.consumer.highwater(tp)
            if hw is None or await self.consumer.position(tp) < hw:
                return False
        return True

    async def run(self) -> None:
        while not self._stopping:
            await self.step()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let the batch in flight finish (so its offsets are committed), then end run()."""
        self._stopping = True
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def step(self) -> int:
        """One poll; returns the number of raw records handled."""
        batch = await self.consumer.getmany(timeout_ms=self.within_ms, max_records=self.batch_size)
        records = [r for recs in batch.values() for r in recs]
        if not records:
            self._idle_polls += 1
            self._maybe_report_drift()
            return 0
        self._idle_polls = 0
        self.busy = True
        try:
            t0 = time.perf_counter()
            out = self.ingestor.process(RawRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in records)
            futures = [await self.producer.send(self.events_topic, key=k, value=v) for k, v in out.events]
            futures += [await self.producer.send(self.dead_letter_topic, key=k, value=v) for k, v in out.dead]
            for md in await asyncio.gather(*futures):  # every record acknowledged before the commit
                if md.topic == self.events_topic:
                    self.produced_end[md.partition] = max(self.produced_end.get(md.partition, 0), md.offset + 1)
            await self.consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs})
            if self.metrics is not None:
                self.metrics.ingest_batch(len(records), out, time.perf_counter() - t0, self.ingestor)
        finally:
            self.busy = False
        self._maybe_report_drift()
        return len(records)

    def _maybe_report_drift(self) -> None:
        drift = self.ingestor.drift
        if drift is None or time.monotonic() < self._next_drift:
            return
        self._next_drift = time.monotonic() + self.drift_every_s
        s = drift.summary(top=5)
        if s["lines"]:
            log.info("drift: %d UNK lines, %d new templates; top: %s", s["lines"], s["templates"],
                     "; ".join(f"{t['count']}x {t['template'][:80]}" for t in s["top"]))
        if self.metrics is not None:
            self.metrics.drift(s)
