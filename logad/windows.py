"""Sessions and windows: the one rule that offline training, offline detection and the stream share.

A session is the ordered events of one session key (HDFS block, OpenStack VM instance). It is cut into
sliding windows of at most `length` events with step `stride`:

    window 0 : events [0, L)                    every event scored (the model sees BOS first)
    window j : events [j*S, j*S + L)            only the last S events scored; the first L - S are
                                                context that window j-1 already scored

so every event is scored exactly once with up to L - S events of left context, whatever the session
length. A session that closes (gap, terminal event, idle timer, end of input, eviction) emits the
tail window if it holds unscored events. `plan_windows` is the offline form of the rule;
`SessionWindower` is the incremental form used by `logad detect` and the streaming session agent.
Both produce identical windows for the same event sequence (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from logad.errors import ConfigError
from logad.records import Window


# Why a window closed decides how its template counts are judged. These reasons mean the trace is
# whole (a terminal event, an event-time gap, a full sliding window, a complete trace from a sequence
# file): its count vector is compared with whole normal ones. Any other close (idle timer, end of
# input, eviction, caps) may have cut the session short, so only templates it has *too many* of
# count: a cut normal session must not look anomalous just because it stopped (a block cut by the
# end of a log sample, or by an idle timeout, is not a failed block).
COMPLETE_REASONS = frozenset({"terminal", "gap", "max_length", "complete"})
# An early probe: the events of a session that is still open, scored before it closes (early alerts).
# Never complete, so only the prefix-safe scores judge it, and never final: the window that closes the
# session is scored again and makes the decision at close.
PROBE = "open"


def is_complete(reason: str) -> bool:
    return reason in COMPLETE_REASONS


@dataclass(frozen=True)
class WindowRule:
    length: int = 64  # L: events per window (the model adds BOS to the first window of a session)
    stride: int = 32  # S: new events per sliding window; L - S events of context are carried over

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ConfigError(f"window length must be >= 2, got {self.length}")
        if not 1 <= self.stride <= self.length:
            raise ConfigError(f"window stride must be in [1, length={self.length}], got {self.stride}")

    def n_context(self, start: int) -> int:
        """Leading events of the window starting at `start` that only serve as context."""
        return 0 if start == 0 else self.length - self.stride


def plan_windows(n: int, rule: WindowRule) -> list[tuple[int, int, int]]:
    """(start, end, n_context) of every window of a session with n events."""
    if n <= 0:
        return []
    spans = [(0, min(n, rule.length), 0)]
    start = rule.stride
    while start + rule.n_context(start) < n:
        spans.append((start, min(n, start + rule.length), rule.n_context(start)))
        start += rule.stride
    return spans


def windows_of(
    source: str,
    session_id: str,
    ids: Sequence[int],
    rule: WindowRule,
    timestamps: Sequence[float | None] | None = None,
    reason: str = "end",
) -> list[Window]:
    """All windows of a complete session (offline form of the rule)."""
    out = []
    spans = plan_windows(len(ids), rule)
    for k, (a, b, ctx) in enumerate(spans):
        last = k == len(spans) - 1
        out.append(Window(
            source=source, session_id=session_id, start=a, ids=tuple(ids[a:b]), n_context=ctx,
            first_ts=timestamps[a + ctx] if timestamps else None,
            last_ts=timestamps[b - 1] if timestamps else None,
            reason=reason if last else "max_length", final=last, n_lines=b - a - ctx,
        ))
    return out


class SessionWindower:
    """Incremental window state of one session: push events, get windows as they close.

    Keeps at most `rule.length` events, so memory per session is bounded whatever its length.
    State is plain, JSON-friendly data (`to_state` / `from_state`) so a Faust table can persist it,
    and compact, because a worker holds up to a million of them (see `to_state`).
    """

    __slots__ = ("source", "session_id", "rule", "n", "start", "ids", "ts")

    def __init__(self, source: str, session_id: str, rule: WindowRule) -> None:
        self.source = source
        self.session_id = session_id
        self.rule = rule
        self.n = 0  # events pushed so far
        self.start = 0  # start index (in the session) of the window being filled
        self.ids: list[int] = []  # (<= L,) template ids of events [start, n)
        self.ts: list[float | None] = []  # their event times

    def push(self, template_id: int, ts: float | None) -> Window | None:
        """Add one event; returns the window it completes (reason max_length), if any."""
        self.ids.append(template_id)
        self.ts.append(ts)
        self.n += 1
        if len(self.ids) < self.rule.length:
            return None
        window = self._window(self.n, "max_length", final=False)
        # Slide: keep the last L - S events as the next window's context.
        drop = self.rule.stride
        self.ids = self.ids[drop:]
        self.ts = self.ts[drop:]
        self.start += drop
        return window

    def close(self, reason: str) -> Window | None:
        """Session ends: the tail window if it holds events not scored yet."""
        ctx = self.rule.n_context(self.start)
        if self.n <= self.start + ctx:
            return None
        return self._window(self.n, reason, final=True)

    def probe(self) -> Window | None:
        """The open window as it stands (reason PROBE, not final), if it holds unscored events: what
        an early, incremental score looks at. Changes nothing."""
        if self.pending() <= 0:
            return None
        return self._window(self.n, PROBE, final=False)

    def pending(self) -> int:
        """Events pushed but not yet scored (what an early, incremental score would look at)."""
        return self.n - self.start - self.rule.n_context(self.start)

    def _window(self, end: int, reason: str, final: bool) -> Window:
        ctx = self.rule.n_context(self.start)
        return Window(
            source=self.source, session_id=self.session_id, start=self.start,
            ids=tuple(self.ids[: end - self.start]), n_context=ctx,
            first_ts=self.ts[ctx], last_ts=self.ts[end - self.start - 1],
            reason=reason, final=final, n_lines=end - self.start - ctx,
        )

    def to_state(self) -> tuple:
        """(n, start, ids, ts_base, ts_rest): exact, JSON-friendly and small (a 12-event HDFS session
        is ~90 bytes of JSON and ~250 bytes in memory, instead of ~270 and ~600 as a dict of lists).

        ids      a str with one character per template id, chr(CHAR_BASE + id) (printable ASCII for
                 ids < 79, so JSON keeps one byte each), or a list of ints for ids that do not fit
        ts_base, ts_rest
                 None, None       every event time is None (or no events)
                 base, str        event time k is base + ord(ts_rest[k]) - CHAR_BASE: whole-second
                                  offsets, checked to round-trip exactly
                 None, list       anything else: the event times as they are
        """
        return (self.n, self.start, pack_ids(self.ids), *_pack_ts(self.ts))

    @staticmethod
    def close_state(source: str, session_id: str, rule: WindowRule, state, reason: str) -> Window | None:
        """from_state(...).close(reason) without rebuilding the windower: the tail window straight
        from the compact state (a sweep closes most sessions; only two event times are needed)."""
        n, start, ids, base, rest = state[:5]
        ctx = rule.n_context(start)
        if n <= start + ctx:
            return None
        last = n - start - 1  # index of the last event in the window
        if rest is None:
            first_ts = last_ts = None
        elif isinstance(rest, str):
            first_ts, last_ts = base + (ord(rest[ctx]) - CHAR_BASE), base + (ord(rest[last]) - CHAR_BASE)
        else:
            first_ts, last_ts = rest[ctx], rest[last]
        return Window(source=source, session_id=session_id, start=start, ids=tuple(unpack_ids(ids)),
                      n_context=ctx, first_ts=first_ts, last_ts=last_ts, reason=reason, final=True,
                      n_lines=n - start - ctx)

    @classmethod
    def from_state(cls, source: str, session_id: str, rule: WindowRule, state) -> SessionWindower:
        """Inverse of to_state (the compact tuple, or the list JSON makes of it)."""
        w = cls(source, session_id, rule)
        n, start, ids, base, rest = state[:5]
        w.n, w.start = n, start
        w.ids = unpack_ids(ids)
        w.ts = _unpack_ts(base, rest, len(w.ids))
        return w


CHAR_BASE = 0x30  # ids and offsets are stored as chr(CHAR_BASE + value): "0" is 0 (no JSON escapes)
_MAX_CHAR = 0xD800 - CHAR_BASE  # values must stay below the surrogate range (not valid in UTF-8)
# Values below BYTE_MAX are one Latin-1 character each: then the string <-> ints conversions are
# bytes.translate calls (C) instead of a chr()/ord() per value. Same strings either way.
BYTE_MAX = 0x100 - CHAR_BASE
_TO_CHARS = bytes((b + CHAR_BASE) & 0xFF for b in range(256))  # value byte -> its character's byte
_FROM_CHARS = bytes((b - CHAR_BASE) & 0xFF for b in range(256))  # character byte -> its value


def pack_ids(ids: list[int]) -> str | list[int]:
    """Template ids -> one character each, chr(CHAR_BASE + id), or the list itself when an id does
    not fit (negative, too large, not an int)."""
    if not ids:
        return ""
    try:
        if bool not in set(map(type, ids)):
            chars = id_chars(ids)  # bytes() rejects non-ints
            if chars is not None:
                return chars
    except TypeError:
        return list(ids)
    if all(type(i) is int and 0 <= i < _MAX_CHAR for i in ids):
        return "".join([chr(CHAR_BASE + i) for i in ids])
    return list(ids)


def unpack_ids(ids: str | list[int]) -> list[int]:
    """Inverse of pack_ids."""
    if not isinstance(ids, str):
        return list(ids)
    try:
        return list(ids.encode("latin-1").translate(_FROM_CHARS))
    except UnicodeEncodeError:  # an id >= BYTE_MAX
        return [ord(c) - CHAR_BASE for c in ids]


def id_chars(tids: list[int]) -> str | None:
    """pack_ids for ids known to be ints (a fast path): None unless every id is in [0, BYTE_MAX)."""
    if min(tids) < 0 or max(tids) >= BYTE_MAX:
        return None
    return bytes(tids).translate(_TO_CHARS).decode("latin-1")


def ts_chars(base: float, ts: list[float]) -> str | None:
    """The compact offsets of event times `ts` from `base` (see to_state), or None when one of them
    has no exact whole-second offset (then the state keeps the times as a list)."""
    out = []
    for t in ts:
        if type(t) is not float:
            return None
        d = t - base
        k = int(d) if 0.0 <= d < _MAX_CHAR else -1
        if k < 0 or base + k != t:
            return None
        out.append(chr(CHAR_BASE + k))
    return "".join(out)


def _pack_ts(ts: list[float | None]) -> tuple[float | None, str | list | None]:
    """Event times -> (base, rest) as described in SessionWindower.to_state (exact round trip)."""
    if not ts or all(t is None for t in ts):
        return None, None
    base = ts[0]
    if type(base) is float and base > 0.0:  # (epoch seconds; also keeps -0.0 out of the offsets)
        rest = ts_chars(base, ts)  # None: not a whole, small, exactly representable offset
        if rest is not None:
            return base, rest
    return None, list(ts)


def _unpack_ts(base: float | None, rest: str | list | None, n: int) -> list[float | None]:
    if rest is None:
        return [None] * n
    if isinstance(rest, str):
        try:
            offsets: list[int] | bytes = rest.encode("latin-1").translate(_FROM_CHARS)
        except UnicodeEncodeError:  # an offset >= BYTE_MAX seconds
            offsets = [ord(c) - CHAR_BASE for c in rest]
        return [base + k for k in offsets]
    return list(rest)
