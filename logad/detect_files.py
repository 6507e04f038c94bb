"""Offline detection of raw log files, with exactly the steps the streaming detector runs:

    PATH... -> logad.readers (files, folders, .gz; multi-line entries) -> parse_line -> LogRecord
                                                         (Rejected: counted by reason)
            -> vocab.match(content) -> template id     (drift: a reworded statement is the known one; a line
                                                        no template explains: a pending id, logad.pending)
            -> events in time order                    (stable: a file already in time order keeps
                                                        its order, as the stream reads it)
            -> Sessionizer.push per session key        -> closed Windows
            -> Detector.score_windows (batched, pending statements resolved and judged) -> WindowScore
            -> alerts.make_event                       -> alert JSON (anomalous windows only)
At end of input every open session is closed ("end"), as the stream's idle timer closes them.
Before any alert is written the input is checked against the format and the model
(logad.guard): when most lines do not parse or match no template, nothing is scored and the
command fails with the rates.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from logad.alerts import evidence_indexes, make_event, vocab_tag
from logad.config import DriftConfig, GuardConfig, SessionConfig
from logad.drift import DriftVocab
from logad.drift import matcher as drift_matcher
from logad.pending import attach, score_with_pending
from logad.feedback import apply_feedback, feedback_path
from logad.format_files import load_format
from logad.formats import LogFormat
from logad.guard import check_input
from logad.parse import ParseStats, parse_line
from logad.readers import entry_texts, iter_file_records, time_order
from logad.records import LogRecord, Window, WindowScore
from logad.session_rules import SessionRules, Sessionizer
from logad.templates import UNK

if TYPE_CHECKING:  # the model (torch) loads only in detect_paths: the worker imports session_rules
    from logad.detector import Detector
    from logad.templates import TemplateVocab


def session_rules(detector: Detector, fmt: LogFormat, cfg: SessionConfig) -> SessionRules:
    """Session rules of a deployment: window rule from the model, terminal templates from the format."""
    vocab = detector.bundle.vocab
    terminal = frozenset(vocab.id_of(k) for k in fmt.terminal_templates) - {vocab.UNK}
    return SessionRules(rule=detector.bundle.rule, gap_s=cfg.gap_s, idle_timeout_s=cfg.idle_timeout_s,
                        max_open_sessions=cfg.max_open_sessions,
                        max_events_per_session=cfg.max_events_per_session, terminal_ids=terminal)


def windows_from_lines(lines: Iterable[bytes | str], fmt: LogFormat, detector: Detector,
                       sessionizer: Sessionizer, stats: ParseStats) -> Iterator[Window]:
    """Closed windows of the lines (one file, in its order), then every remaining session ("end")."""
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


# (event time, origin, line, session keys, template id): one parsed entry
Event = tuple[float | None, str, int, tuple[str, ...], int]


def read_events(paths: Sequence[str | Path], fmt: LogFormat, vocab: TemplateVocab, stats: ParseStats,
                order: str = "time") -> tuple[list[Event], int]:
    """Every parsed entry of the files as an Event, and how many matched no template (UNK).

    order "time": logad.readers.time_order; "file": files in the order given, lines in file order."""
    if order not in ("time", "file"):
        raise ValueError(f"order must be 'time' or 'file', got {order!r}")
    out: list[Event] = []
    unk = 0
    match = vocab.match
    base = len(vocab)
    for origin, line, rec in iter_file_records(paths, fmt, stats):
        if not isinstance(rec, LogRecord):
            continue
        tid = match(rec.content)
        unk += tid == UNK or tid >= base  # a pending statement (logad.pending) matches no template either
        out.append((rec.timestamp, origin, line, rec.session_keys, tid))
    if order == "time":
        out = [out[i] for i in time_order([e[0] for e in out])]
    return out, unk


class Positions:
    """Where each event of each open session came from, so that an alert can quote its raw lines.

    Kept beside the Sessionizer (which stores template ids only): a session's list grows with its
    events and goes when the session closes; a gap close happens while the next event is pushed,
    which then starts the new session's list."""

    def __init__(self) -> None:
        self.open: dict[str, list[tuple[str, int]]] = {}

    def push(self, key: str, where: tuple[str, int], windows: list[Window], store: Any) -> list[tuple[Window, list]]:
        """Record one event of `key` and return each window with the positions of its session."""
        out = []
        for w in windows:
            sid = w.session_id
            pos = self.open.get(sid, [])
            if w.final and sid == key and key in store and pos and pos[-1] is where:
                out.append((w, pos[:-1]))  # gap: this event opened the next session
                self.open[key] = [where]
                continue
            out.append((w, pos))
            if w.final:
                self.open.pop(sid, None)
        return out


def windows_of_events(events: Iterable[Event], sessionizer: Sessionizer, positions: Positions | None = None
                      ) -> Iterator[tuple[Window, list]]:
    """(window, positions of its session's events) in the order the windows close."""
    now = 0.0
    store = sessionizer.store
    for ts, origin, line, keys, tid in events:
        where = (origin, line)
        for key in keys:
            if positions is not None:
                positions.open.setdefault(key, []).append(where)
            done = sessionizer.push(key, tid, ts, now)
            if positions is None:
                yield from ((w, []) for w in done)
            elif done:
                yield from positions.push(key, where, done, store)
    for w in sessionizer.close_all("end"):
        yield (w, positions.open.pop(w.session_id, []) if positions is not None else [])


def evidence_at(ws: WindowScore, positions: list[tuple[str, int]], limit: int) -> list[tuple[int, str, int]]:
    """(event index in the session, file, line) of up to `limit` raw lines behind an alert
    (logad.alerts.evidence_indexes picks them); `positions` hold the session's events so far."""
    w = ws.window
    return [(i, *positions[i]) for i in evidence_indexes(ws, limit, w.start + w.n_context, len(positions))]


def detect_paths(paths: Sequence[str | Path], model_dir: str | Path, log_format: str | None = None,
                 out: str | Path | None = None, session_cfg: SessionConfig = SessionConfig(),
                 device: str = "auto", batch: int = 512, sessions_out: str | Path | None = None,
                 guard: GuardConfig = GuardConfig(), order: str = "time", evidence: int = 5,
                 drift: DriftConfig | None = DriftConfig(), feedback: str | Path | None = None) -> dict:
    """Write one alert JSON per line for every anomalous window (and, with `sessions_out`, one CSV
    row per scored session); return a summary. The format is the bundle's unless `log_format`.
    Each alert quotes up to `evidence` raw lines behind it (file and line number). `drift`: reworded
    statements count as the known statement they are closest to (logad.drift); None: the frozen
    vocab alone. `feedback`: the verdicts of `logad feedback` to apply (logad.feedback; default the
    bundle's feedback.jsonl, when there is one), as the stream's scorer applies them."""
    from logad.artifacts import bundle_format
    from logad.detector import Detector, aggregate

    det = Detector.load(model_dir, device)
    apply_feedback(det, feedback or feedback_path(model_dir))
    vocab = det.bundle.vocab
    fmt = load_format(log_format) if log_format else bundle_format(model_dir, vocab.format_name)
    fmt.require_sessions()
    sz = Sessionizer(fmt.name, session_rules(det, fmt, session_cfg))
    stats = ParseStats()
    matcher = drift_matcher(vocab, drift) if drift is not None else vocab
    # statements the vocab does not know: pending until `promote_after` normal-looking sessions (logad.pending);
    # promotions of this run are reported, not written (the stream's scorer writes its own)
    pend = attach(det, model_dir, drift, persist=False) if isinstance(matcher, DriftVocab) else None
    events, unk = read_events(paths, fmt, matcher, stats, order)
    health = check_input(stats, unk, guard, f"{len(paths)} input path(s) with format {fmt.name!r} and model "
                                            f"{det.version}")
    th = det.thresholds.values if det.thresholds else {}
    windows = 0
    per_session: dict[str, list] = {}
    n_events: Counter[str] = Counter()
    flagged: list[tuple[WindowScore, list]] = []  # alerts and where their evidence is
    pending: list[tuple[Window, list]] = []

    def flush() -> None:
        for ws, (_, pos) in zip(score_with_pending(det, pend, [w for w, _ in pending], details=True), pending):
            sid = ws.window.session_id
            per_session.setdefault(sid, []).append(ws)
            n_events[sid] += len(ws.window.ids) - ws.window.n_context
            if ws.is_anomaly:
                flagged.append((ws, evidence_at(ws, pos, evidence) if evidence > 0 else []))
        pending.clear()

    for item in windows_of_events(events, sz, Positions() if evidence > 0 else None):
        windows += 1
        pending.append(item)
        if len(pending) >= batch:
            flush()
    flush()
    wanted: dict[str, set[int]] = {}
    for _, ev in flagged:
        for _, origin, line in ev:
            wanted.setdefault(origin, set()).add(line)
    texts = entry_texts(wanted, fmt)
    tag = vocab_tag(vocab)
    fh: IO[bytes] = open(out, "wb") if out else sys.stdout.buffer
    try:
        for ws, ev in flagged:
            quoted = [{"index": i, "position": {"file": origin, "line": line + 1}, "line": texts[(origin, line)]}
                      for i, origin, line in ev if (origin, line) in texts]
            fh.write(orjson.dumps(make_event(ws, det.version, th, evidence=quoted, vocab=tag)) + b"\n")
    finally:
        if out:
            fh.close()
    results = [aggregate(sid, None, n_events[sid], ws) for sid, ws in per_session.items()]
    if sessions_out is not None:
        write_sessions_csv(sessions_out, results)
    drifted = matcher.report() if isinstance(matcher, DriftVocab) else None
    if pend is not None and isinstance(matcher, DriftVocab):
        for tid, text in matcher.examples.items():
            pend.note_text(pend.ids.key_of(tid), text)
    return {"lines": stats.as_dict(), "input": health, "windows": windows, "sessions": len(results),
            "drift": {"lines": drifted["lines"].get("drift", 0), "statements": len(drifted["reworded"])}
            if drifted else None, "pending": pend.summary() if pend is not None else [],
            "alerts": len(flagged), "anomalous_sessions": sum(r.is_anomaly for r in results),
            "session_closes": dict(Counter(sz.counters)), "model_version": det.version, "format": fmt.name}


def write_sessions_csv(path: str | Path, results: Iterable) -> int:
    """`session_id,score,is_anomaly`, one row per scored session (score: its highest window's
    combined score, > 0 exactly when it is anomalous)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["session_id", "score", "is_anomaly"])
        for r in results:
            w.writerow([r.session_id, f"{r.score:.6g}", int(r.is_anomaly)])
            n += 1
    return n


def detect_file(file: str | Path, model_dir: str | Path, log_format: str | None, out: str | Path | None,
                session_cfg: SessionConfig = SessionConfig(), device: str = "auto", batch: int = 512,
                drift: DriftConfig | None = DriftConfig()) -> dict:
    """detect_paths on one file in file order: what the stream sees when the file is replayed (the
    stream's comparison and the tests' entry point)."""
    return detect_paths([file], model_dir, log_format, out, session_cfg, device, batch, order="file", drift=drift)
