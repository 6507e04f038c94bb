"""Raw positions of a window's events, so that an alert can quote the raw lines behind it.

Shapes (the same on the windows wire and in the session table):

    packed   [rp, e, e, ..., rp2, e, ...]: a raw partition name ("logs.hdfs/0"), then one int per
             event of that partition, in event order, from the offset DELTA d to the previous
             event's offset (from 0 after a partition name) and the event's line index in its
             record: d when the line is 0, else -(d * 2**20 + line). A replay of one line per record
             gives small ints (HDFS blocks: a few bytes per event instead of a 12-digit position),
             and the next lines of one record small negative ones; ints only, no nested lists
             (a session table value holding them is read back by orjson at every touch).
    unpacked [(rp, position), ...] with position = streams.codec.position(offset, line)

Only the events a window SCORES travel (its last n_lines events: the context events were scored,
and quoted, by the window before). The session keeps the positions of its scored-but-not-yet-sent
events only ([start + n_context, n) of the open window: at most a window's length, usually a
sliding window's stride), next to its compact state (streams/session_table.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from logad.records import Window
from streams.codec import LINE_BITS, MAX_LINES_PER_RECORD

Positions = list[tuple[str, int]]  # [(raw partition, position), ...]


def pack(positions: Sequence[tuple[str, int]]) -> list:
    return _pack_onto([], positions, None, 0)


def append(packed: list, rp: str, poss: Sequence[int]) -> list:
    """pack(unpack(packed) + [(rp, p) for p in poss]) without unpacking: only the entries after
    packed's last partition name are read (their deltas sum to its last offset). A new list."""
    prev, i = 0, len(packed) - 1
    while i >= 0 and type(packed[i]) is not str:
        e = packed[i]
        prev += e if e >= 0 else -e >> LINE_BITS
        i -= 1
    return _pack_onto(packed.copy(), [(rp, p) for p in poss], packed[i] if i >= 0 else None, prev)


def _pack_onto(out: list, positions: Sequence[tuple[str, int]], rp: str | None, prev: int) -> list:
    """Pack `positions` after `out`, whose last partition is `rp` and last offset `prev`."""
    add = out.append
    mask = MAX_LINES_PER_RECORD - 1
    for p_rp, pos in positions:
        if p_rp != rp:
            add(p_rp)
            rp, prev = p_rp, 0
        offset, line = pos >> LINE_BITS, pos & mask
        add(offset - prev if not line else -(((offset - prev) << LINE_BITS) | line))
        prev = offset
    return out


def unpack(packed: Any) -> Positions:
    """Inverse of pack; ValueError (naming what is wrong) when `packed` is not that shape."""
    if not isinstance(packed, list):
        raise ValueError("positions must be a list")
    out: Positions = []
    append = out.append
    rp, prev = None, 0
    mask = MAX_LINES_PER_RECORD - 1
    for e in packed:
        t = type(e)
        if t is int and rp is not None:
            if e >= 0:  # line 0 of its record
                prev += e
                append((rp, prev << LINE_BITS))
            else:
                prev += -e >> LINE_BITS
                append((rp, (prev << LINE_BITS) | (-e & mask)))
        elif t is str:
            rp, prev = e, 0
        elif rp is None:
            raise ValueError("positions must start with a raw partition name")
        else:
            raise ValueError(f"bad position entry {str(e)[:40]}")
    return out


def pending(state: Any, rule: Any) -> int:
    """Events of a session's open window not scored yet: [start + n_context, n) of its state
    (logad.windows.SessionWindower.to_state; a dict state of older versions too)."""
    if isinstance(state, dict):
        n, start = state["n"], state["start"]
    else:
        n, start = state[0], state[1]
    return max(0, n - start - rule.n_context(start))


def window_positions(windows: Sequence[Window], ends: Sequence[int | None], kept: Positions,
                     fresh: Positions) -> list[Positions | None]:
    """Positions of the scored events of each window one push of `fresh` events closed.

    `kept`: the session's positions before the push (its pending events, see `pending`); `ends`:
    Sessionizer.window_ends (index in the fresh events of each window's last event, None for a
    window of another session). The events of the push and the kept ones form one sequence; a
    window's scored events are the n_lines ending at its last event. None: not known here."""
    seq = kept + fresh
    base = len(kept)
    out: list[Positions | None] = []
    for w, end in zip(windows, ends):
        if end is None:
            out.append(None)
            continue
        last = base + end
        first = last - w.n_lines + 1
        out.append(seq[first:last + 1] if first >= 0 else None)
    return out
