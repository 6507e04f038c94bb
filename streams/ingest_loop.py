"""The raw-topic consumer of a worker: aiokafka batches -> Ingestor.process -> produce -> commit.

    getmany (up to ingest.batch_size records) -> chunks of ~CHUNK_BYTES -> Ingestor.process per chunk
      -> events bundles + dead letters produced -> every one acknowledged -> ONE commit per batch
At-least-once: a crash re-reads the uncommitted batch; the session agent drops re-delivered events
by their raw positions (streams/session_processor.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError

from streams.ingest import Ingestor, RawRecord

log = logging.getLogger("logad.ingest")


CHUNK_BYTES = 1 << 20  # raw bytes parsed per chunk of a batch (~8k HDFS lines)


def chunked(records: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive runs of records of at most `limit` value bytes (at least one record each)."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    size = 0
    for r in records:
        n = len(r.value or b"")
        if cur and size + n > limit:
            out.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += n
    if cur:
        out.append(cur)
    return out


class IngestLoop:
    """The raw-topic consumer of a worker: getmany -> Ingestor.process -> produce -> commit.

    `caught_up()` tells the session timer whether every raw record that exists has been turned into
    acknowledged events (idle sessions are only closed then; see streams/session_processor.py).
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
        self.committed: dict[Any, int] = {}  # raw partition -> offset this loop last committed
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
            end = self._end(tp)
            if end is None or await self.consumer.position(tp) < end:
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
        now = time.time()
        if not records:
            self._idle_polls += 1
            await self._commit_markers()  # local look-ups; a commit only when a position moved
            self._maybe_report_drift()
            return 0
        self._idle_polls = 0
        self.busy = True
        try:
            t0 = time.perf_counter()
            clocks = {}  # raw partitions read to their end: nothing unread, the clock is the wall time
            for tp, recs in batch.items():
                end = self._end(tp)
                if recs and end is not None and recs[-1].offset + 1 >= end:
                    clocks[self.ingestor.rp_name(tp.topic, tp.partition)] = now
            # Chunks of ~CHUNK_BYTES: the bundles of a chunk go out (and the session agent, on this
            # event loop, can take them) while the next chunk is parsed. One commit for the batch.
            chunks = chunked(records, CHUNK_BYTES)
            futures = []
            outs = []
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                out = self.ingestor.process((RawRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                                             for r in chunk), clocks if last else None, now)
                outs.append((len(chunk), out))
                futures += [await self.producer.send(self.events_topic, value=v, partition=p) for p, v in out.bundles]
                futures += [await self.producer.send(self.dead_letter_topic, key=k, value=v) for k, v in out.dead]
                if not last:
                    await asyncio.sleep(0)
            for md in await asyncio.gather(*futures):  # every record acknowledged before the commit
                if md.topic == self.events_topic:
                    self.produced_end[md.partition] = max(self.produced_end.get(md.partition, 0), md.offset + 1)
            done = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
            try:
                await self.consumer.commit(done)
                self.committed.update(done)
            except (CommitFailedError, RebalanceInProgressError) as e:
                # The group rebalanced while this batch was in flight (a worker joined or left): its
                # events are acknowledged, only the commit is lost. The partitions' next owner re-reads
                # the batch and the session agents drop its events by their raw positions.
                log.warning("raw batch done but not committed (the ingest group rebalanced): %s", type(e).__name__)
            if self.metrics is not None:
                seconds = time.perf_counter() - t0
                for n, out in outs:
                    self.metrics.ingest_batch(n, out, seconds / len(outs), self.ingestor)
        finally:
            self.busy = False
        self._maybe_report_drift()
        return len(records)

    async def _commit_markers(self) -> None:
        """Commit positions that moved past records without a line: a transactional producer ends
        each transaction with a marker the consumer skips, so a batch's last offset + 1 stays one
        short of the partition's end and no worker would ever see the raw topic committed to its end
        (streams.app.raw_ingested: idle sessions would not close on the wall clock)."""
        try:
            ahead = {}
            for tp in self.consumer.assignment():
                if tp not in self.committed:  # since this worker holds it: the group's (one round trip)
                    self.committed[tp] = await self.consumer.committed(tp) or 0
                pos = await self.consumer.position(tp)
                if pos > self.committed[tp]:
                    ahead[tp] = pos
            if ahead:
                await self.consumer.commit(ahead)
                self.committed.update(ahead)
        except (KafkaError, AssertionError) as e:  # a rebalance or a broker hiccup: the next idle poll tries again
            log.debug("positions past transaction markers not committed: %s", type(e).__name__)

    def _end(self, tp: Any) -> int | None:
        """The readable end of a raw partition from the last fetch: the high-water mark, or under
        read_committed the last stable offset (an open transaction is not readable yet)."""
        try:
            end = self.consumer.highwater(tp)
            lso = getattr(self.consumer, "last_stable_offset", lambda _: None)(tp)
        except AssertionError:  # not assigned any more (rebalance)
            return None
        return lso if lso is not None and lso >= 0 else end

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
