"""The session table as the Sessionizer sees it: watermarks, tombstones and buffered writes.

    Faust table (bytes -> bytes)  <-  BytesTable / ChangelogTable (orjson values; the changelog written
                                      by the worker itself, in per-partition batches)
                                  <-  SessionStore (what logad.session_rules.Sessionizer reads and writes)

SessionStore
  * wraps each table value as [sessionizer state, raw partition, last applied pos, ...[, raw positions
    of the pending events, streams/positions.py]] (a flat
    tuple: a worker holds up to a million of them), so a record re-delivered after a crash (ingest
    re-reads its uncommitted batch; the agent re-reads its uncommitted events) is not applied twice:
    its events are at or below the watermark;
  * keeps a tombstone [null, rp, pos, ...] for a closed session until every event before the close
    is committed everywhere (or, on a stream that never pauses, for streams.session_processor.TOMBSTONE_TTL_S
    of input time), so a late re-delivery cannot re-open it with old events;
  * buffers writes until `flush()`: windows are produced and acknowledged first, then the state is
    written, so a crash in between re-emits the same windows (same alert ids, deduped downstream)
    instead of losing them; a table value is decoded once per unit of work.
Values are reassigned, never mutated in place (a Faust table persists assignments only).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import orjson

from streams.kafka_clients import key_partition as partition_of, send_batched

def wrap(state: Any, wm: dict[str, int], positions: list | None = None) -> tuple:
    """Table value of a session: (state or None for a tombstone, rp1, pos1, rp2, pos2, ...[, raw
    positions of its pending events, streams/positions.py packed]): an even length means the last
    item is the positions (kept only while alerts quote raw lines, scorer.evidence_lines)."""
    tail = (positions,) if positions else ()
    if not wm:
        return (state, *tail)
    if len(wm) == 1:
        (rp, pos), = wm.items()
        return (state, rp, pos, *tail)
    out: list[Any] = [state]
    for rp, pos in wm.items():
        out += (rp, pos)
    return (*out, *tail)


def positions_of(value: Any) -> list | None:
    """The packed raw positions of a table value's pending events (None: none kept)."""
    if value is None or len(value) % 2:
        return None
    return value[-1]


def with_positions(value: tuple, positions: list | None) -> tuple:
    """The table value with its packed positions replaced (None: dropped)."""
    base = value if len(value) % 2 else value[:-1]
    return base + (positions,) if positions else base


def state_of(value: Any) -> Any:
    """The sessionizer state in a table value (None: a tombstone)."""
    return value[0]


def watermark_of(value: Any) -> dict[str, int]:
    """{raw partition: last applied position} of a table value."""
    return {value[i]: value[i + 1] for i in range(1, len(value) - 1, 2)}


def drop_keys(table: MutableMapping, keep: Callable[[str], bool]) -> int:
    """Delete the keys (str, or UTF-8 bytes) of `table` that `keep` refuses; returns how many."""
    gone = [k for k in list(table.keys()) if not keep(k.decode("utf-8", "replace") if isinstance(k, bytes) else k)]
    for k in gone:
        del table[k]
    return len(gone)


class BytesTable(MutableMapping[str, Any]):
    """A str -> JSON-value view over a Faust table with raw bytes keys and values.

    Faust derives a table's changelog serializers from key_type/value_type and falls back to JSON,
    whose key bytes (b'"blk_1"') hash to another partition than the events record key (b"blk_1"):
    the table would not be co-partitioned with its stream. With key_type=value_type=bytes the
    changelog carries exactly our bytes: key = session id (UTF-8), value = orjson of the value.
    """

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table

    def __getitem__(self, key: str) -> Any:
        return orjson.loads(self.table[key.encode()])

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.table.get(key.encode())
        return default if raw is None else orjson.loads(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        # A copy: orjson (3.x) returns bytes that keep its ~4 KiB output buffer allocated; kept in
        # the table, that is 4 KiB per open session (4 GiB at a million). b"%b" % x is exact-size.
        self.table[key.encode()] = b"%b" % orjson.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.encode() in self.table

    def __iter__(self) -> Iterator[str]:
        for k in list(self.table.keys()):
            yield k.decode("utf-8", "replace") if isinstance(k, bytes) else k

    def __len__(self) -> int:
        return len(self.table)

    def forget(self, keep: Callable[[str], bool]) -> int:
        """Delete from the underlying dict the keys `keep` refuses, writing nothing anywhere else
        (for a ChangelogTable: no changelog record); returns how many."""
        return drop_keys(self.table, keep)

    def tombstone_keys(self) -> list[str]:
        """Keys whose value is a tombstone ([null, ...], see SessionStore), found on the raw bytes:
        no JSON decode of the live sessions (a purge used to decode every open session)."""
        return [k.decode("utf-8", "replace") if isinstance(k, bytes) else k
                for k, v in list(self.table.items()) if v is not None and v.startswith(b"[null")]


class ChangelogTable(BytesTable):
    """BytesTable over a Faust table whose changelog this class writes itself.

    Faust's own path costs ~50-100 us per changed key (changelog record built through its Topic,
    buffer and sensors: measured ~40% of the worker at 100 lines per record). Here a write sets the
    in-memory store directly and queues (key, value); `drain()` sends the queue with the worker's
    aiokafka producer to the table's changelog topic (same key bytes, same partition as Faust would
    choose, None = delete), in per-partition batches, without waiting; `settled()` waits for every
    send so far and raises if one failed. The worker gates Faust's offset commits on `settled()`
    (streams/app.py), so an events offset is never committed ahead of the state it produced: the
    guarantee Faust's own flush-before-commit gives. Recovery is Faust's, unchanged (it replays the
    changelog topic into the memory store)."""

    def __init__(self, table: Any, topic: str, partitions: int) -> None:
        from streams.faust_compat import memory_store_dict

        # Reads (BytesTable's) and writes go to the memory store's dict directly; writes are also
        # queued for drain().
        super().__init__(memory_store_dict(table))
        self.topic = topic
        self.partitions = partitions
        self.producer: Any = None
        self.queued: list[tuple[bytes, bytes | None]] = []
        self.in_flight: list[Any] = []  # delivery futures of changelog batches not yet known acknowledged

    def __setitem__(self, key: str, value: Any) -> None:
        k, v = key.encode(), b"%b" % orjson.dumps(value)  # exact-size copy (see BytesTable)
        self.table[k] = v
        self.queued.append((k, v))

    def __delitem__(self, key: str) -> None:
        k = key.encode()
        del self.table[k]
        self.queued.append((k, None))

    async def drain(self) -> None:
        """Send every queued change to the changelog (acks are awaited by `settled`)."""
        if not self.queued:
            return
        queued, self.queued = self.queued, []
        n = self.partitions
        self.in_flight += await send_batched(self.producer, self.topic,
                                             ((partition_of(k, n), k, v) for k, v in queued))
        if len(self.in_flight) > 256:  # keep the list short: drop what is already acknowledged
            failed = [f for f in self.in_flight if f.done() and (f.cancelled() or f.exception() is not None)]
            self.in_flight = failed + [f for f in self.in_flight if not f.done()]

    async def settled(self) -> None:
        """Every changelog write sent so far is acknowledged (raises the first failure)."""
        pending, self.in_flight = self.in_flight, []
        try:
            await asyncio.gather(*pending)
        except BaseException:
            self.in_flight = pending + self.in_flight  # still unsettled: the next call raises again
            raise


_MISSING = object()


def _live(value: Any) -> bool:
    return value is not None and state_of(value) is not None


class SessionStore(MutableMapping[str, Any]):
    """The Sessionizer's view of the session table (see the module docstring)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self._pending: dict[str, tuple | None] = {}  # key -> wrapped value to write, None = delete
        self._read: dict[str, Any] = {}  # key -> its table value, decoded once per unit of work
        self._wm: dict[str, dict[str, int]] = {}  # watermarks changed since the last flush
        self._delta = 0  # live sessions added - removed by pending writes (keeps len() O(1))
        self._was_tomb: dict[str, bool] = {}  # pending key -> its table value is a tombstone
        self._tombs: int | None = None  # tombstones in the table (counted on first use, then tracked)
        self.tombstones_final = False  # True: closes delete outright (everything is committed)
        self.owned: Callable[[str], bool] | None = None  # sweep filter: keys of our partitions only
        self.clock = 0.0  # input time of the change being made (set by SessionProcessor)
        self._tomb_times: deque[tuple[float, str]] = deque()  # (input time of the close, key), oldest first
        self._tombs_scanned = False  # tombstones recovered from the changelog are queued at the first purge
        # key -> packed positions of the sessions closed in this unit (None: positions are not kept)
        self.closed_positions: dict[str, list | None] | None = None

    # -- raw access ------------------------------------------------------------------------------
    def _stored(self, key: str) -> Any:
        """The table's value of `key` (a BytesTable decodes JSON on every read: read once per unit;
        the watermark check, the sessionizer and the write bookkeeping all look at it)."""
        v = self._read.get(key, _MISSING)
        if v is _MISSING:
            v = self._read[key] = self.table.get(key)
        return v

    def _raw(self, key: str, cache: bool = True) -> Any:
        v = self._pending.get(key, _MISSING)
        if v is not _MISSING:
            return v
        if not cache and key not in self._read:  # a scan (items(): evictions, close_all): no cache
            return self.table.get(key)
        return self._stored(key)

    def _put(self, key: str, value: tuple | None) -> None:
        pending = self._pending
        before = pending.get(key, _MISSING)
        if before is _MISSING:
            before = self._stored(key)
            self._was_tomb[key] = before is not None and state_of(before) is None
        pending[key] = value
        self._delta += (value is not None and value[0] is not None) - _live(before)

    def applied(self, key: str, rp: str) -> int:
        """The last position of raw partition `rp` applied to `key` (-1: none); no dict is built
        for the usual value of one raw partition."""
        wm = self._wm.get(key)
        if wm is not None:
            return wm.get(rp, -1)
        raw = self._raw(key)
        if not raw:
            return -1
        if len(raw) == 3 or len(raw) == 4:  # one raw partition (and maybe positions)
            return raw[2] if raw[1] == rp else -1
        return watermark_of(raw).get(rp, -1)

    def watermark(self, key: str) -> dict[str, int]:
        if key in self._wm:
            return self._wm[key]
        raw = self._raw(key)
        return watermark_of(raw) if raw else {}

    def set_watermark(self, key: str, rp: str, pos: int, written: bool = False) -> None:
        """Raise the watermark of (key, rp) to pos. `written`: the caller writes or deletes the key
        in this unit anyway (which carries the watermark), so the stored value is not rewritten."""
        wm = self.watermark(key)
        wm[rp] = pos
        self._wm[key] = wm
        if not written:
            raw = self._raw(key)
            if raw is not None:  # keep the stored value's watermark in step (tombstone or live)
                self._put(key, wrap(state_of(raw), wm, positions_of(raw)))

    # -- MutableMapping (what the Sessionizer sees: live sessions only) ----------------------------
    def __getitem__(self, key: str) -> Any:
        raw = self._raw(key, cache=False)
        state = None if raw is None else state_of(raw)
        if state is None:
            raise KeyError(key)
        return state

    def get(self, key: str, default: Any = None) -> Any:  # the Sessionizer's hot path: no KeyError
        raw = self._raw(key)
        if raw is None:
            return default
        state = raw[0]
        return default if state is None else state

    def __setitem__(self, key: str, state: Any) -> None:
        self._put(key, wrap(state, self.watermark(key), positions_of(self._raw(key))))

    def value(self, key: str) -> Any:
        """The session's table value as it stands in this unit (see wrap; None: none)."""
        return self._raw(key)

    def set_positions(self, key: str, packed: list | None) -> None:
        """Keep `packed` with the open session `key` (written with its state at flush)."""
        raw = self._pending.get(key)
        if raw is not None and raw[0] is not None:  # written in this unit: swap the positions in place
            self._pending[key] = with_positions(raw, packed)
            return
        raw = self._raw(key)
        if raw is not None and state_of(raw) is not None and positions_of(raw) != packed:
            self._put(key, wrap(state_of(raw), self.watermark(key), packed))

    def __delitem__(self, key: str) -> None:
        raw = self._raw(key)
        if raw is None:
            raise KeyError(key)
        if self.closed_positions is not None:  # the closing window's scored events are the kept ones
            self.closed_positions[key] = positions_of(raw)
        if not self.tombstones_final:
            wm = self.watermark(key)
            if wm:
                self._put(key, wrap(None, wm))
                self._tomb_times.append((self.clock, key))
                return
        self._put(key, None)

    def __iter__(self) -> Iterator[str]:
        owned = self.owned
        for key in list(self.table.keys()):
            if key in self._pending:
                continue
            v = self.table.get(key)
            if v is not None and state_of(v) is not None and (owned is None or owned(key)):
                yield key
        for key, v in list(self._pending.items()):
            if v is not None and state_of(v) is not None and (owned is None or owned(key)):
                yield key

    def __len__(self) -> int:
        """Open sessions, O(1): table keys - tombstones + pending changes. (Tombstones that a
        rebalance brings in count as open until the next purge: an upper bound, never below.)"""
        if self._tombs is None:
            self._tombs = len(self._tombstone_keys())
        return len(self.table) - self._tombs + self._delta

    # -- batching --------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write the buffered changes to the table (one assignment per key); returns how many."""
        n = 0
        was_tomb = self._was_tomb
        tombs = 0
        for key, value in self._pending.items():
            if value is None:
                if key in self.table:
                    del self.table[key]
                    n += 1
            else:
                self.table[key] = value  # reassign: the changelog records assignments
                n += 1
                tombs += state_of(value) is None
            tombs -= was_tomb.get(key, False)
        if self._tombs is not None:
            self._tombs += tombs
        self.discard()
        return n

    def discard(self) -> None:
        if self.closed_positions:
            self.closed_positions.clear()
        self._pending.clear()
        self._read.clear()
        self._wm.clear()
        self._was_tomb.clear()
        self._delta = 0

    def _tombstone_keys(self) -> list[str]:
        scan = getattr(self.table, "tombstone_keys", None)  # BytesTable: on the raw bytes
        if scan is not None:
            return scan()
        return [k for k, v in list(self.table.items()) if v is not None and state_of(v) is None]

    def forget(self, owned: Callable[[str], bool]) -> int:
        """Forget, in this process only, every value (live session or tombstone) whose key `owned`
        refuses: the sessions of events partitions another worker holds after a rebalance. Their
        changelog records stay (the new owner recovered them from there). Between units of work
        only (nothing buffered). Returns how many keys went."""
        self.discard()
        forget = getattr(self.table, "forget", None)  # BytesTable / ChangelogTable: the raw dict
        n = forget(owned) if forget is not None else drop_keys(self.table, owned)  # a plain dict: memory only
        self._tomb_times = deque((t, k) for t, k in self._tomb_times if owned(k))
        self.rescan()
        return n

    def rescan(self) -> None:
        """Values came in behind the store's back (a rebalance recovered other partitions): count
        the tombstones again at the next use, and queue the recovered ones for the age purge."""
        self._tombs = None
        self._tombs_scanned = False

    def purge_tombstones(self) -> int:
        """Delete every tombstone (call only when nothing before them can be re-delivered)."""
        if self._tombs == 0 and not any(v is not None and state_of(v) is None for v in self._pending.values()):
            return 0  # none in the table, none pending: no scan of every open session (each caught-up tick)
        dead = self._tombstone_keys()
        self._tombs = len(dead)  # exact again (flush takes the purged ones off)
        for k in dead:
            self._put(k, None)
        return len(dead)

    def purge_tombstones_before(self, t: float) -> int:
        """Delete tombstones whose session closed before input time `t` (see TOMBSTONE_TTL_S)."""
        if not self._tombs_scanned:  # recovered ones: their close time is unknown, count it as now
            self._tombs_scanned = True
            known = {k for _, k in self._tomb_times}
            self._tomb_times.extend((self.clock, k) for k in self._tombstone_keys() if k not in known)
        n = 0
        q = self._tomb_times
        while q and q[0][0] < t:
            _, key = q.popleft()
            raw = self._raw(key)
            if raw is not None and state_of(raw) is None:  # still a tombstone (not re-opened, not purged)
                self._put(key, None)
                n += 1
        return n

    def count_open(self) -> int:
        return sum(1 for _ in self)
