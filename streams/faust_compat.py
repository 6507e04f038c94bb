"""Every use of faust-streaming internals, in one place: what each compensates, and its canary.

logad pins faust-streaming==0.15.3 (pyproject.toml). Agents, tables, group membership, recovery,
the timer and the web server are Faust's public API; these are not, and each is written for the
behaviour of that release. tests/streams/test_faust_internals.py checks that what each one
touches is still there and shaped as expected, and fails naming the workaround when an upgrade
changes it; the stream tests (tests/streams, tests/reliability) check the behaviour end to end.

| workaround | Faust 0.15.3 behaviour it compensates |
|---|---|
| gate_commits_on_changelog | Faust commits events offsets after flushing its own producer; the session changelog goes through ours (streams/session_table.py), so a commit must first wait for our changelog writes |
| backfill | the stream can drop records fetched while it suspends flow during start-up recovery, and never deliver them (its read offset moved past them) |
| unstick_commits | after a restart its ack list can miss offsets the agent handled; it then never commits that partition again |
| quiet_table_monitor | the monitor counts every table get/set/del with a labelled Prometheus increment (~a tenth of the worker) |
| raise_producer_buffer | it warns and flushes inline past 100 queued producer messages, a normal burst of changelog writes |
| recovery_done | table recovery's completion is only visible as Recovery.completed |
| memory_store_dict | the memory store's plain dict is written directly by ChangelogTable (streams/session_table.py); the store then does not know those keys' partitions and keeps them when the partitions are revoked (streams/app.py forget_revoked drops them) |
| streams/watchdog.py (a thread, kept beside the worker) | recovery can hang after a crash loop with records left; it reads Recovery.in_recovery and active_remaining_total() |
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import faust
from aiokafka import TopicPartition

if TYPE_CHECKING:
    from streams.app import WorkerContext
    from streams.session_table import ChangelogTable

log = logging.getLogger("logad.worker")


def _no_op(*_args: Any, **_kwargs: Any) -> None:
    return None


def quiet_table_monitor(app: faust.App) -> None:
    """Faust's per-key table counters cost a labelled Prometheus increment per session read and
    write (a sweep reads every idle session): logad_session_records and logad_windows count the
    same work per bundle."""
    for hook in ("on_table_get", "on_table_set", "on_table_del"):
        setattr(app.monitor, hook, _no_op)


def raise_producer_buffer(app: faust.App, at_least: int = 5000) -> None:
    """Faust warns ("producer buffer full") past 100 queued changelog writes, a normal burst when a
    batch touches hundreds of sessions; let it queue more before it flushes inline."""
    buffer = getattr(app.producer, "buffer", None)
    if buffer is not None and getattr(buffer, "max_messages", 0) < at_least:
        buffer.max_messages = at_least


def recovery_done(app: faust.App) -> bool:
    """Table recovery finished (the worker only closes idle sessions, and the watchdog only stands
    down, once it has)."""
    return bool(app.tables.recovery.completed.is_set())


def memory_store_dict(table: Any) -> Any:
    """The plain dict behind a table's memory store (what ChangelogTable reads and writes)."""
    store = table.data  # Faust's memory store
    return getattr(store, "data", store)


def gate_commits_on_changelog(app: faust.App, changelog: ChangelogTable) -> None:
    """Faust commits events offsets through Consumer._commit_offsets, after flushing ITS producer.
    The session changelog goes through ours (ChangelogTable), so every commit first waits until
    all changelog writes sent so far are acknowledged; if one failed, the worker crashes instead of
    committing past state that is not in the changelog (the restart recovers and re-reads)."""
    consumer = app.consumer
    commit = consumer._commit_offsets

    async def commit_after_changelog(offsets: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            await changelog.settled()
        except Exception as e:
            log.critical("session changelog write failed (%s); not committing, stopping", e)
            await app.crash(e)
            raise
        return await commit(offsets, *args, **kwargs)

    consumer._commit_offsets = commit_after_changelog  # type: ignore[method-assign]


async def backfill(ctx: WorkerContext, app: faust.App, partition: int, start: int, stop: int) -> None:
    """Read events records [start, stop) of a partition directly and handle them, in order.

    Faust (0.15.3) can drop records fetched while it suspends flow during start-up recovery, and
    then never delivers them (its read offset moved past them). Records already applied are
    harmless here: their events are at or below the sessions' watermarks."""
    from aiokafka import AIOKafkaConsumer

    from streams.app import handle_record  # the agent's own handling (a local import: app imports this module)
    from streams.kafka_clients import consumer_kwargs

    log.warning("Faust skipped %s/%d offsets %d..%d; reading them directly", ctx.topics.events, partition,
                start, stop - 1)
    ctx.metrics.backfilled.inc(stop - start)
    if ctx.backfill_consumer is None:
        ctx.backfill_consumer = AIOKafkaConsumer(**consumer_kwargs(ctx.settings.kafka, group_id=None))
        await ctx.backfill_consumer.start()
    c = ctx.backfill_consumer
    tp = TopicPartition(ctx.topics.events, partition)
    c.assign([tp])
    c.seek(tp, start)
    pos = start
    while pos < stop:
        batch = await c.getmany(tp, timeout_ms=1000, max_records=500)
        records = batch.get(tp, [])
        if not records and await c.position(tp) >= stop:
            break
        for r in records:
            if r.offset >= stop:
                break
            await handle_record(ctx, app, r.key, r.value, partition, r.offset)
            ctx.expected[partition] = r.offset + 1
            pos = r.offset + 1
        if records and records[-1].offset >= stop - 1:
            break



STUCK_TICKS = 3


async def unstick_commits(ctx: WorkerContext, app: faust.App, committed: dict[int, int]) -> None:
    """Work around lost acks in faust-streaming 0.15.3 (seen after a restart): Faust's ack list for a
    partition can miss offsets the agent did handle; it then never commits that partition again
    (its `_new_offset` waits for the head gap forever), and every restart re-delivers more.

    Caught up, the agent has handled every record below `processed_end` (one agent, in partition
    order; windows acknowledged and state handed to Faust's producer). If Faust's committed offset
    stays below that for STUCK_TICKS ticks, commit `processed_end` through Faust's own commit path
    (which flushes the changelog producer first)."""
    stuck = {}
    for p, end in ctx.runner.processed_end.items():
        if committed.get(p, 0) < end:
            ctx.behind_ticks[p] = ctx.behind_ticks.get(p, 0) + 1
            if ctx.behind_ticks[p] >= STUCK_TICKS:
                stuck[p] = end
        else:
            ctx.behind_ticks.pop(p, None)
    commit = getattr(app.consumer, "_commit_offsets", None)
    if not stuck or commit is None:
        return
    tps = {tp.partition: tp for tp in app.consumer.assignment() if tp.topic == ctx.topics.events}
    offsets = {tps[p]: end for p, end in stuck.items() if p in tps}
    if offsets:
        log.warning("Faust is not committing %s (lost acks); committing the handled offsets %s",
                    ctx.topics.events, {tp.partition: o for tp, o in offsets.items()})
        await commit(offsets)
        for tp in offsets:
            ctx.behind_ticks.pop(tp.partition, None)
