"""Feedback: people's verdicts on alerts, kept beside the bundle, and what the detector makes of them.

    logad feedback ALERT_ID --normal | --anomaly | --undo
      -> one JSON line appended to the feedback file (feedback_path: scorer.feedback_file, else
         <bundle>/feedback.jsonl); records are never rewritten:
           {"v": 1, "op": "verdict", "verdict": "normal" | "anomaly", "alert_id", "session_id",
            "source", "ids": [template id, ...] (the window's, context first), "n_context",
            "vocab" (logad.alerts.vocab_tag of the vocab the ids refer to),
            "templates": {"<id>": [key, text]} (each distinct id's template in that vocab),
            "model_version" (what scored the alert), "by", "at" (UTC, ISO 8601), "why"}
           {"v": 1, "op": "undo", "alert_id", "by", "at", "why"}
      -> read_feedback folds them: per alert id its last verdict, gone when an undo follows it;
         per window pattern (ids, n_context) the latest verdict still standing
      -> Feedback.overlay(vocab): the feedback-normal patterns whose ids name the same templates in
         `vocab` (the vocab that recorded them, or an id-extension of it) -> Overlay
      -> Detector.apply_overlay(overlay): a window equal to a feedback-normal one (same ids, same
         context) is decided normal with reason "feedback", and the feedback-normal windows join the
         count and alignment reference (logad.scoring.WindowScorer.extend_reference), so windows
         close to them score closer to normal too. Confirmed anomalies are kept for evaluation; they change no decision.

Pure: no Kafka, no model. A line that does not end in a newline is a record still being written
(appends are one write each) and is read only when it is whole JSON.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from logad.errors import ArtifactError

FEEDBACK_FILE = "feedback.jsonl"  # in the bundle folder unless scorer.feedback_file names another file
FORMAT_VERSION = 1  # "v" of every record
NORMAL, ANOMALY = "normal", "anomaly"
VERDICTS = (NORMAL, ANOMALY)
FEEDBACK_REASON = "feedback"  # the reason of a window decided normal because people said so

Pattern = tuple[tuple[int, ...], int]  # (window ids, n_context): what "the same window" means


class FeedbackError(ArtifactError):
    """The feedback file (or an alert given to `logad feedback`) cannot be used; one line."""


def feedback_path(model_dir: str | Path, configured: str = "") -> Path:
    """Where a bundle's feedback lives: `configured` (scorer.feedback_file) or <bundle>/feedback.jsonl."""
    return Path(configured) if configured else Path(model_dir) / FEEDBACK_FILE


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class Verdict:
    """One standing verdict on one alert's window."""

    alert_id: str
    verdict: str  # normal | anomaly
    session_id: str
    source: str
    ids: tuple[int, ...]  # the window's template ids, context first
    n_context: int
    vocab: str  # vocab_tag the ids refer to
    templates: dict[int, tuple[str, str]]  # id -> (key, text) in that vocab
    model_version: str
    by: str
    at: str  # UTC, ISO 8601
    why: str = ""

    @property
    def pattern(self) -> Pattern:
        return self.ids, self.n_context

    def fits(self, vocab: Any) -> bool:
        """Whether the ids name the same templates in `vocab` (a TemplateVocab): true for the
        vocab that recorded them and for an id-extension of it (ids kept, templates appended)."""
        n = len(vocab)
        return all(0 <= i < n and vocab.key_of(i) == key and vocab.text_of(i) == text
                   for i, (key, text) in self.templates.items()) and all(0 <= i < n for i in self.ids)

    def record(self) -> dict:
        return {"v": FORMAT_VERSION, "op": "verdict", "verdict": self.verdict, "alert_id": self.alert_id,
                "session_id": self.session_id, "source": self.source, "ids": list(self.ids),
                "n_context": self.n_context, "vocab": self.vocab,
                "templates": {str(i): list(kt) for i, kt in sorted(self.templates.items())},
                "model_version": self.model_version, "by": self.by, "at": self.at, "why": self.why}


@dataclass(frozen=True)
class Overlay:
    """What a detector applies: the feedback-normal window patterns that fit its vocab."""

    normal: frozenset[Pattern] = frozenset()
    digest: str = ""  # of the feedback file it came from ("" = none)


@dataclass(frozen=True)
class Feedback:
    """The fold of a feedback file."""

    standing: tuple[Verdict, ...] = ()  # verdicts in force, oldest first
    records: int = 0  # records read (verdicts and undos)
    digest: str = ""  # sha256 of the whole records read: the scorer reloads when it changes

    def verdict_of(self, alert_id: str) -> Verdict | None:
        return next((v for v in self.standing if v.alert_id == alert_id), None)

    def latest(self, pattern: Pattern) -> Verdict | None:
        """The verdict in force for a window pattern: the latest standing one."""
        return next((v for v in reversed(self.standing) if v.pattern == pattern), None)

    def overlay(self, vocab: Any) -> Overlay:
        latest: dict[Pattern, Verdict] = {}
        for v in self.standing:
            latest[v.pattern] = v
        return Overlay(frozenset(p for p, v in latest.items() if v.verdict == NORMAL and v.fits(vocab)), self.digest)


def _text(doc: dict, key: str, where: str, required: bool = True) -> str:
    v = doc.get(key, None if required else "")
    if not isinstance(v, str) or (required and not v):
        raise FeedbackError(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    return v


def _int(v: Any, what: str, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise FeedbackError(f"{where}: {what} must be a non-negative integer, got {v!r}")
    return v


def parse_verdict(doc: dict, where: str) -> Verdict:
    """A verdict record -> Verdict; FeedbackError naming `where` and the field when malformed."""
    verdict = _text(doc, "verdict", where)
    if verdict not in VERDICTS:
        raise FeedbackError(f"{where}: verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    ids, templates = doc.get("ids"), doc.get("templates")
    if not isinstance(ids, list) or not ids:
        raise FeedbackError(f"{where}: 'ids' must be a non-empty list of template ids, got {ids!r}")
    if not isinstance(templates, dict):
        raise FeedbackError(f"{where}: 'templates' must be an object id -> [key, text], got {templates!r}")
    kt: dict[int, tuple[str, str]] = {}
    for k, v in templates.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(v, list) and len(v) == 2
                and all(isinstance(x, str) for x in v)):
            raise FeedbackError(f"{where}: templates entry {k!r}: {v!r} is not \"<id>\": [key, text]")
        kt[int(k)] = (v[0], v[1])
    n_context = _int(doc.get("n_context"), "'n_context'", where)
    t = tuple(_int(i, "every id", where) for i in ids)
    if n_context >= len(t) or set(t) - set(kt):
        raise FeedbackError(f"{where}: n_context must be below the window length and every id needs its template")
    return Verdict(alert_id=_text(doc, "alert_id", where), verdict=verdict, session_id=_text(doc, "session_id", where),
                   source=_text(doc, "source", where), ids=t, n_context=n_context, vocab=_text(doc, "vocab", where),
                   templates=kt, model_version=_text(doc, "model_version", where), by=_text(doc, "by", where),
                   at=_text(doc, "at", where), why=_text(doc, "why", where, required=False))


def fold(docs: Iterable[tuple[dict, str]]) -> tuple[Verdict, ...]:
    """(record, where) in file order -> the standing verdicts: per alert id the last verdict, unless
    an undo came after it."""
    by_alert: dict[str, Verdict] = {}  # insertion order = the order verdicts were (last) given
    for doc, where in docs:
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
            raise FeedbackError(f"{where}: not a feedback record of version {FORMAT_VERSION}")
        op = doc.get("op")
        if op == "verdict":
            v = parse_verdict(doc, where)
            by_alert.pop(v.alert_id, None)
            by_alert[v.alert_id] = v
        elif op == "undo":
            by_alert.pop(_text(doc, "alert_id", where), None)
        else:
            raise FeedbackError(f"{where}: op must be 'verdict' or 'undo', got {op!r}")
    return tuple(by_alert.values())


def read_feedback(path: str | Path) -> Feedback:
    """The fold of a feedback file; an empty Feedback when it does not exist. FeedbackError (with
    the file and line) when a whole line is not a valid record."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return Feedback()
    except OSError as e:
        raise FeedbackError(f"feedback file {p}: cannot read it ({e})") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends in a newline; else a record being appended, or a last line
    docs: list[tuple[dict, str]] = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                docs.append((orjson.loads(line), f"feedback file {p} line {n}"))
            except orjson.JSONDecodeError as e:
                raise FeedbackError(f"feedback file {p} line {n}: not JSON ({e})") from None
    used = len(data) - len(tail)
    if tail.strip():
        try:
            docs.append((orjson.loads(tail), f"feedback file {p} line {len(lines) + 1}"))
            used = len(data)
        except orjson.JSONDecodeError:
            pass  # still being written: read at the next look
    return Feedback(fold(docs), len(docs), hashlib.sha256(data[:used]).hexdigest())


def append_record(path: str | Path, doc: dict) -> None:
    """Append one record as one write (O_APPEND: concurrent writers do not interleave lines) and
    flush it to disk before returning."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(doc) + b"\n"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def undo_record(alert_id: str, by: str, why: str = "", at: str | None = None) -> dict:
    return {"v": FORMAT_VERSION, "op": "undo", "alert_id": alert_id, "by": by, "at": at or utc_now(), "why": why}


def verdict_from_alert(alert: dict, verdict: str, vocab: Any, tag: str, by: str, why: str = "",
                       at: str | None = None) -> Verdict:
    """The Verdict on an alert envelope (logad.alerts.make_event) under the bundle's vocab (`tag`
    = its vocab_tag). FeedbackError when the envelope lacks the window's ids (written before
    alerts carried them) or was scored under another vocab (its ids would name other templates)."""
    where = f"alert {alert.get('id')!r}"
    data = alert.get("data")
    window = data.get("window") if isinstance(data, dict) else None
    if not isinstance(window, dict) or not isinstance(window.get("ids"), list) or not window["ids"]:
        raise FeedbackError(f"{where} carries no window ids (data.window.ids): it was written before alerts "
                            "carried them, so its window cannot be recorded")
    scored_with = data.get("vocab") or ""
    if scored_with != tag:
        raise FeedbackError(f"{where} was scored under vocab {scored_with or 'unknown'!r}, the bundle's is {tag!r}: "
                            "give the bundle that scored it (--model)")
    ids = window["ids"]
    try:
        templates = {int(i): (vocab.key_of(int(i)), vocab.text_of(int(i))) for i in set(ids)}
    except (KeyError, TypeError, ValueError) as e:
        raise FeedbackError(f"{where}: its ids do not fit the bundle's vocab ({e})") from None
    doc = {"alert_id": alert.get("id"), "verdict": verdict, "session_id": data.get("session_id"),
           "source": str(alert.get("source", "")).removeprefix("logad/"), "ids": ids,
           "n_context": window.get("n_context"), "vocab": tag,
           "templates": {str(i): list(kt) for i, kt in templates.items()},
           "model_version": data.get("model_version"), "by": by, "at": at or utc_now(), "why": why}
    return parse_verdict(doc, where)


def apply_feedback(detector: Any, path: str | Path) -> Feedback:
    """Read the feedback file and apply it to `detector` (logad.detector.Detector); returns the fold."""
    fb = read_feedback(path)
    detector.apply_overlay(fb.overlay(detector.bundle.vocab))
    return fb
