"""Sessionizer: templated events -> closed windows, over any mutable mapping of per-session state.

The same code runs offline (`logad detect`, a plain dict) and in the stream (a Faust Table backed
by a changelog topic). Closing rules, defined once:
* event-time gap: an event more than `gap_s` after the session's last event closes the old session
  ("gap") and starts a new one under the same key;
* terminal event: a template the format marks terminal closes the session after it ("terminal");
* max length: a session longer than the window length continues as sliding windows ("max_length");
* idle: `sweep(now)` closes sessions with no event for `idle_timeout_s` ("idle"), on the clock
  push was given (the stream's input clock: arrival times of the raw lines; offline runs never sweep);
* caps: more than `max_open_sessions` open -> the least recently active are closed ("evicted");
  a session reaching `max_events_per_session` is closed ("max_events") and restarts.
Events older than their session's last event are counted as late and kept in arrival order.
`push` applies these rules one event at a time and is the reference; `push_many` (a run of one
session's events: one state read, one write) and `push_columns` (the stream's columns; common runs
appended to the compact state without a windower) are its fast paths, tested equal to it.
State values are compact tuples (SessionWindower.to_state + last event time + last activity on
that clock; JSON-friendly, ~300 B each); they are reassigned after every change because a Faust
Table does not persist in-place mutation.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from operator import sub
from typing import Any

from logad.records import Window
from logad.windows import SessionWindower, WindowRule, id_chars, ts_chars


@dataclass(frozen=True)
class SessionRules:
    rule: WindowRule = field(default_factory=WindowRule)  # window length / stride (from the model)
    gap_s: float = 300.0  # event-time gap that closes a session
    idle_timeout_s: float = 30.0  # idle time (on the clock push and sweep are given) that closes a session
    max_open_sessions: int = 1_000_000  # cap on open sessions; least recently active evicted first
    max_events_per_session: int = 100_000  # a session reaching this many events is closed
    terminal_ids: frozenset[int] = frozenset()  # template ids that end a session


LAST_TS, SEEN = 5, 6  # state = (*SessionWindower.to_state(), last event time, last activity)


def last_ts_of(state) -> float | None:
    """Event time of the session's last event (None: its events have no time)."""
    return state[LAST_TS]


def seen_of(state) -> float:
    """When the session was last active, on the clock `push` was given."""
    return state[SEEN]


class Sessionizer:
    def __init__(self, source: str, rules: SessionRules,
                 store: MutableMapping[str, Any] | None = None) -> None:
        self.source = source
        self.rules = rules
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.counters: Counter[str] = Counter()  # closes by reason, late events, evictions
        # Activity index for sweep(): a heap of (last activity, key) with lazy deletion, and each
        # open session's last activity. Built by the first sweep (one scan), kept by _save/_close,
        # so a sweep costs O(sessions it closes), not O(open sessions). Offline runs never sweep.
        self._heap: list[tuple[float, str]] | None = None
        self._seen: dict[str, float] = {}
        # Per window the last push_many / push_columns returned: the index, in the events given, of
        # the window's last event (-1: an event before them; None: another session's window, closed
        # by an eviction). The stream maps windows to the raw positions of their events with it.
        self.window_ends: list[int | None] = []

    def _windower(self, key: str, state: Any) -> SessionWindower:
        if state is None:
            return SessionWindower(self.source, key, self.rules.rule)
        return SessionWindower.from_state(self.source, key, self.rules.rule, state)

    def _save(self, key: str, w: SessionWindower, last_ts: float | None, seen: float) -> tuple:
        state = (*w.to_state(), last_ts, seen)
        self.store[key] = state  # reassign: tables persist assignments, not mutation
        self._index(key, seen)
        return state

    def _index(self, key: str, seen: float) -> None:
        if self._heap is not None and self._seen.get(key) != seen:
            self._seen[key] = seen
            heapq.heappush(self._heap, (seen, key))

    def _close(self, key: str, state: Any, reason: str) -> Window | None:
        self.counters[f"closed_{reason}"] += 1
        window = SessionWindower.close_state(self.source, key, self.rules.rule, state, reason)
        del self.store[key]
        if self._heap is not None:
            self._seen.pop(key, None)
        return window

    def reindex(self) -> None:
        """(Re)build the activity index from the store: after a restart or a rebalance brought in
        sessions this object did not write (streams call `invalidate_index`; the next sweep rebuilds)."""
        self._seen = {k: seen_of(s) for k, s in list(self.store.items())}
        self._heap = [(t, k) for k, t in self._seen.items()]
        heapq.heapify(self._heap)

    def invalidate_index(self) -> None:
        self._heap = None
        self._seen = {}

    def push(self, key: str, template_id: int, ts: float | None, now: float) -> list[Window]:
        """One event of session `key` at event time `ts`, seen at `now` (the clock sweep() is given);
        returns the windows it closes.

        The reference implementation of the closing rules, one event at a time, as the module
        docstring states them: push_many and push_columns are its fast paths, held to the same
        windows, counters and stored states by tests/logad/test_windows.py."""
        rules = self.rules
        out: list[Window] = []
        state = self.store.get(key)
        if state is not None and ts is not None and state[LAST_TS] is not None:
            if ts - state[LAST_TS] > rules.gap_s:
                done = self._close(key, state, "gap")
                out += [done] if done is not None else []
                state = None
            elif ts < state[LAST_TS]:
                self.counters["late_events"] += 1
        if state is None:
            self.counters["opened"] += 1
            if len(self.store) >= rules.max_open_sessions:
                out += self._evict(now)
        w = self._windower(key, state)
        done = w.push(template_id, ts)
        out += [done] if done is not None else []
        last = None if state is None else state[LAST_TS]
        state = self._save(key, w, ts if last is None else last if ts is None else max(ts, last), now)
        if template_id in rules.terminal_ids:
            reason = "terminal"
        elif w.n >= rules.max_events_per_session:
            reason = "max_events"
        else:
            return out
        tail = self._close(key, state, reason)
        return out + [tail] if tail is not None else out

    def push_columns(self, key: str, tids: list[int], tss: list[float | None], now: float,
                     probe: bool = False) -> list[Window]:
        """push_many of events given as two columns (template ids, event times), the stream's shape.

        A fast path of `push` (the reference): the common run (an open session gets a few more
        events: no window fills, no gap, no terminal event, times in order) is appended to the
        compact state directly, without a SessionWindower: the same state, counters and (no)
        windows as one push per event, at a fraction of the cost. Anything else goes through
        push_many."""
        if not tids:
            self.window_ends = []
            return []
        if not probe and self._append(key, tids, tss, now):
            self.window_ends = []
            return []
        return self.push_many(key, list(zip(tids, tss)), now, probe)

    def _append(self, key: str, tids: list[int], tss: list[float | None], now: float) -> bool:
        """The fast path of push_columns; False (nothing changed) when it does not apply."""
        rules = self.rules
        store = self.store
        state = store.get(key)
        k = len(tids)
        if state is None:
            if len(store) >= rules.max_open_sessions:
                return False  # opening would evict
            n = start = 0
            ids, base, rest, last = "", None, None, None
        else:
            n, start, ids, base, rest, last = state[:SEEN]
            if type(ids) is not str:
                return False
        if len(ids) + k >= rules.rule.length or n + k >= rules.max_events_per_session:
            return False  # a window fills, or the events cap closes the session
        if rules.terminal_ids and not rules.terminal_ids.isdisjoint(tids):
            return False
        chars = id_chars(tids)
        if chars is None:
            return False
        t0 = tss[0]
        if t0 is None:  # no event times (sequence sources): nothing to pack, no gap, no lateness
            if rest is not None or tss.count(None) != k:
                return False
        else:
            if last is None:
                if ids:  # earlier events of this window had no time: the state keeps a list
                    return False
                if type(t0) is not float or not t0 > 0.0:
                    return False
                base, rest = t0, ""
            elif not (last <= t0 and t0 - last <= rules.gap_s) or type(rest) is not str:
                return False  # a gap closes the session, an earlier time is late, or times are a list
            more = ts_chars(base, tss)  # type: ignore[arg-type]
            if more is None:  # (also: a time that is None or not a float)
                return False
            if k > 1:
                steps = list(map(sub, tss[1:], tss[:-1]))
                if min(steps) < 0.0 or max(steps) > rules.gap_s:
                    return False
            rest = rest + more  # type: ignore[operator]
            last = tss[-1]
        if state is None:
            self.counters["opened"] += 1
        store[key] = (n + k, start, ids + chars, base, rest, last, now)  # as _save writes it
        self._index(key, now)
        return True

    def push_many(self, key: str, events: Iterable[tuple[int, float | None]], now: float,
                  probe: bool = False) -> list[Window]:
        """Events (template id, event time) of session `key`, in arrival order, all seen at `now`;
        returns the windows they close. A fast path of `push` (the reference), with the same
        windows, counters and stored state as one push per event: the state is read once, kept in
        a windower while the events apply, and written once at the end (or before a close or an
        eviction, which look at the store). `probe`: when the session is still
        open afterwards, also return its open window (reason PROBE) for an early score."""
        out: list[Window] = []
        ends: list[int | None] = []
        self.window_ends = ends
        rules = self.rules
        terminal, max_events, gap_s = rules.terminal_ids, rules.max_events_per_session, rules.gap_s
        store = self.store
        state = store.get(key)
        w: SessionWindower | None = None  # the open session's windower, when it differs from `state`
        last: float | None = None if state is None else last_ts_of(state)
        is_open = state is not None
        j = -1
        for j, (template_id, ts) in enumerate(events):
            if is_open and ts is not None and last is not None:
                if ts - last > gap_s:
                    if w is not None:
                        state = self._save(key, w, last, now)
                    done = self._close(key, state, "gap")
                    if done is not None:
                        out.append(done)
                        ends.append(j - 1)
                    state, w, last, is_open = None, None, None, False
                elif ts < last:
                    self.counters["late_events"] += 1
            if not is_open:
                self.counters["opened"] += 1
                if len(store) >= rules.max_open_sessions:
                    evicted = self._evict(now)
                    out += evicted
                    ends += [None] * len(evicted)
                w = SessionWindower(self.source, key, rules.rule)
                is_open = True
            elif w is None:
                w = self._windower(key, state)
            done = w.push(template_id, ts)
            if done is not None:
                out.append(done)
                ends.append(j)
            if ts is not None:
                last = ts if last is None else max(ts, last)
            if template_id in terminal or w.n >= max_events:
                reason = "terminal" if template_id in terminal else "max_events"
                tail = self._close(key, self._save(key, w, last, now), reason)
                if tail is not None:
                    out.append(tail)
                    ends.append(j)
                state, w, last, is_open = None, None, None, False
        if w is not None:
            self._save(key, w, last, now)
            if probe:
                p = w.probe()
                if p is not None:
                    out.append(p)
                    ends.append(j)
        return out

    def _evict(self, now: float) -> list[Window]:
        """Close the least recently active ~1% of sessions (at least one): amortises the scan."""
        n = max(1, len(self.store) // 100)
        oldest = sorted(self.store.items(), key=lambda kv: seen_of(kv[1]))[:n]
        out = []
        for key, state in oldest:
            self.counters["evicted"] += 1
            w = self._close(key, state, "evicted")
            if w is not None:
                out.append(w)
        return out

    def sweep(self, now: float, limit: int | None = None) -> list[Window]:
        """Close sessions idle for longer than idle_timeout_s at time `now` (of the clock `push`
        was given), oldest activity first; at most
        `limit` of them (the rest stay for the next call)."""
        if self._heap is None:
            self.reindex()
        heap, seen, store, idle = self._heap, self._seen, self.store, self.rules.idle_timeout_s
        if heap is None:
            raise RuntimeError("activity index missing after reindex")
        owned = getattr(store, "owned", None)
        out: list[Window] = []
        closed = 0
        while heap and now - heap[0][0] > idle and (limit is None or closed < limit):
            t, key = heapq.heappop(heap)
            if seen.get(key) != t:
                continue  # stale entry: the session was active again, or closed
            state = store.get(key)
            if state is None or (owned is not None and not owned(key)):
                seen.pop(key, None)  # gone from the store (another close path, a rebalance)
                continue
            actual = seen_of(state)
            if now - actual <= idle:  # the store knows later activity (a discarded write): re-index it
                seen[key] = actual
                heapq.heappush(heap, (actual, key))
                continue
            w = self._close(key, state, "idle")
            closed += 1
            if w is not None:
                out.append(w)
        if len(heap) > 2 * len(seen) + 1024:  # too many stale entries: compact
            self._heap = [(t, k) for k, t in seen.items()]
            heapq.heapify(self._heap)
        return out

    def close_all(self, reason: str = "end") -> list[Window]:
        out = []
        for key, state in list(self.store.items()):
            w = self._close(key, state, reason)
            if w is not None:
                out.append(w)
        return out
