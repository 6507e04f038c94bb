"""Offline detection of a raw log file, with exactly the steps the streaming detector runs:

    raw line -> parse_line -> LogRecord            (Rejected: counted by reason)
             -> vocab.match(content) -> template id (UNK when nothing matches; vocab never changes)
             -> Sessionizer.push per session key     -> closed Windows
             -> Detector.score_windows (batched)     -> WindowScore
             -> alerts.make_event                    -> alert JSON (anomalous windows only)
At end of input every open session is closed ("end"), as the stream's idle timer closes them.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from logad.alerts import make_event
from logad.config import SessionConfig
from logad.formats import LogFormat, load_format
from logad.parse import ParseStats, open_lines, parse_line
from logad.records import LogRecord, Window
from logad.sessionizer import SessionRules, Sessionizer

if TYPE_CHECKING:  # the model (torch) loads only in detect_file: the worker imports session_rules
    from logad.detector import Detector


def session_rules(detector: Detector, fmt: LogFormat, cfg: SessionConfig) -> SessionRules:
    """Session rules of a deployment: window rule from the model, terminal templates from the format."""
    vocab = detector.bundle.vocab
    terminal = frozenset(vocab.id_of(k) for k in fmt.terminal_templates) - {vocab.UNK}
    return SessionRules(rule=detector.bundle.rule, gap_s=cfg.gap_s, idle_timeout_s=cfg.idle_timeout_s,
                        max_open_sessions=cfg.max_open_sessions,
                        max_events_per_session=cfg.max_events_per_session, terminal_ids=terminal)


def windows_from_lines(lines: Iterable[bytes | str], fmt: LogFormat, detector: Detector,
                       sessionizer: Sessionizer, stats: ParseStats) -> Iterator[Window]:
    """Closed windows of the lines, in the order they close; then every remaining session ("end")."""
    vocab = detector.bundle.vocab
    now = 0.0  # offline: no wall clock; idle closes happen at end of input
    for raw in lines:
        rec = parse_line(raw, fmt)
        stats.add(rec)
        if not isinstance(rec, LogRecord):
            continue
        tid = vocab.match(rec.content)
        for key in rec.session_keys:
            yield from sessionizer.push(key, tid, rec.timestamp, now)
    yield from sessionizer.close_all("end")


def detect_file(file: str | Path, model_dir: str | Path, log_format: str | None, out: str | Path | None,
                session_cfg: SessionConfig = SessionConfig(), device: str = "auto", batch: int = 512) -> dict:
    """Write one alert JSON per line for every anomalous window; return a summary."""
    from logad.detector import Detector

    det = Detector.load(model_dir, device)
    fmt = load_format(log_format or det.bundle.vocab.format_name or "hdfs")
    sz = Sessionizer(fmt.name, session_rules(det, fmt, session_cfg))
    stats = ParseStats()
    th = det.thresholds.values if det.thresholds else {}
    fh: IO[bytes] = open(out, "wb") if out else sys.stdout.buffer
    alerts, windows, sessions, flagged = 0, 0, set(), set()
    try:
        pending: list[Window] = []

        def flush() -> None:
            nonlocal alerts
            for ws in det.score_windows(pending, details=True):
                if ws.is_anomaly:
                    alerts += 1
                    flagged.add(ws.window.session_id)
                    fh.write(orjson.dumps(make_event(ws, det.version, th)) + b"\n")
            pending.clear()

        for w in windows_from_lines(open_lines(file, fmt.max_line_bytes), fmt, det, sz, stats):
            windows += 1
            sessions.add(w.session_id)
            pending.append(w)
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        if out:
            fh.close()
    return {"lines": stats.as_dict(), "windows": windows, "sessions": len(sessions), "alerts": alerts,
            "anomalous_sessions": len(flagged), "session_closes": dict(Counter(sz.counters)),
            "model_version": det.version}
