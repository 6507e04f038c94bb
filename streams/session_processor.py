"""Sessions in the stream: events records -> logad.session_rules.Sessionizer over a Faust table -> windows.

    events bundle ({"src", "rp", "t", "sid", "arr", "n", "tid", "ts", "pos"}: columns, streams/codec.py)
      -> per session (id, tids, times, positions, arrival): streams.codec.decode_events_columns
      -> per session: drop events at or below its raw-position watermark (re-deliveries after a crash)
      -> Sessionizer.push_columns (the session's fresh events) -> closed windows ("max_length", "gap", ...)
      -> the whole bundle is one unit: windows produced and acknowledged, then ONE table write per
         changed session (SessionRunner.on_bundle)
    timer every sessions.sweep_every_s (streams/app.py `tick`)
      -> Sessionizer.sweep(input clock)                  -> closed windows ("idle")
    windows -> windows topic (bundles: one record per windows partition per unit, streams/codec.py),
      acknowledged BEFORE the table changes are written; each record carries the vocab fingerprint
      and, while the last events bundle of some raw partition said the input guard's verdict is
      bad, `hold` (the scorer then publishes scores but no alerts)
Table values are orjson bytes under the session id's bytes (streams/session_table.py): co-partitioned
with events. While alerts quote raw lines (scorer.evidence_lines > 0) each window carries the raw
positions of its scored events and each open session keeps those of its pending events only
(streams/positions.py: at most a window's length, delta-packed), beside its compact state.

The Sessionizer is logad's, unchanged; it runs over streams.session_table.SessionStore, which
keeps per-session raw-position watermarks (re-deliveries after a crash are not applied twice),
tombstones for closed sessions, and buffers writes until the unit's windows are acknowledged.

Idleness is measured on the INPUT clock, not on the worker's: a session's last activity is the
arrival time (Kafka timestamp; raw topics use LogAppendTime) of its last line, and the sweep
closes sessions idle at the time up to which every raw partition has been applied in every events
partition of this worker (the bundles carry it; `SessionRunner.input_clock`). Idle then means "the
input was silent", never "this worker was slow or down": a worker that restarts after a crash, or
lags behind a burst, decides like one that kept up, and a stream that never pauses still has its
idle sessions closed (within sweep_every_s of the clock passing them). Nor does it mean "another
worker's ingest is down or behind": a raw partition nobody reads holds the clock back in every
events partition it feeds. When every raw partition is ingested and committed to its end (whoever
ingests it) and this worker's events partitions are handled (caught up), the clock is the wall
time at which that was checked (streams/app.py `tick`).
After a rebalance the worker forgets the sessions of events partitions it no longer holds
(streams/app.py forget_revoked; SessionStore.forget): the changelog keeps them for the new owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections.abc import MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from logad.artifacts import MANIFEST, read_json, sha256_file
from logad.config import SessionConfig
from logad.detect_files import session_rules
from logad.errors import ArtifactError, ConfigError
from logad.formats import LogFormat
from logad.records import Window
from logad.session_rules import SessionRules, Sessionizer
from logad.windows import WindowRule
from logad.templates import TemplateVocab
from streams.codec import encode_windows, to_columns, to_rows
from streams.positions import append as append_positions, pack as pack_positions, pending, unpack as unpack_positions
from streams.positions import window_positions
from streams.kafka_clients import key_partition as partition_of, send_batched
from streams.session_table import SessionStore, positions_of

log = logging.getLogger("logad.windows")

# A tombstone keeps a closed session closed against re-delivered events (streams/session_table.py).
# Re-delivery replays what was not committed; commits trail processing by about a commit interval
# (1 s). On a stream that is never completely quiet the "everything committed" purge of a caught-up
# tick never comes, so tombstones also go once their close is this old in input time.
TOMBSTONE_TTL_S = 60.0
SWEEP_CHUNK = 4096  # idle sessions closed per unit of work (~30 ms of closing; see SessionRunner.sweep)


# ----------------------------------------------------------------------------- model bundle, lite
def load_session_rules(model_dir: str | Path, fmt: LogFormat | None, cfg: SessionConfig
                       ) -> tuple[TemplateVocab, LogFormat, SessionRules]:
    """Vocab, format (the bundle's unless `fmt`) and session rules of a model bundle, from its
    manifest, vocab and format file only.

    The worker needs the window rule and the frozen vocab, not the weights; the hashes are checked
    as in logad.artifacts.load_bundle. A format without a session rule is a ConfigError: the stream
    could not group its lines."""
    from logad.artifacts import bundle_format

    p = Path(model_dir)
    manifest = read_json(p / MANIFEST, "model manifest")
    try:
        rule = WindowRule(**manifest["window"])
        vmeta = manifest["vocab"]
        vpath = p / vmeta["file"]
    except (KeyError, TypeError, ConfigError) as e:
        raise ArtifactError(f"{p / MANIFEST}: malformed manifest ({e})") from None
    if not vpath.is_file():
        raise ArtifactError(f"model file {vpath} is missing")
    if sha256_file(vpath) != vmeta["sha256"]:
        raise ArtifactError(f"{vpath}: sha256 differs from the manifest (vocab does not belong to this model)")
    vocab = TemplateVocab.load(vpath)
    fmt = fmt or bundle_format(p, vocab.format_name)  # as logad.detect_files.detect_paths picks it
    fmt.require_sessions()
    vocab.match("startup probe")  # a vocab that cannot match raw lines fails here, in one line, not per line
    # session_rules only reads .bundle.vocab and .bundle.rule: no need to load torch weights.
    rules = session_rules(SimpleNamespace(bundle=SimpleNamespace(vocab=vocab, rule=rule)), fmt, cfg)  # type: ignore[arg-type]
    return vocab, fmt, rules


def model_format(model_dir: str | Path) -> LogFormat:
    """The log format of a bundle as the worker reads it (checked as load_session_rules checks it)."""
    return load_session_rules(model_dir, None, SessionConfig())[1]


def key_partition(key: str, n: int) -> int:
    """The partition Kafka's default partitioner gives `key` (what events and the table use)."""
    return partition_of(key.encode(), n)


# ------------------------------------------------------------------------------ pure processing
class SessionProcessor:
    """Applies events records and sweeps; no Kafka, no Faust (unit-testable with a dict as table)."""

    def __init__(self, source: str, rules: SessionRules, table: MutableMapping[str, Any],
                 probes: bool = False, positions: bool = False) -> None:
        self.store = SessionStore(table)
        self.sessionizer = Sessionizer(source, rules, self.store)
        self.duplicates = 0  # events dropped as re-deliveries
        self.probes = probes  # scorer.early_alerts: also emit each touched open session's window (streams/early.py)
        # scorer.evidence_lines > 0: windows carry the raw positions of their scored events (the
        # session keeps those of its pending events, streams/positions.py); id(window) -> packed,
        # until the windows are produced (SessionRunner._emit takes them)
        self.positions = positions
        self.window_pos: dict[int, list] = {}
        if positions:
            self.store.closed_positions = {}

    def apply(self, session_id: str, rp: str, events: list[tuple[int, float | None, int]],
              now: float) -> list[Window]:
        """apply_columns of events given as rows [(tid, ts, pos), ...] (tests, tools)."""
        return self.apply_columns(session_id, rp, *to_columns(events), now)

    def apply_columns(self, session_id: str, rp: str, tids: list[int], tss: list[float | None],
                      poss: list[int], now: float) -> list[Window]:
        """One session's events from one record, as columns (rising positions) -> the windows they
        close. `now`: when they arrived (the input clock of the session's last activity). Changes
        stay buffered until flush()."""
        store = self.store
        store.clock = now
        if not poss:
            return []
        last = store.applied(session_id, rp)
        if poss[0] <= last:  # re-delivered (a crash re-read them): drop what is already applied
            i = bisect_right(poss, last)
            self.duplicates += i
            if i == len(poss):
                return []
            tids, tss, poss = tids[i:], tss[i:], poss[i:]
        # (pushing at least one event always writes or deletes the session, with its watermark)
        store.set_watermark(session_id, rp, poss[-1], written=True)
        if not self.positions:
            return self.sessionizer.push_columns(session_id, tids, tss, now, probe=self.probes)
        rule = self.sessionizer.rules.rule
        raw = store.value(session_id)
        k0, packed = 0, None  # the session's pending events before the push, their packed positions
        if raw is not None and raw[0] is not None:
            k0, packed = pending(raw[0], rule), positions_of(raw)
        windows = self.sessionizer.push_columns(session_id, tids, tss, now, probe=self.probes)
        after = store.get(session_id)
        if not windows and packed and after is not None and pending(after, rule) == k0 + len(poss):
            # nothing closed, nothing dropped: the fresh positions follow the kept ones (most records)
            store.set_positions(session_id, append_positions(packed, rp, poss))
            return windows
        kept = unpack_positions(packed) if packed else []
        if len(kept) != k0:  # not kept (written without positions): those windows go without
            kept = [None] * k0
        fresh = [(rp, p) for p in poss]
        if windows:
            found = window_positions(windows, self.sessionizer.window_ends, kept, fresh)
            for w, wp in zip(windows, found):
                if wp is None:  # another session's (an eviction): its kept positions
                    self._place_closed(w)
                elif None not in wp:
                    self.window_pos[id(w)] = pack_positions(wp)
        if after is not None:
            k = pending(after, rule)
            seq = (kept + fresh)[-k:] if k else []
            store.set_positions(session_id, pack_positions(seq) if seq and None not in seq else None)
        return windows

    def _place_closed(self, w: Window) -> None:
        """The positions of a session closed whole (sweep, eviction): the ones it kept."""
        closed = self.store.closed_positions
        packed = closed.pop(w.session_id, None) if closed is not None else None
        if packed and w.final and len(unpack_positions(packed)) == w.n_lines:
            self.window_pos[id(w)] = packed

    def sweep(self, now: float, final: bool) -> list[Window]:
        """Close sessions idle at input time `now`. `final`: everything is committed, so closes need
        no tombstone and every tombstone goes; otherwise tombstones older than TOMBSTONE_TTL_S go."""
        return self.sweep_some(now, final, None)[0]

    def sweep_some(self, now: float, final: bool, limit: int | None) -> tuple[list[Window], bool]:
        """sweep, closing at most `limit` sessions; returns (the windows, whether every idle session
        is closed now). The tombstone purge runs once the last idle session is closed."""
        self.store.tombstones_final = final
        self.store.clock = now
        try:
            before = self.sessionizer.counters["closed_idle"]
            out = self.sessionizer.sweep(now, limit)
            if self.positions:
                for w in out:
                    self._place_closed(w)
            done = limit is None or self.sessionizer.counters["closed_idle"] - before < limit
            if done:
                if final:
                    self.store.purge_tombstones()
                else:
                    self.store.purge_tombstones_before(now - TOMBSTONE_TTL_S)
            return out, done
        finally:
            self.store.tombstones_final = False


# --------------------------------------------------------------------------- the async runner
class SessionRunner:
    """Glue between the Faust agent/timer and SessionProcessor: produce windows, then flush state.

    One lock serialises the agent and the timer: each unit of work (a record, a sweep) runs
    push/sweep -> produce windows -> await acks -> flush table changes, never interleaved.
    """

    def __init__(self, processor: SessionProcessor, producer: Any, windows_topic: str, metrics: Any = None,
                 windows_partitions: int | None = None, *, vocab: str) -> None:
        self.proc = processor
        self.vocab = vocab  # streams.codec.vocab_tag of the worker's vocab, on every windows record
        self.holds: dict[str, str] = {}  # raw partition -> the guard's problem on its last bundle (bad only)
        self.producer = producer
        self.windows_topic = windows_topic
        self.windows_partitions = windows_partitions  # known: windows go out in per-partition batches
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self.processed_end: dict[int, int] = {}  # events partition -> offset after the last record handled
        self.clocks: dict[tuple[str, int], float] = {}  # (raw partition, events partition) -> input clock applied

    async def _emit(self, windows: list[Window]) -> None:
        """Produce `windows` and await the acks: one bundle record per windows partition (per
        MAX_BUNDLE_WINDOWS), not one record per window (~18k windows per 200k HDFS lines)."""
        pos, self.proc.window_pos = self.proc.window_pos, {}  # id(window) -> raw positions: these windows only
        if windows:
            n = self.windows_partitions
            hold = self.hold
            if n:
                by_part: dict[int, list[Window]] = {}
                for w in windows:
                    by_part.setdefault(partition_of(w.session_id.encode(), n), []).append(w)
                futures = await send_batched(self.producer, self.windows_topic, (
                    (p, None, v) for p, ws in by_part.items()
                    for v in encode_windows(ws, vocab=self.vocab, hold=hold, positions=pos)))
            else:  # partition count unknown: one-window bundles keyed by session id
                futures = [await self.producer.send(self.windows_topic, key=w.session_id.encode(), value=v)
                           for w in windows for v in encode_windows([w], vocab=self.vocab, hold=hold, positions=pos)]
            await asyncio.gather(*futures)
            if self.metrics is not None:
                reasons: dict[str, int] = {}
                for w in windows:
                    reasons[w.reason] = reasons.get(w.reason, 0) + 1
                for reason, k in reasons.items():
                    self.metrics.windows.labels(reason).inc(k)

    @property
    def hold(self) -> str:
        """The input guard's problem while any raw partition's last bundle reported one ("" = none):
        windows emitted now are held (scored, not alerted)."""
        return min(self.holds.values()) if self.holds else ""

    def set_hold(self, rp: str, problem: str) -> None:
        if problem:
            if self.holds.get(rp) != problem:
                log.warning("windows held from now on: the input guard reports %r on %s (alerts resume when "
                          "it recovers)", problem, rp)
            self.holds[rp] = problem
        elif self.holds.pop(rp, None):
            log.warning("input guard recovered on %s: windows are alerted again", rp)

    async def on_bundle(self, rp: str, sessions: list[tuple], partition: int, offset: int,
                        now: float | None = None, clock: float | None = None, hold: str = ""
                        ) -> tuple[list[Window], list[tuple[str, list, Exception]]]:
        """A bundle record (every session of one events partition from one ingest batch) as ONE unit:
        apply all -> produce the windows -> await acks -> write each changed session once.

        Returns (windows, failures). If applying raises (a bug, or input we did not foresee), the
        unit is dropped and redone session by session, so one bad session cannot sink the others;
        failures are (session id, its events, the error) for the caller to dead-letter.

        Sessions are (id, tids, times, positions, arrival time of the last one | None), as
        streams.codec.decode_events_columns gives them; the arrival time is the session's last
        activity (else `now`, else the wall clock). `clock`: the bundle's input clock; `hold`: its
        input guard verdict on rp (applies to the windows this bundle closes, and after). Failures
        carry the session's events as rows."""
        async with self.lock:
            self.set_hold(rp, hold)
            dup = self.proc.duplicates
            self.proc.window_pos = {}  # (a unit that failed half-way may have left some)
            t = time.time() if now is None else now
            windows: list[Window] = []
            failures: list[tuple[str, list, Exception]] = []
            try:
                apply = self.proc.apply_columns
                for sid, tids, tss, poss, arrival in sessions:
                    windows += apply(sid, rp, tids, tss, poss, t if arrival is None else arrival)
            except Exception:
                self.proc.store.discard()
                self.proc.duplicates = dup
                self.proc.window_pos = {}
                log.exception("events bundle %d@%d failed; applying it session by session", partition, offset)
                windows = []
                for sid, tids, tss, poss, arrival in sessions:
                    try:
                        ws = self.proc.apply_columns(sid, rp, tids, tss, poss, t if arrival is None else arrival)
                    except Exception as e:  # noqa: PERF203 (rare path)
                        self.proc.store.discard()
                        self.proc.window_pos = {}
                        failures.append((sid, to_rows(tids, tss, poss), e))
                        continue
                    await self._unit(ws)
                    windows += ws
            else:
                await self._unit(windows)
            self.processed_end[partition] = offset + 1
            if clock is not None and clock > self.clocks.get((rp, partition), float("-inf")):
                self.clocks[(rp, partition)] = clock
            if self.metrics is not None:
                self.metrics.session_records.inc()
                if self.proc.duplicates != dup:
                    self.metrics.duplicates.inc(self.proc.duplicates - dup)
            return windows, failures

    async def _unit(self, windows: list[Window]) -> None:
        """Produce `windows`, await their acks, then write the buffered state (nothing on failure)."""
        try:
            await self._emit(windows)
        except BaseException:
            self.proc.store.discard()  # nothing persisted: a re-delivery redoes it all
            raise
        self.proc.store.flush()
        await self._drain()

    async def _drain(self) -> None:
        drain = getattr(self.proc.store.table, "drain", None)  # ChangelogTable: send the changelog writes
        if drain is not None:
            await drain()

    def input_clock(self, partitions: list[int]) -> float | None:
        """The input time up to which every raw partition has been applied in every events partition
        of `partitions` (min over them); None until each of them has a clock."""
        rps = {rp for rp, _ in self.clocks}
        if not partitions or not rps:
            return None
        clocks = [self.clocks.get((rp, p)) for rp in rps for p in partitions]
        return None if any(c is None for c in clocks) else min(clocks)  # type: ignore[type-var]

    def mark_processed(self, partition: int, offset: int) -> None:
        self.processed_end[partition] = max(self.processed_end.get(partition, 0), offset + 1)

    async def sweep(self, now: float, final: bool) -> list[Window]:
        """Close every session idle at `now`, SWEEP_CHUNK sessions per unit of work (close ->
        produce -> acks -> state): at the end of a replay tens of thousands close at once, and the
        scorer can score the first chunk while the next is closed, instead of waiting for all."""
        out: list[Window] = []
        done = False
        while not done:
            async with self.lock:
                self.proc.window_pos = {}
                try:
                    windows, done = self.proc.sweep_some(now, final, SWEEP_CHUNK)
                    await self._emit(windows)
                except BaseException:
                    self.proc.store.discard()
                    raise
                self.proc.store.flush()
                await self._drain()
            out += windows
        return out

    def lag_free(self, end: dict[int, int], committed: dict[int, int]) -> bool:
        """Every events record that exists in our partitions has been handled."""
        return all(max(self.processed_end.get(p, 0), committed.get(p, 0)) >= e for p, e in end.items())

    def all_committed(self, committed: dict[int, int]) -> bool:
        """Every record handled in this run is covered by a committed offset (no re-delivery possible)."""
        return all(committed.get(p, 0) >= o for p, o in self.processed_end.items())
