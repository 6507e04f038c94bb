"""Early alerts (`scorer.early_alerts`): which probe scores become alerts with `early: true`.

With the option on, the session stage sends, after each batch of a session's events, the session's
open window as a probe (logad.windows.PROBE: never complete, so only the prefix-safe scores judge
it). The scorer scores probes like any window but publishes no score for them; the first anomalous
probe of an open session becomes one alert with `early: true`, later probes of that session stay
quiet, and the windows that close the session are scored and published as always (the decision at
close still follows, with its own alert id). A session's entry goes when its final window arrives.

Pure bookkeeping, no Kafka: unit-tested on its own, called from streams/scorer.py.
"""

from __future__ import annotations

from logad.records import WindowScore
from logad.windows import PROBE

MAX_TRACKED = 1 << 20  # early-alerted sessions remembered while open; the oldest half goes when full


class EarlyGate:
    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self.max_tracked = max_tracked
        # (source, session id) of the early-alerted open sessions, in insertion order. Read-only
        # outside: while it is empty, admit() has nothing to do for a window that is not a probe
        # (the scorer skips the call then).
        self.tracked: dict[tuple[str, str], None] = {}

    @staticmethod
    def is_probe(ws: WindowScore) -> bool:
        return ws.window.reason == PROBE

    def admit(self, ws: WindowScore) -> bool:
        """True when this score should go out as an early alert. Call it for every scored window:
        a final (closing) window forgets its session, so a session that opens again under the same
        id may alert early again."""
        w = ws.window
        key = (w.source, w.session_id)
        if not self.is_probe(ws):
            if w.final:
                self.tracked.pop(key, None)
            return False
        if not ws.is_anomaly or key in self.tracked:
            return False
        if len(self.tracked) >= self.max_tracked:  # (a worker restart re-sends at most one per session anyway)
            for k in list(self.tracked)[: self.max_tracked // 2]:
                del self.tracked[k]
        self.tracked[key] = None
        return True

    def __len__(self) -> int:
        return len(self.tracked)
