"""The worker's Faust app: ingest service + session agent + idle-sweep timer, wired to logad/.

    raw topic --(IngestLoop: aiokafka batches)--> events topic      one bundle per partition per batch
    events    --(agent `sessions`, concurrency 1, table "sessions")--> windows topic
    timer every sessions.sweep_every_s: close sessions idle on the input clock -> windows; after a
      rebalance, forget the sessions of events partitions now held by other workers

Faust carries no payload codec here: every topic is value_serializer="raw" and streams/codec.py
turns bytes into records (a bad record is dead-lettered, never crashes the agent). The table has
bytes keys and values (orjson; session_table.ChangelogTable writes the store and the changelog
itself, and Faust commits an events offset only once the changelog writes before it are
acknowledged: faust_compat.gate_commits_on_changelog), `use_partitioner=True` (its
changelog partition is the key's murmur2 partition, exactly the events topic's partition for that
key, so the timer can write it outside an event), an in-memory store rebuilt from the changelog,
and no standby replicas (a memory store would mix standby keys into the active dict).

What this app needs from Faust beyond its public API (commit gating, skipped records read back,
stuck commits pushed, a quieter monitor, a larger producer buffer) is in streams/faust_compat.py,
each with the faust-streaming 0.15.3 behaviour it compensates.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ConsumerStoppedError, KafkaError

from logad.config import Settings
from logad.drift import matcher as drift_matcher
from logad.templates import DriftMiner
from streams.codec import CodecError, decode_events_bundle, encode_bundles, encode_dead_letter, vocab_tag
from streams.ingest import Ingestor
from streams.ingest_loop import IngestLoop
from streams.kafka_clients import admin_kwargs, consumer_kwargs, faust_settings, producer_kwargs
from streams.prometheus import WorkerMetrics, set_model_info
from streams.faust_compat import (backfill, gate_commits_on_changelog, quiet_table_monitor, raise_producer_buffer,
                                  recovery_done, unstick_commits)
from streams.session_table import ChangelogTable
from streams.session_processor import SessionProcessor, SessionRunner, key_partition, load_session_rules
from streams.topics import RAW_MAX_MESSAGE_BYTES, SESSIONS_TABLE, Topics, changelog_topic, topics_for

log = logging.getLogger("logad.worker")

GROUP_SESSION_TIMEOUT_S = 6.0  # the broker's minimum: a killed member is evicted after this long
HEARTBEAT_S = 1.0


@dataclass
class WorkerContext:
    """Everything the agent, the timer and the ingest service share inside one worker process."""

    settings: Settings
    app_id: str
    topics: Topics
    ingestor: Ingestor
    runner: SessionRunner
    metrics: WorkerMetrics
    source: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    producer: Any = None
    consumer: Any = None
    admin: Any = None
    ingest: IngestLoop | None = None
    reported_duplicates: int = 0
    expected: dict[int, int] = field(default_factory=dict)  # events partition -> next offset to handle
    backfill_consumer: Any = None
    tick_task: asyncio.Future | None = None
    behind_ticks: dict[int, int] = field(default_factory=dict)  # events partition -> ticks with commits stuck
    assigned: tuple[int, ...] = ()  # events partitions at the last tick (a change re-indexes the sessions)


def build_app(settings: Settings, *, app_id: str, model_dir: str | Path, raw_topic: str | None = None,
              datadir: str | Path | None = None, metrics: WorkerMetrics | None = None) -> tuple[faust.App, WorkerContext]:
    """The worker app for the model bundle's source (its format: any format with a session rule);
    nothing connects until the worker starts."""
    s = settings
    vocab, fmt, rules = load_session_rules(model_dir, None, s.sessions)
    topics = topics_for(s, fmt.name, raw_topic)
    parts = s.topics.partitions
    app = faust.App(
        app_id,
        **faust_settings(s.kafka),
        datadir=str(datadir or Path(tempfile.gettempdir()) / f"logad-faust-{app_id}"),
        store="memory://",  # state lives in the changelog; a restart rebuilds it (small: open sessions)
        key_serializer="raw", value_serializer="raw",
        topic_partitions=parts, topic_replication_factor=s.topics.replication,
        topic_disable_leader=True, table_standby_replicas=0,
        broker_session_timeout=GROUP_SESSION_TIMEOUT_S, broker_heartbeat_interval=HEARTBEAT_S,
        broker_commit_interval=1.0,
        # Changelog writes (one per changed session per bundle) batch for 5 ms instead of one
        # produce request each (measured: socket.send was ~10% of the worker at 5k lines/s).
        producer_linger=0.005, producer_max_batch_size=256 * 1024,
        consumer_auto_offset_reset="earliest",
        web_enabled=True, web_bind=s.web.host, web_host=s.web.host, web_port=s.web.port,
    )
    metrics = metrics or WorkerMetrics()
    set_model_info(metrics.model_info, model_dir, fmt.name, vocab)
    try:
        from faust.sensors.prometheus import setup_prometheus_sensors

        setup_prometheus_sensors(app, name_prefix="logad_faust")
        # Faust's per-key table counters cost a labelled Prometheus increment per session read and
        # write (a sweep reads every idle session): logad_session_records and logad_windows count
        # the same work per bundle.
        quiet_table_monitor(app)
    except Exception as e:  # metrics are nice to have; never a reason not to run
        log.warning("prometheus sensors not installed: %s", e)

    events_topic = app.topic(topics.events, key_serializer="raw", value_serializer="raw", partitions=parts,
                             internal=False)
    # bytes keys and values: the changelog key is the session id exactly as on the events topic
    # (co-partitioned), the value our orjson (see session_table.BytesTable).
    table = app.Table(SESSIONS_TABLE, default=None, partitions=parts, use_partitioner=True,
                      key_type=bytes, value_type=bytes)
    drift = DriftMiner(fmt)
    # Reworded statements map to the statement they are closest to, as `logad detect` maps them.
    matcher = drift_matcher(vocab, s.drift)  # drift matching and pending ids (logad.pending), or the frozen vocab
    ingestor = Ingestor(fmt, matcher, max_record_bytes=s.ingest.max_record_bytes,
                        max_line_bytes=s.ingest.max_line_bytes, drift=drift, partitions=parts, guard=s.guard)
    changelog = ChangelogTable(table, changelog_topic(app_id), parts)  # we write the changelog (see there)
    runner = SessionRunner(SessionProcessor(fmt.name, rules, changelog, probes=s.scorer.early_alerts,
                                            positions=s.scorer.evidence_lines > 0), None,
                           topics.windows, metrics, windows_partitions=parts, vocab=vocab_tag(vocab))
    ctx = WorkerContext(s, app_id, topics, ingestor, runner, metrics, fmt.name)

    @app.service
    class WorkerIO(mode.Service):
        """Owns the aiokafka clients: ingest consumer, the one producer, an admin client for offsets."""

        async def on_start(self) -> None:
            k = s.kafka
            ctx.producer = AIOKafkaProducer(**producer_kwargs(k, linger_ms=5, max_batch_size=256 * 1024))
            await ctx.producer.start()
            ctx.consumer = AIOKafkaConsumer(
                # read_committed: a shipper that writes in transactions (exactly-once) is read
                # only once it commits, aborted batches never; plain producers are unaffected.
                topics.raw, **consumer_kwargs(k, group_id=f"{app_id}-ingest", isolation_level="read_committed",
                                              max_partition_fetch_bytes=RAW_MAX_MESSAGE_BYTES,
                                              session_timeout_ms=int(GROUP_SESSION_TIMEOUT_S * 1000),
                                              heartbeat_interval_ms=int(HEARTBEAT_S * 1000)))
            await ctx.consumer.start()
            ctx.admin = AIOKafkaAdminClient(**admin_kwargs(k))
            await ctx.admin.start()
            runner.producer = ctx.producer
            changelog.producer = ctx.producer
            gate_commits_on_changelog(app, changelog)
            raise_producer_buffer(app)
            ctx.ingest = IngestLoop(ingestor=ingestor, consumer=ctx.consumer, producer=ctx.producer,
                                    events_topic=topics.events, dead_letter_topic=topics.dead_letter,
                                    batch_size=s.ingest.batch_size, within_s=s.ingest.batch_within_s,
                                    drift_every_s=s.ingest.drift_report_every_s, metrics=metrics)
            ctx.ready.set()

        @mode.Service.task
        async def _ingest(self) -> None:
            await ctx.ready.wait()
            assert ctx.ingest is not None
            try:
                await ctx.ingest.run()
            except ConsumerStoppedError:  # on_stop closed the consumer: a clean shutdown
                return
            except (KafkaError, OSError) as e:  # the batch is not committed: a restart redoes it
                log.critical("ingest stopped: %s", e)
                await app.crash(e)

        async def on_stop(self) -> None:
            if ctx.ingest is not None:
                await ctx.ingest.stop()  # finish (produce + commit) the batch in flight, then stop
            for client in (ctx.consumer, ctx.backfill_consumer, ctx.producer, ctx.admin):
                if client is not None:
                    try:
                        await (client.close() if client is ctx.admin else client.stop())
                    except Exception:  # shutting down anyway
                        pass

    @app.agent(events_topic, concurrency=1)  # concurrency 1: offsets of a stateful agent stay in order
    async def sessions(stream: faust.StreamT) -> None:
        async for event in stream.events():  # events record -> windows records
            await on_event(ctx, app, event.key, event.value, event.message.partition, event.message.offset)

    async def guarded_tick() -> None:
        try:
            await tick(ctx, app)
        except KafkaError as e:
            log.critical("sweep could not produce windows: %s", e)
            await app.crash(e)
        except Exception:
            log.exception("sweep failed; retrying at the next tick")

    @app.timer(s.sessions.sweep_every_s)
    async def sweep_idle() -> None:
        # A tick waits on the broker (offsets, window acks); one still running means skip this one,
        # instead of stacking ticks or stretching the timer.
        if ctx.tick_task is None or ctx.tick_task.done():
            ctx.tick_task = asyncio.ensure_future(guarded_tick())

    return app, ctx


async def on_event(ctx: WorkerContext, app: faust.App, key: bytes | None, value: bytes | None, partition: int,
                   offset: int) -> None:
    """One events record from Faust, in partition order; records Faust skipped are read first."""
    await ctx.ready.wait()
    expected = ctx.expected.get(partition)
    if expected is None:  # first record of this partition in this process: start at the commit
        expected = await first_offset(ctx, partition)
    if offset > expected:
        await backfill(ctx, app, partition, expected, offset)
    await handle_record(ctx, app, key, value, partition, offset)
    ctx.expected[partition] = offset + 1


async def handle_record(ctx: WorkerContext, app: faust.App, key: bytes | None, value: bytes | None,
                        partition: int, offset: int) -> None:
    """Every failure is caught here (an agent that raises acks the record and loses it)."""
    topic = ctx.topics.events
    try:
        src, rp, sessions, clock, hold = decode_events_bundle(value)
        if src != ctx.source:
            raise CodecError(f"events of source {src!r} reached the {ctx.source!r} worker")
        _, failures = await ctx.runner.on_bundle(rp, sessions, partition, offset, clock=clock, hold=hold)
        for sid, events, e in failures:  # the rest of the bundle was applied; these sessions were not
            ctx.metrics.dead.labels("sessions", "error").inc()
            # the session's events as a bundle of their own: a record the session agent could re-read
            (alone,) = encode_bundles(src, rp, [(sid, events)], max_events=max(1, len(events)))
            await ctx.producer.send_and_wait(ctx.topics.dead_letter, key=sid.encode(), value=encode_dead_letter(
                "error", topic, partition, offset, alone, detail=f"{type(e).__name__}: {e}"))
    except KafkaError as e:  # windows not acknowledged: state untouched; crash, the restart redoes it
        log.critical("cannot produce windows: %s", e)
        await app.crash(e)
    except Exception as e:
        reason = "bad_events_record" if isinstance(e, CodecError) else "error"
        if reason == "error":
            log.exception("session agent failed on %s/%d@%d", topic, partition, offset)
        ctx.metrics.dead.labels("sessions", reason).inc()
        ctx.runner.mark_processed(partition, offset)
        await ctx.producer.send_and_wait(ctx.topics.dead_letter, key=key, value=encode_dead_letter(
            reason, topic, partition, offset, value, detail=str(e)))


async def first_offset(ctx: WorkerContext, partition: int) -> int:
    """Where this process must start a partition: the group's committed offset, else the log start."""
    tp = TopicPartition(ctx.topics.events, partition)
    for _ in range(5):
        try:
            committed = await committed_offsets(ctx, [tp])
            if partition in committed:
                return committed[partition]
            return (await ctx.consumer.beginning_offsets([tp]))[tp]
        except KafkaError as e:
            log.warning("cannot read the committed offset of %s (%s); retrying", tp, e)
            await asyncio.sleep(1.0)
    raise RuntimeError(f"cannot read the committed offset of {tp}")


async def committed_offsets(ctx: WorkerContext, tps: list[TopicPartition]) -> dict[int, int]:
    offsets = await ctx.admin.list_consumer_group_offsets(ctx.app_id, partitions=tps)
    return {tp.partition: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}


async def tick(ctx: WorkerContext, app: faust.App) -> None:
    """Close idle sessions on the input clock (see streams/session_processor.py). Caught up (every
    partition of the raw topic ingested and committed to its end, by whichever worker holds it,
    and our events partitions handled), that clock is the wall time the check began; then commits
    are pushed too and, once everything is committed, closes need no tombstones."""
    if not ctx.ready.is_set() or ctx.ingest is None or app.rebalancing:
        return
    if not recovery_done(app):
        return
    parts = ctx.settings.topics.partitions
    mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == ctx.topics.events)
    owned = set(mine)
    if tuple(mine) != ctx.assigned:  # a rebalance: partitions (and their sessions) came, or went
        ctx.assigned = tuple(mine)
        await forget_revoked(ctx, owned)
    await observe(ctx, app, mine)
    checked = time.time()  # every line that arrived before this is applied, if caught up below
    caught_up = bool(mine) and await ctx.ingest.caught_up()
    committed: dict[int, int] = {}
    tps = [TopicPartition(ctx.topics.events, p) for p in mine]
    if caught_up:
        try:
            # raw first: the events of every raw record committed by then are on the events topic
            # (ingest commits after their acks), so the events end offsets read next include them
            caught_up = await raw_ingested(ctx)
            end = {tp.partition: o for tp, o in (await ctx.consumer.end_offsets(tps)).items()}
            committed = await committed_offsets(ctx, tps)
        except KafkaError as e:  # e.g. the group coordinator is still starting: just not now
            log.debug("lag check failed (%s); no sweep this tick", e)
            return
        caught_up = caught_up and ctx.runner.lag_free(end, committed)
    ctx.metrics.caught_up.set(1 if caught_up else 0)
    final = False
    if caught_up:
        dup = ctx.runner.proc.duplicates
        if dup != ctx.reported_duplicates:
            log.info("dropped %d re-delivered events so far (raw positions already applied)", dup)
            ctx.reported_duplicates = dup
        final = ctx.runner.all_committed(committed)
        if not final:
            await app.consumer.commit()  # Faust commits what the agent acked
            await unstick_commits(ctx, app, committed)
            try:  # committed now? Then this sweep's closes need no tombstones (each would cost two
                # changelog writes: the tombstone, then its delete; 18k of them at the end of a burst)
                final = ctx.runner.all_committed(await committed_offsets(ctx, tps))
            except KafkaError as e:
                log.debug("committed offsets unknown (%s); closing with tombstones", e)
    # Idle = silent on the INPUT clock, never on this worker's wall clock alone: behind, the arrival
    # time up to which every raw partition has been applied in our events partitions (the bundles
    # carry it); caught up, the wall time at which every raw partition was found ingested. A worker
    # behind, or one whose sessions also come from raw partitions another worker ingests while that
    # one is down or lagging, decides like one that kept up. Closes leave tombstones unless
    # everything is committed (those then go by age, TOMBSTONE_TTL_S).
    store = ctx.runner.proc.store
    store.owned = None if len(owned) == parts else (lambda k: key_partition(k, parts) in owned)
    clock = checked if caught_up else ctx.runner.input_clock(mine)
    if clock is not None:
        ctx.metrics.clock_lag.set(max(0.0, time.time() - clock))
        windows = await ctx.runner.sweep(clock, final)
        if windows:
            log.debug("closed %d idle sessions (input clock %.3f)", len(windows), clock)
    ctx.metrics.open_sessions.set(len(store))
    ctx.metrics.sessions(ctx.runner.proc.sessionizer.counters)


async def raw_ingested(ctx: WorkerContext) -> bool:
    """Every partition of the raw topic is ingested and committed to its end, whichever worker
    ingests it: this worker's events partitions also get sessions from raw partitions that others
    read, so its own ingest being caught up says nothing about them."""
    raw = ctx.topics.raw
    parts = ctx.consumer.partitions_for_topic(raw)
    if not parts:
        return False
    tps = [TopicPartition(raw, p) for p in sorted(parts)]
    end = await ctx.consumer.end_offsets(tps)
    done = await ctx.admin.list_consumer_group_offsets(f"{ctx.app_id}-ingest", partitions=tps)
    return all(end[tp] == 0 or (done.get(tp) is not None and done[tp].offset >= end[tp]) for tp in tps)


async def forget_revoked(ctx: WorkerContext, owned: set[int]) -> None:
    """After a rebalance: drop from memory what belongs to events partitions this worker no longer
    holds (their sessions, offsets and clocks; the changelog keeps the sessions for the new owner,
    and recovery brings them back should the partitions return), and re-index the sessions that
    recovery brought in. Faust's memory store only drops revoked keys it recovered itself; the
    sessions this worker wrote stayed, counted as open (logad_open_sessions) for good."""
    parts = ctx.settings.topics.partitions
    runner = ctx.runner
    async with runner.lock:  # between units of work: nothing buffered in the store
        dropped = runner.proc.store.forget(lambda k: key_partition(k, parts) in owned)
    if dropped:
        log.info("forgot %d sessions of events partitions now held by other workers", dropped)
    for offsets in (ctx.expected, ctx.behind_ticks, runner.processed_end):
        for p in [p for p in offsets if p not in owned]:
            del offsets[p]
    runner.clocks = {k: t for k, t in runner.clocks.items() if k[1] in owned}
    runner.proc.sessionizer.invalidate_index()


async def observe(ctx: WorkerContext, app: faust.App, mine: list[int]) -> None:
    """Metrics that need a look at the clients: consumer lag per stage and partition (from the
    clients' last fetch responses; no broker round trip), session closes and evictions."""
    m = ctx.metrics
    m.sessions(ctx.runner.proc.sessionizer.counters)
    try:
        for tp in ctx.consumer.assignment():
            hw = ctx.consumer.highwater(tp)
            if hw is not None:
                m.lag.labels("ingest", tp.topic, str(tp.partition)).set(max(0, hw - await ctx.consumer.position(tp)))
        for p in mine:
            hw = app.consumer.highwater(TopicPartition(ctx.topics.events, p))
            if hw is not None and hw >= 0:
                done = ctx.runner.processed_end.get(p, ctx.expected.get(p, hw))
                m.lag.labels("sessions", ctx.topics.events, str(p)).set(max(0, hw - done))
    except Exception as e:  # metrics only: never a reason to skip the sweep
        log.debug("lag metrics: %s", e)
