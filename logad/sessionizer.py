"""Sessionizer: templated events -> closed windows, over any mutable mapping of per-session state.

The same code runs offline (`logad detect`, a plain dict) and in the stream (a Faust Table backed
by a changelog topic). Closing rules, defined once:
* event-time gap: an event more than `gap_s` after the session's last event closes the old session
  ("gap") and starts a new one under the same key;
* terminal event: a template the format marks terminal closes the session after it ("terminal");
* max length: a session longer than the window length continues as sliding windows ("max_length");
* idle: `sweep(now)` closes sessions with no event for `idle_timeout_s` of wall-clock time ("idle");
* caps: more than `max_open_sessions` open -> the least recently active are closed ("evicted");
  a session reaching `max_events_per_session` is closed ("max_events") and restarts.
Events older than their session's last event are counted as late and kept in arrival order.
State values are plain dicts of lists (JSON-friendly); they are reassigned after every change
because a Faust Table does not persist in-place mutation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from logad.records import Window
from logad.sessions import SessionWindower, WindowRule


@dataclass(frozen=True)
class SessionRules:
    rule: WindowRule = field(default_factory=WindowRule)  # window length / stride (from the model)
    gap_s: float = 300.0  # event-time gap that closes a session
    idle_timeout_s: float = 30.0  # wall-clock idle time that closes a session
    max_open_sessions: int = 1_000_000  # cap on open sessions; least recently active evicted first
    max_events_per_session: int = 100_000  # a session reaching this many events is closed
    terminal_ids: frozenset[int] = frozenset()  # template ids that end a session


class Sessionizer:
    def __init__(self, source: str, rules: SessionRules,
                 store: MutableMapping[str, dict] | None = None) -> None:
        self.source = source
        self.rules = rules
        self.store: MutableMapping[str, dict] = {} if store is None else store
        self.counters: Counter[str] = Counter()  # closes by reason, late events, evictions

    def _windower(self, key: str, state: dict | None) -> SessionWindower:
        if state is None:
            return SessionWindower(self.source, key, self.rules.rule)
        return SessionWindower.from_state(self.source, key, self.rules.rule, state)

    def _save(self, key: str, w: SessionWindower, last_ts: float | None, seen: float) -> None:
        state = w.to_state()
        state["last_ts"], state["seen"] = last_ts, seen
        self.store[key] = state  # reassign: tables persist assignments, not mutation

    def _close(self, key: str, state: dict, reason: str) -> Window | None:
        self.counters[f"closed_{reason}"] += 1
        window = self._windower(key, state).close(reason)
        del self.store[key]
        return window

    def push(self, key: str, template_id: int, ts: float | None, now: float) -> list[Window]:
        """One event of session `key` at event time `ts` (wall-clock `now`); returns closed windows."""
        out: list[Window] = []
        state = self.store.get(key)
        if state is not None:
            last = state.get("last_ts")
            if ts is not None and last is not None:
                if ts - last > self.rules.gap_s:
                    w = self._close(key, state, "gap")
                    if w is not None:
                        out.append(w)
                    state = None
                elif ts < last:
                    self.counters["late_events"] += 1
        if state is None:
            self.counters["opened"] += 1
            if len(self.store) >= self.rules.max_open_sessions:
                out += self._evict(now)
        w = self._windower(key, state)
        done = w.push(template_id, ts)
        if done is not None:
            out.append(done)
        last_ts = ts if ts is not None else (state or {}).get("last_ts")
        if state is not None and ts is not None and state.get("last_ts") is not None:
            last_ts = max(ts, state["last_ts"])
        self._save(key, w, last_ts, now)
        if template_id in self.rules.terminal_ids or w.n >= self.rules.max_events_per_session:
            reason = "terminal" if template_id in self.rules.terminal_ids else "max_events"
            tail = self._close(key, self.store[key], reason)
            if tail is not None:
                out.append(tail)
        return out

    def _evict(self, now: float) -> list[Window]:
        """Close the least recently active ~1% of sessions (at least one): amortises the scan."""
        n = max(1, len(self.store) // 100)
        oldest = sorted(self.store.items(), key=lambda kv: kv[1].get("seen", 0.0))[:n]
        out = []
        for key, state in oldest:
            self.counters["evicted"] += 1
            w = self._close(key, state, "evicted")
            if w is not None:
                out.append(w)
        return out

    def sweep(self, now: float) -> list[Window]:
        """Close sessions idle (wall clock) for longer than idle_timeout_s."""
        idle = [(k, s) for k, s in list(self.store.items()) if now - s.get("seen", now) > self.rules.idle_timeout_s]
        out = []
        for key, state in idle:
            w = self._close(key, state, "idle")
            if w is not None:
                out.append(w)
        return out

    def close_all(self, reason: str = "end") -> list[Window]:
        out = []
        for key, state in list(self.store.items()):
            w = self._close(key, state, reason)
            if w is not None:
                out.append(w)
        return out
