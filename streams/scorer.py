"""`logad scorer`: windows topic -> dynamic batches -> Detector.score_windows -> scores + alerts topics.

    windows records (bundles of windows, streams/codec.py)  --consumer task, getmany, decode-->
      bounded queue of decoded records (WindowQueue: ~queue_size windows; one entry per record)
      --batcher: the first waiting windows + whatever arrives within max_wait_ms, up to max_batch-->
      Detector.score_windows(batch, details=True)   (in a thread when the model must run: the event
         loop keeps fetching; a batch the score cache answers whole is scored inline)
      -> scores topic: ONE bundle record per partition per batch (every score of the batch; a normal
         window's without its surprising events unless scorer.score_details)
      -> alerts topic: one record per anomaly (logad.alerts.make_event, key session id: users subscribe),
         quoting up to scorer.evidence_lines raw lines read back from the raw topic at the positions
         its window carries (streams/evidence.py; a record gone from the raw topic is left out),
         except for windows the worker marked held (its input guard found the input does not fit
         the bundle, streams/guard.py): their scores go out, their alerts are counted as held
      -> windows records of another vocab (fingerprint none of the scorer's bundles has, after a look
         at model_dir for a new one): dead letter "vocab_mismatch", never scored
    model_dir and the feedback file are watched (streams/rollout.py, scorer.reload_every_s): a new
    bundle is loaded in a thread and swapped in between two batches, the previous one kept for
    windows records still stamped with its vocab; new feedback is applied between two batches
      -> offsets committed only after every produce is acknowledged   (at-least-once; a bundle's
         offset is committed past only once its LAST window is settled)

A plain aiokafka consumer group, not Faust: the scorer is stateless, and batching plus a commit
after the acks is simpler to get right by hand. Re-delivered windows give the same alert ids
(logad.alerts.alert_id), so consumers dedupe. A batch that fails to score is retried window by
window; a window that still fails goes to the dead-letter topic with the reason. A window that
cannot be decoded goes there too. Scaling out = more scorer processes in the same group (up to
topics.partitions). The process around it (Kafka clients, metrics server, watching): streams/scorer_process.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from logad.alerts import ce_headers, iso_time
from logad.config import ScorerConfig, Settings
from logad.pending import score_with_pending
from logad.records import Window, WindowScore
from logad.windows import PROBE
from streams.codec import encode_dead_letter, encode_scores
from streams.early import EarlyGate
from streams.kafka_clients import key_partitions, send_batched
from streams.rollout import Model, Models, model_of
from streams.window_queue import Outcome, WindowQueue, unpack, unpack_record

log = logging.getLogger("logad.scorer")

MAX_IN_FLIGHT = 8  # batches scored and sent whose acks (and commit) are still pending
FORWARD_BATCH = 64  # windows per model forward pass (see run_scorer)


MAX_SCORES_BYTES = 512 * 1024  # a scores bundle record stays below this (topics take 1 MiB records)
MISMATCH_LOG_EVERY_S = 30.0  # vocab mismatches are logged at most this often (each one is counted)
SETTLE_EVERY_S = 1.0  # an unknown vocab makes the scorer look for a new bundle at most this often


def score_batch(detector: Any, windows: list[Window]) -> list[WindowScore | Exception]:
    """Score a batch; on failure, score each window alone so one bad window cannot sink the rest."""
    try:
        return list(score_with_pending(detector, getattr(detector, "pending", None), windows, details=True))
    except Exception as e:
        log.warning("batch of %d windows failed (%s: %s); retrying one by one", len(windows), type(e).__name__, e)
    out: list[WindowScore | Exception] = []
    for w in windows:
        try:
            out.append(score_with_pending(detector, getattr(detector, "pending", None), [w], details=True)[0])
        except Exception as e:  # noqa: PERF203 (rare path)
            out.append(e)
    return out


class Scorer:
    def __init__(self, detector: Any, consumer: Any, producer: Any, settings: Settings, metrics: Any = None,
                 identity: str = "") -> None:
        self.models = Models(model_of(detector, identity))  # vocab fingerprint -> bundle (streams/rollout.py)
        self.consumer = consumer
        self.producer = producer
        self.cfg: ScorerConfig = settings.scorer
        self.topics = settings.topics
        self.metrics = metrics
        self.queue = WindowQueue(self.cfg.queue_size)
        self.held = 0  # anomalous windows not alerted: the worker's input guard held them
        self.mismatches = 0  # windows records refused for their vocab fingerprint
        self._mismatch_logged = float("-inf")
        self.scored = 0
        self.alerts = 0
        self.early = EarlyGate()  # probes (scorer.early_alerts) -> at most one early alert per open session
        self.quoter: Any = None  # streams.evidence.Quoter: alerts quote their raw lines (serve() sets it)
        self._last: asyncio.Task | None = None  # the latest batch's ack-and-commit task
        self._to_commit: dict[Any, int] = {}  # settled offsets not committed yet
        self._committer: asyncio.Task | None = None
        self.watcher: Any = None  # streams.rollout.Watcher (serve() sets it when scorer.reload_every_s > 0)
        self._busy = asyncio.Lock()  # held while a batch is scored and sent: bundles change between batches
        self._settled = float("-inf")

    @property
    def det(self) -> Any:
        """The running (newest) bundle's Detector."""
        return self.models.current.detector

    async def swap(self, model: Model) -> None:
        """`model` scores every window of its vocab from the next batch on (streams/rollout.py).
        ArtifactError (its format file does not match its manifest) before anything changed."""
        fmt = None
        if self.quoter is not None:
            from logad.artifacts import bundle_format

            fmt = bundle_format(model.detector.bundle.path, model.detector.bundle.vocab.format_name)
        async with self._busy:
            for old in self.models.add(model):
                if old.tag != model.tag:
                    log.info("bundle %s (vocab %s) let go: windows records of that vocab are dead-lettered now",
                             old.version, old.tag)
            if fmt is not None:
                self.quoter.fmt = fmt
            if self.metrics is not None:
                from streams.prometheus import set_model_info

                b = model.detector.bundle
                set_model_info(self.metrics.model_info, b.path, b.vocab.format_name or "", b.vocab, model.version,
                               weights=b.weights_sha256)

    async def apply_feedback(self, feedback: Any) -> None:
        """Apply a logad.feedback.Feedback to every kept bundle, between two batches."""
        async with self._busy:
            for m in self.models.all():
                await asyncio.to_thread(m.detector.apply_overlay, feedback.overlay(m.detector.bundle.vocab))

    async def consume(self) -> None:
        """Fetch windows into the bounded queue (blocks when the model falls behind: backpressure)."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=self.cfg.max_batch)
            for recs in batch.values():
                for r in recs:  # decoded one record at a time: a full queue stops the decoding too
                    await self.queue.put(unpack_record(r, self.models.tags))
            if self.metrics is not None:
                self.metrics.queue.set(self.queue.qsize())
                await self._observe_lag()

    async def _observe_lag(self) -> None:
        try:
            for tp in self.consumer.assignment():
                hw = self.consumer.highwater(tp)
                if hw is not None:
                    lag = max(0, hw - await self.consumer.position(tp))
                    self.metrics.lag.labels("scorer", tp.topic, str(tp.partition)).set(lag)
        except Exception as e:  # metrics only
            log.debug("lag metrics: %s", e)

    async def next_batch(self) -> list[Any]:
        """The waiting windows, plus whatever arrives within max_wait_ms of the first, up to max_batch."""
        q, limit = self.queue, max(1, self.cfg.max_batch)
        await q.wait()
        items = q.take(limit)
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000.0
        while len(items) < limit:
            if not q.empty():
                items += q.take(limit - len(items))
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not await q.wait(left):
                break
        return items

    async def run(self) -> None:
        """Score batch after batch; up to MAX_IN_FLIGHT batches wait for their acks (and commit, in
        order) while the next ones are scored: a produce round trip per batch no longer stalls the
        model. The first failure (a produce that cannot be acknowledged) ends run()."""
        in_flight: deque[asyncio.Task] = deque()
        try:
            while True:
                in_flight.append(await self.process(await self.next_batch(), wait=False))
                while in_flight and (len(in_flight) > MAX_IN_FLIGHT or in_flight[0].done()):
                    await in_flight.popleft()
        finally:
            for t in in_flight:
                t.cancel()  # not acknowledged/committed: those windows are re-delivered (same alert ids)

    async def handle(self, records: list[Any], wait: bool = True) -> asyncio.Task:
        """Decode, score and send the windows of `records` as one batch (see process)."""
        return await self.process(unpack(records, self.models.tags), wait)

    async def process(self, outcomes: list[Outcome], wait: bool = True) -> asyncio.Task:
        """Score and send one batch; a task awaits the acks (after the previous batch's), then has
        the offsets past the batch committed. `wait`: return only once committed."""
        t0 = time.perf_counter()
        if self.watcher is not None and any(o.error.startswith("vocab_mismatch") for o in outcomes):
            outcomes = await self._recheck(outcomes)
        async with self._busy:  # the bundles stay as they are until the batch is scored and sent
            models: dict[str, Model] = {}  # vocab fingerprint -> the bundle that scores it in this batch
            todo: dict[str, list[Outcome]] = {}
            for o in outcomes:
                if o.window is not None:
                    todo.setdefault(o.vocab, []).append(o)
            for tag, group in todo.items():
                m = self.models.get(tag) or (self.models.current if not tag else None)
                if m is None:  # its bundle was let go since the record was decoded
                    for o in group:
                        o.window, o.error = None, f"vocab_mismatch: the windows record has vocab fingerprint {tag!r}, " \
                                                  "whose bundle this scorer no longer keeps"
                    continue
                models[tag] = m
                await self._score(m.detector, group)
            futures, counts = await self._send(outcomes, models)
        task = asyncio.ensure_future(self._settle(outcomes, futures, self._last, t0, counts))
        self._last = task
        if wait:
            await task
            if self._committer is not None:
                await self._committer
        return task

    async def _score(self, det: Any, todo: list[Outcome]) -> None:
        """Score the windows of `todo` with one detector; each Outcome gets its score or error."""
        hits, misses = getattr(det, "cache_hits", 0), getattr(det, "cache_misses", 0)
        windows = [o.window for o in todo]
        # A batch the score cache answers whole costs ~1-2 us per window of plain Python: scored
        # here (a thread hand-off and its GIL switches cost more); otherwise in a thread, so the
        # event loop keeps fetching while the model runs.
        results = None
        cached = getattr(det, "score_cached", None)
        if cached is not None:
            try:
                results = cached(windows)
            except Exception:  # noqa: BLE001 (score_batch retries it window by window, and logs)
                results = None
        if results is None:
            results = await asyncio.to_thread(score_batch, det, windows)
        if self.metrics is not None:
            self.metrics.cache_hits.inc(getattr(det, "cache_hits", 0) - hits)
            self.metrics.cache_misses.inc(getattr(det, "cache_misses", 0) - misses)
        for o, res in zip(todo, results):
            if isinstance(res, Exception):
                o.error = f"score_failed: {type(res).__name__}: {res}"
            else:
                o.score = res

    async def _recheck(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Records of a vocab no kept bundle has: look at model_dir first (the worker may run a new
        bundle this scorer has not loaded yet), then decode them again against the bundles kept."""
        now = time.monotonic()
        if now - self._settled < SETTLE_EVERY_S:
            return outcomes
        self._settled = now
        await self.watcher.settle()
        out: list[Outcome] = []
        for o in outcomes:
            out += unpack_record(o.record, self.models.tags) if o.error.startswith("vocab_mismatch") else [o]
        return out

    async def _settle(self, outcomes: list[Outcome], futures: list[asyncio.Future], previous: asyncio.Task | None,
                      t0: float, counts: tuple[int, int]) -> None:
        await asyncio.gather(*futures)  # every score / alert / dead letter of the batch acknowledged
        if previous is not None:
            await previous  # commits stay in batch order (a failed one raises here too)
        # The batch's records, in order, each with whether its last window is in this batch (a
        # record's windows are contiguous in a batch: one entry per record, not per window).
        runs: list[list] = []
        prev = None
        for o in outcomes:
            if o.record is not prev:
                prev = o.record
                runs.append([prev, o.last])
            elif o.last:
                runs[-1][1] = True
        if self.metrics is not None:
            self.metrics.windows.inc(counts[0])
            # (an anomalous probe is an alert only when the early gate let it out: counted in send())
            self.metrics.alerts.inc(counts[1])
            # Window produced by the worker -> its score acknowledged here: one observation per windows
            # record per batch (the windows of a bundle share their record's timestamp).
            done = time.time()
            for r, _ in runs:
                ts = getattr(r, "timestamp", None)
                if isinstance(ts, int) and ts > 0:
                    self.metrics.latency.observe(max(0.0, done - ts / 1000.0))
        # Everything up to this batch is acknowledged: commit past it (records of a partition arrive
        # in order), but past a bundle only once its last window is in: a bundle split over two
        # batches commits its own offset first (re-delivered whole if we stop in between).
        # Commits coalesce: one in flight at a time, the next takes all that settled.
        ends: dict[tuple[str, int], int] = {}
        for r, last in runs:
            key = (r.topic, r.partition)
            ends[key] = max(ends.get(key, 0), r.offset + int(last))
        for (topic, partition), end in ends.items():
            tp = _tp(topic, partition)
            self._to_commit[tp] = max(self._to_commit.get(tp, 0), end)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_loop())
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(outcomes))
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
            self.metrics.queue.set(self.queue.qsize())

    async def _commit_loop(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await self.consumer.commit(offsets)
            except Exception as e:  # e.g. partitions moved in a rebalance: they will be scored again
                log.warning("commit failed (%s); those windows will be re-delivered (same alert ids)", e)

    async def send(self, outcomes: list[Outcome]) -> list[asyncio.Future]:
        """Queue the batch's scores (one bundle per scores partition), alerts (one record each) and
        dead letters; returns the delivery futures."""
        return (await self._send(outcomes))[0]

    async def _send(self, outcomes: list[Outcome], models: dict[str, Model] | None = None
                    ) -> tuple[list[asyncio.Future], tuple[int, int]]:
        """send(), and (windows scored, alerts on closed windows) of the batch for the metrics.
        `models`: vocab fingerprint -> the bundle that scored those windows (default: the running one)."""
        futures = []
        stamp = iso_time(time.time())  # the batch is decided at one instant: format its `time` once
        details = self.cfg.score_details  # normal windows' score records without the surprising events
        current = self.models.current
        # each window's envelope names the bundle that scored it: its model version and its vocab
        # (EventEncoder: = encode_json(make_event(...)), the same bytes; logad.alerts)
        encoders = {tag: m.encoder for tag, m in (models or {}).items()}
        gate = self.early
        done = [o for o in outcomes if o.score is not None]
        scored = [o.score for o in done]
        # as the default partitioner places records keyed by session id: one vectorised pass per batch
        parts = key_partitions([s.window.session_id.encode() for s in scored], self.topics.partitions)
        scores: dict[int, list[bytes]] = {}
        alerts: list[tuple[int, bytes | None, bytes, list]] = []  # (partition, key, envelope, CloudEvents headers)
        n_alerts = n_probes = 0
        held: dict[str, int] = {}
        evidence = await self._evidence(done)
        for o, ws, part in zip(done, scored, parts):
            w = ws.window
            encoder = encoders.get(o.vocab, current.encoder)
            ev = evidence.get(id(o)) if evidence else None
            probe = w.reason == PROBE
            if o.hold and ws.is_anomaly:  # the input does not fit the bundle: score it, alert nothing
                held[o.hold] = held.get(o.hold, 0) + 1
                if probe:
                    n_probes += 1
                    continue
                if gate.tracked:
                    gate.admit(ws)  # a closing window still ends its session's early-alert entry
                scores.setdefault(part, []).append(encoder.encode(ws, stamp, details=details))
                continue
            # the gate only has work for probes and, once it tracks sessions, for their final windows
            if (probe or gate.tracked) and gate.admit(ws):  # the first anomalous probe of an open session
                alerts.append((part, w.session_id.encode(), encoder.encode(ws, stamp, early=True, evidence=ev),
                               ce_headers(ws, encoder.model_version, stamp)))
                self.alerts += 1
                if self.metrics is not None:
                    self.metrics.alerts.inc()
            if probe:  # a probe has no score of its own on the scores topic
                n_probes += 1
                continue
            # (an anomalous window's score envelope keeps its surprising events: it is also the alert)
            event = encoder.encode(ws, stamp, details=details, evidence=ev)
            scores.setdefault(part, []).append(event)
            if ws.is_anomaly:
                alerts.append((part, w.session_id.encode(), event, ce_headers(ws, encoder.model_version, stamp)))
                n_alerts += 1
        self.scored += len(scored) - n_probes
        self.alerts += n_alerts
        if held:
            self.held += sum(held.values())
            if self.metrics is not None:
                for reason, k in held.items():
                    self.metrics.held.labels(reason).inc(k)
        if len(scored) < len(outcomes):
            for o in outcomes:
                if o.score is None:
                    futures.append(await self._dead_letter(o))
        futures += await send_batched(self.producer, self.topics.scores,
                                      ((p, None, v) for p, events in scores.items() for v in _bundles(events)))
        futures += await send_batched(self.producer, self.topics.alerts, alerts)
        return futures, (len(scored), n_alerts)

    async def _evidence(self, done: list[Outcome]) -> dict[int, list[dict]]:
        """id(outcome) -> the raw lines its alert quotes (streams/evidence.py), for the batch's
        anomalous windows that will alert; {} when evidence is off or there is none."""
        if self.quoter is None:
            return {}
        todo = [o for o in done if o.score.is_anomaly and not o.hold and o.pos]  # type: ignore[union-attr]
        if not todo:
            return {}
        quoted = await self.quoter.quote([(o.score, o.pos) for o in todo])
        return {id(o): ev for o, ev in zip(todo, quoted)}

    async def _dead_letter(self, o: Outcome) -> asyncio.Future:
        reason, _, detail = o.error.partition(": ")
        if self.metrics is not None:
            self.metrics.dead.labels(reason).inc()
        r = o.record
        if reason == "vocab_mismatch":  # a deployment error: every record would log; count all, log some
            self.mismatches += 1
            if self.metrics is not None:
                self.metrics.vocab_mismatch.inc()
            now = time.monotonic()
            if now - self._mismatch_logged >= MISMATCH_LOG_EVERY_S:
                self._mismatch_logged = now
                log.error("windows record %s/%d@%d refused (%d so far, dead-lettered, not scored): %s",
                          r.topic, r.partition, r.offset, self.mismatches, detail)
        else:
            log.warning("window %s/%d@%d%s dead-lettered: %s", r.topic, r.partition, r.offset,
                        "" if o.index is None else f"[{o.index}]", o.error)
        return await self.producer.send(self.topics.dead_letter, key=r.key, value=encode_dead_letter(
            reason, r.topic, r.partition, r.offset, r.value, line=o.index, detail=detail))

    async def publish(self, outcomes: list[Outcome]) -> None:
        """Send and wait for the acks (no commit)."""
        await asyncio.gather(*await self.send(outcomes))


def _bundles(events: list[bytes]) -> list[bytes]:
    """Encoded score envelopes -> scores bundle records of at most ~MAX_SCORES_BYTES each."""
    out, part, size = [], [], 0
    for e in events:
        if part and size + len(e) > MAX_SCORES_BYTES:
            out.append(encode_scores(part))
            part, size = [], 0
        part.append(e)
        size += len(e) + 1
    if part:
        out.append(encode_scores(part))
    return out


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)
