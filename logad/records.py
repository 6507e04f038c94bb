"""The records that flow through logad, in data-flow order.

raw line -> LogRecord -> Event (template id, per session key) -> Window (closed slice of a session)
-> WindowScore -> Alert (see logad.alerts). All are small, immutable and JSON-friendly so the
streaming side can serialise them with orjson without custom codecs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One parsed raw log line. `session_keys` may hold several ids (an HDFS line can name 2 blocks)."""

    source: str  # format name, e.g. "hdfs"
    timestamp: float | None  # seconds since the epoch (UTC) or None when the line has none
    level: str  # INFO, WARN, ...
    component: str  # logger / component name
    content: str  # the free-text message Drain3 sees (header stripped)
    session_keys: tuple[str, ...]  # session ids named in the line (block ids, VM instance ids)
    truncated: bool = False  # the line was cut at the configured max length


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line we could not turn into a LogRecord, with the reason (counted and dead-lettered)."""

    reason: str  # short machine-friendly reason: "empty", "no_session_key", "unparseable", ...
    detail: str = ""  # human-readable detail (first bytes of the line, the regex that failed, ...)


@dataclass(frozen=True, slots=True)
class Event:
    """One templated occurrence inside a session."""

    session_id: str
    template_id: int  # id in the deployed TemplateVocab (UNK when nothing matched)
    timestamp: float | None  # event time in seconds, None when the source line had none


@dataclass(frozen=True, slots=True)
class Window:
    """A closed slice of one session: what the scorer sees.

    `ids` are the template ids of the window, in session order. The first `n_context` of them were
    already scored in the previous window of the same session and only serve as context, so every
    event of a session is scored exactly once (sliding windows with overlap `n_context`).
    """

    source: str  # format / deployment name ("hdfs", "openstack")
    session_id: str
    start: int  # index in the session of ids[0]
    ids: tuple[int, ...]  # (T,) template ids, T <= model context length - 1 (BOS takes a slot)
    n_context: int  # leading ids that are context only (0 for the first window of a session)
    first_ts: float | None  # event time of the first scored event
    last_ts: float | None  # event time of the last event
    reason: str  # why it closed: "max_length", "gap", "terminal", "idle", "end", "evicted"; "open": a probe (early alerts)
    final: bool = True  # False for intermediate sliding windows; True for the session's last one
    n_lines: int = 0  # raw lines behind the scored events of this window

    @property
    def end(self) -> int:
        """Index in the session one past the last event of this window."""
        return self.start + len(self.ids)


@dataclass(frozen=True, slots=True)
class WindowScore:
    """Scores of one window and the decision taken on them.

    Read-only beyond the frozen fields: with the score cache (logad.detector) repeats of a window
    share one `scores` dict and their `surprising` dicts (and the "expected" lists inside them), so
    mutating them would change other windows' scores and alerts. Copy before editing.
    """

    window: Window
    scores: dict[str, float]  # method -> score (higher = more anomalous)
    is_anomaly: bool
    reasons: tuple[str, ...]  # which rules fired, e.g. ("mean_nll > 2.31", "unseen_rate > 0.05")
    surprising: tuple[dict, ...] = field(default_factory=tuple)  # most surprising events (see scoring)
