"""Evidence for the stream's alerts: the raw lines behind an alert, read back from the raw topic.

    alert (WindowScore) + its window's packed raw positions (streams/positions.py, on the windows wire)
      -> pick up to scorer.evidence_lines events: the most surprising first, then the last scored
         ones (as logad.detect_files.evidence_at picks them offline)
      -> RawReader: one consumer without a group, assign + seek to each record's offset, bounded
         in time (alerts are rare: a few records per alert, never a scan)
      -> the record's lines (split as the worker's ingest splits them; for a multi-line format the
         entry that starts at the line, continuation lines joined with "\\n")
      -> [{"index": event index in the session, "position": {"topic", "partition", "offset", "line"},
           "line": raw text verbatim}, ...]   (logad.alerts.make_event's `evidence`)
A record that is gone (compacted, expired, past the time bound) or a position list that does not
decode leaves its items out: evidence never holds an alert back or fails it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from logad.alerts import evidence_indexes
from logad.formats import LogFormat
from logad.readers import entries
from logad.records import WindowScore
from streams.codec import split_position
from streams.positions import unpack

log = logging.getLogger("logad.scorer")

Where = tuple[str, int, int]  # (topic, partition, offset) of a raw record
Fetch = Callable[[set[Where]], Awaitable[dict[Where, bytes]]]
FETCH_TIMEOUT_S = 3.0  # longest one batch's alerts wait for their raw records


def pick(ws: WindowScore, positions: Sequence[tuple[str, int]], limit: int) -> list[tuple[int, str, int]]:
    """(event index in the session, raw partition, position) of up to `limit` events of an alert
    (logad.alerts.evidence_indexes picks them). `positions`: of the window's scored events, in
    order (events start + n_context .. end - 1)."""
    first = ws.window.end - len(positions)
    return [(i, *positions[i - first]) for i in evidence_indexes(ws, limit, first)]


def line_of(value: bytes, line: int, fmt: LogFormat) -> str | None:
    """The raw text at line `line` of a raw record (the entry starting there for a multi-line
    format), as the worker's ingest splits records; None when the record has no such line."""
    lines = value.split(b"\n")
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    if fmt.multiline:
        for entry, i, _n in entries(lines, fmt):
            if i == line:
                text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else entry
                return text.rstrip("\r\n")
            if i > line:
                return None
        return None
    if not 0 <= line < len(lines):
        return None
    return lines[line].decode("utf-8", "replace").rstrip("\r\n")


class Quoter:
    """Builds the evidence of a batch's alerts with one fetch of the raw records they need."""

    def __init__(self, fetch: Fetch, fmt: LogFormat, limit: int) -> None:
        self.fetch = fetch
        self.fmt = fmt
        self.limit = limit
        self.quoted = 0  # evidence lines attached
        self.missing = 0  # lines left out: record gone or unreadable

    async def quote(self, alerts: Sequence[tuple[WindowScore, Any]]) -> list[list[dict]]:
        """Per (alert, its window's packed positions | None): its evidence items."""
        picks: list[list[tuple[int, str, int]]] = []
        for ws, packed in alerts:
            try:
                picks.append(pick(ws, unpack(packed), self.limit) if packed else [])
            except ValueError as e:  # a malformed position list: the alert goes without evidence
                log.warning("alert of session %s: raw positions unreadable (%s); sent without evidence",
                            ws.window.session_id, e)
                picks.append([])
        wanted: set[Where] = set()
        for items in picks:
            for _, rp, pos in items:
                topic, _, part = rp.rpartition("/")
                if topic and part.isdigit():
                    wanted.add((topic, int(part), split_position(pos)[0]))
        records: dict[Where, bytes] = {}
        if wanted:
            try:
                records = await self.fetch(wanted)
            except Exception as e:  # noqa: BLE001 (evidence never fails an alert)
                log.warning("raw records for alert evidence not read (%s: %s); alerts sent without it",
                            type(e).__name__, e)
        out = []
        for items in picks:
            ev = []
            for i, rp, pos in items:
                topic, _, part = rp.rpartition("/")
                offset, line = split_position(pos)
                value = records.get((topic, int(part), offset)) if part.isdigit() else None
                text = line_of(value, line, self.fmt) if value is not None else None
                if text is None:
                    self.missing += 1
                    continue
                ev.append({"index": i, "position": {"topic": topic, "partition": int(part), "offset": offset,
                                                     "line": line}, "line": text})
            self.quoted += len(ev)
            out.append(ev)
        return out


class RawReader:
    """Raw records by (topic, partition, offset): a consumer without a group (assign + seek), started
    on first use. A record not there (compacted away, expired, beyond the time bound) is absent
    from the answer."""

    def __init__(self, kafka: Any, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.consumer: Any = None

    async def __call__(self, wanted: set[Where]) -> dict[Where, bytes]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka_clients import consumer_kwargs

        if self.consumer is None:
            c = AIOKafkaConsumer(**consumer_kwargs(self.kafka, group_id=None, enable_auto_commit=False,
                                                   auto_offset_reset="earliest"))
            await c.start()
            self.consumer = c
        c = self.consumer
        by_tp: dict[Any, list[int]] = {}
        for topic, part, offset in wanted:
            by_tp.setdefault(TopicPartition(topic, part), []).append(offset)
        c.assign(list(by_tp))
        try:
            return await self._read(c, by_tp, wanted)
        finally:  # paused until the next call assigns again: the consumer would otherwise go on
            c.pause(*by_tp)  # prefetching raw records past the last one wanted, for nobody

    async def _read(self, c: Any, by_tp: dict[Any, list[int]], wanted: set[Where]) -> dict[Where, bytes]:
        out: dict[Where, bytes] = {}
        deadline = time.monotonic() + self.timeout_s
        for tp, offsets in by_tp.items():
            todo = sorted(set(offsets))
            k = 0
            while k < len(todo) and time.monotonic() < deadline:
                c.seek(tp, todo[k])
                left = deadline - time.monotonic()
                batch = await c.getmany(tp, timeout_ms=max(1, int(min(left, 1.0) * 1000)), max_records=500)
                recs = batch.get(tp, [])
                if not recs:
                    if time.monotonic() >= deadline:
                        break
                    continue  # nothing yet (a fresh fetch): try again within the bound
                for r in recs:  # the fetch may hold later wanted offsets too
                    if (tp.topic, tp.partition, r.offset) in wanted and r.value is not None:
                        out[(tp.topic, tp.partition, r.offset)] = r.value
                last = recs[-1].offset
                while k < len(todo) and todo[k] <= last:  # at or before what came back: found or gone
                    k += 1
        return out

    async def stop(self) -> None:
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.consumer.stop(), 5.0)
            except Exception as e:  # noqa: BLE001 (shutting down)
                log.debug("evidence consumer stop: %s", e)
            self.consumer = None
