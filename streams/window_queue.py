"""The scorer's intake: windows records -> Outcomes (one per window) -> a bounded queue -> batches.

    windows record (a bundle, streams/codec.py) --unpack_record--> [Outcome, ...]   (a record that
        cannot be decoded, or whose vocab fingerprint is not the scorer's: one failed Outcome; a
        malformed window of a bundle: a failed one in its place; each carries the record's `hold`)
    WindowQueue: one entry per record, bounded in windows; take(limit) -> up to `limit` windows
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from logad.records import Window, WindowScore
from streams.codec import CodecError, decode_windows_bundle


@dataclass(slots=True)
class Outcome:
    """One window of a windows record (or the whole record, when it cannot be decoded)."""

    record: Any  # the consumer record
    window: Window | None
    score: WindowScore | None = None
    error: str = ""  # why it went to the dead letter
    last: bool = True  # the record's last window: settling it lets the commit pass the record
    index: int | None = None  # position in a bundle (for the dead letter)
    hold: str = ""  # the input guard's problem when the worker emitted it: scored, published, never alerted
    pos: list | None = None  # packed raw positions of its scored events (streams/positions.py), when sent
    vocab: str = ""  # the record's vocab fingerprint: which of the scorer's bundles scores it


def unpack(records: list[Any], vocab: str | Collection[str]) -> list[Outcome]:
    """Windows records -> one Outcome per window (a record that cannot be decoded: one, failed)."""
    out: list[Outcome] = []
    for r in records:
        out += unpack_record(r, vocab)
    return out


def unpack_record(r: Any, vocab: str | Collection[str]) -> list[Outcome]:
    """One windows record -> its windows' Outcomes, in order (the last one has last=True).
    `vocab`: the vocab fingerprints the scorer has a bundle for (streams.codec.vocab_tag; while a
    new bundle rolls out, the previous one's too); a record stamped with another one (or none) is
    one failed Outcome "vocab_mismatch": its template ids name the templates of another vocab, so
    no score of it would mean anything. Each Outcome carries its record's fingerprint."""
    try:
        items, tag, hold, poss = decode_windows_bundle(r.value)
    except CodecError as e:
        return [Outcome(r, None, error=f"bad_window: {e}")]
    known = (vocab,) if isinstance(vocab, str) else vocab
    if tag not in known:
        why = ("carries no vocab fingerprint" if not tag else
               f"has vocab fingerprint {tag[:32]!r}, this scorer's bundle {' or '.join(map(repr, sorted(known)))}")
        return [Outcome(r, None, error=f"vocab_mismatch: the windows record {why}: worker and scorer must "
                                       "run the same model bundle", vocab=tag)]
    out = [Outcome(r, w, last=False, hold=hold, pos=p, vocab=tag) for w, p in zip(items, poss)]
    out[-1].last = True
    if len(items) > 1:
        for i, w in enumerate(items):
            if isinstance(w, CodecError):
                out[i] = Outcome(r, None, error=f"bad_window: {w}", last=out[i].last, index=i, hold=hold)
    elif isinstance(items[0], CodecError):
        out[0] = Outcome(r, None, error=f"bad_window: {items[0]}")
    return out


class WindowQueue:
    """The bounded queue between the consumer and the batcher: one entry per decoded windows
    record (a list of Outcomes), bounded in windows (put waits while `maxsize` or more are
    waiting: a record is let in whole, so the queue can hold up to one record more). An
    asyncio.Queue of one entry per window cost a put and a get per window (~10% of the scorer's
    CPU on a burst of bundles); get() takes whole records, splitting one only at `limit`."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._items: deque[list[Outcome]] = deque()
        self._size = 0  # windows waiting
        self._ready = asyncio.Event()  # set while something waits
        self._room = asyncio.Event()  # set while fewer than maxsize windows wait
        self._room.set()

    def qsize(self) -> int:
        """Windows waiting (what the logad_scorer_queue gauge shows)."""
        return self._size

    def empty(self) -> bool:
        return not self._size

    async def put(self, outcomes: list[Outcome]) -> None:
        while self._size >= self.maxsize:
            await self._room.wait()
        self.put_nowait(outcomes)

    def put_nowait(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._items.append(outcomes)
            self._size += len(outcomes)
            self._ready.set()
            if self._size >= self.maxsize:
                self._room.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """Until something waits (True), or `timeout` seconds passed (False)."""
        if self._size:
            return True
        if timeout is None:
            await self._ready.wait()
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        return True

    def take(self, limit: int) -> list[Outcome]:
        """Up to `limit` waiting windows, oldest first (whole records while they fit)."""
        out: list[Outcome] = []
        items = self._items
        while items and len(out) < limit:
            head = items[0]
            room = limit - len(out)
            if len(head) <= room:
                out += items.popleft()
            else:  # split: the rest of the record stays first in line
                out += head[:room]
                items[0] = head[room:]
        self._size -= len(out)
        if not self._size:
            self._ready.clear()
        if self._size < self.maxsize:
            self._room.set()
        return out
