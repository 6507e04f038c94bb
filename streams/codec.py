"""Bytes <-> records on our topics, with orjson; the only place that knows the wire shapes.

Every topic carries plain JSON bytes that any Kafka client can read (no pickle, no Faust envelope):

    raw        b"<line>" or b"<line>\\n<line>..."   key optional      (written by shippers / `logad replay`)
    events     {"src": "hdfs", "rp": "logs.hdfs/0", "t": clock, ["g": "unparsed" | "unknown"],
                "sid": [session id, ...], "arr": [arrival of its last event, ...], "n": [its events, ...],
                "tid": [template id, ...], "ts": [event time, ...], "pos": [raw position, ...]}
               no key, partition = the sessions' key partition: ONE record per events partition per
               ingest batch (a bundle), so the session agent's per-record cost is paid per batch,
               not per session. The events are columns over the whole bundle, session after
               session (n[i] events of sid[i], positions rising within a session): the session
               stage checks a bundle with a few C-level passes per column, not per session or
               per event (a session has ~8 events per bundle; per-session checks cost more than
               the events). Arrival times are the raw
               records' Kafka timestamps (seconds); `t`, the input clock, is the time up to which
               the raw partition has been read (see streams/session_processor.py: idle sessions are
               closed on this clock). `g`, only while the input guard's verdict on the raw
               topic is bad: the problem (windows emitted meanwhile are held, see below). Any other
               shape is a CodecError (the record goes to the dead-letter topic).
    windows    {"w": [{"source", "session_id", "start", "ids", "n_context", "first_ts", "last_ts",
                "reason", "final", "n_lines", ["pos"]}, ...], "vocab": "<16 hex>", ["hold": "unparsed" | "unknown"]}
               (the Window fields; "pos", while alerts quote raw lines: the raw positions of the
               window's scored events, delta-packed, streams/positions.py)        no key
               a bundle: ONE record per windows partition per emit (a bundle of at most
               MAX_BUNDLE_WINDOWS windows of sessions of that partition), so the broker and the
               scorer pay per bundle, not per window. `vocab`: the worker's vocab fingerprint
               (vocab_tag); the scorer dead-letters records whose fingerprint is not its own
               bundle's ("vocab_mismatch": template ids mean nothing under another vocab). `hold`:
               the input guard's problem while the windows were emitted: the scorer publishes
               their scores but no alerts. A record that is not a bundle is a CodecError.
    scores     {"scores": [envelope, ...]}: a bundle of logad.alerts.make_event(...) envelopes
               (type io.logad.score or io.logad.anomaly), ONE record per scores partition per
               scoring batch, no key (`decode_scores`)
    alerts     one envelope per record, anomalies only                             key = session id
    dead-letter {"reason", "topic", "partition", "offset", "line", "size", "head", "head_b64", "detail"}

`pos` in an event is the raw position of its line, `(raw offset << 20) | line index in the record`:
monotonic per raw partition, so the session agent can drop events re-delivered after a crash
(see streams/session_processor.py). `rp` names the raw partition the positions belong to.
Decoders raise CodecError (a ValueError) on anything malformed; callers dead-letter it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from itertools import accumulate, chain, compress, islice
from operator import ge
from typing import Any

import orjson

from logad.alerts import VOCAB_TAG_CHARS, vocab_tag  # noqa: F401 (the windows wire's fingerprint is the alerts')
from logad.records import Window

LINE_BITS = 20  # a record holds at most 2**20 lines (1 MiB records of >= 2-byte lines fit)
MAX_LINES_PER_RECORD = 1 << LINE_BITS
HEAD_BYTES = 256  # how much of a bad record the dead-letter keeps (enough to recognise it, bounded)
WINDOW_FIELDS = ("source", "session_id", "start", "ids", "n_context", "first_ts", "last_ts", "reason",
                 "final", "n_lines")


class CodecError(ValueError):
    """A record on one of our topics does not have the expected shape."""


def position(offset: int, line: int) -> int:
    """Raw position of line `line` of the record at `offset` (monotonic within a raw partition)."""
    return (offset << LINE_BITS) | line


def split_position(pos: int) -> tuple[int, int]:
    return pos >> LINE_BITS, pos & (MAX_LINES_PER_RECORD - 1)


def _loads(data: bytes | None, what: str) -> Any:
    if data is None:
        raise CodecError(f"{what}: empty value")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"{what}: not JSON ({e})") from None


# ------------------------------------------------------------------------------------- events
MAX_BUNDLE_EVENTS = 10_000  # events per bundle record (~300 KB of JSON: well below 1 MB records)

Columns = tuple[list[int], list[float | None], list[int]]  # (template ids, event times, raw positions)


def to_columns(rows: Sequence[Sequence[Any]]) -> Columns:
    """[(tid, ts, pos), ...] -> ([tid, ...], [ts, ...], [pos, ...])."""
    if not rows:
        return [], [], []
    tids, tss, poss = zip(*rows)
    return list(tids), list(tss), list(poss)


def to_rows(tids: Sequence[int], tss: Sequence[float | None], poss: Sequence[int]) -> list[tuple]:
    return list(zip(tids, tss, poss))


def encode_bundles(src: str, raw_partition: str, sessions: Sequence[tuple], max_events: int = MAX_BUNDLE_EVENTS,
                   clock: float | None = None, hold: str = "") -> list[bytes]:
    """Sessions (id, events [(tid, ts, pos), ...] in arrival order[, arrival time of the last one])
    of one events partition and one raw partition, as bundle records of at most ~max_events events
    each (a session's events stay in order across them; columns on the wire). `clock`, the input
    time the raw partition has been read up to, goes on the last record only (applying it means
    the whole batch is applied). No sessions and a clock: one clock-only record. `hold`: the input
    guard's problem with the raw topic ("" = healthy), on every record."""
    parts: list[list[tuple]] = []
    part: list[tuple] = []
    n = 0
    for sid, rows, *t in sessions:
        arrival = t[0] if t else None
        i = 0
        while i < len(rows):
            take = rows[i:i + max_events - n]
            part.append((sid, take, arrival))
            n += len(take)
            i += len(take)
            if n >= max_events:
                parts.append(part)
                part, n = [], 0
    if part or (clock is not None and not parts):
        parts.append(part)
    out = []
    for part in parts:
        doc: dict[str, Any] = {"src": src, "rp": raw_partition}
        if hold:
            doc["g"] = hold
        if part:
            sids, rowss, arrivals = zip(*part)
            tids, tss, poss = zip(*chain.from_iterable(rowss))  # (events,) each, session after session
            doc.update(sid=sids, arr=arrivals, n=list(map(len, rowss)), tid=tids, ts=tss, pos=poss)
        else:
            doc.update(sid=[], arr=[], n=[], tid=[], ts=[], pos=[])
        out.append(doc)
    if clock is not None:
        out[-1]["t"] = clock
    return [orjson.dumps(doc) for doc in out]


_INT, _STR = {int}, {str}
_TIMES = {float, int, type(None)}  # of event and arrival times (bool is its own type: not among them)


def _bundle_columns(doc: dict) -> list[tuple[str, list[int], list[float | None], list[int], float | None]]:
    """A column bundle -> per session (id, tids, times, positions, arrival | None), checked with a
    few C-level passes per column over the whole bundle. Raises TypeError naming what is wrong."""
    sids, arrivals, counts, tids, tss, poss = (doc[f] for f in ("sid", "arr", "n", "tid", "ts", "pos"))
    if not all(type(c) is list for c in (sids, arrivals, counts, tids, tss, poss)):
        raise TypeError("sid, arr, n, tid, ts and pos must be lists")
    k = len(sids)
    if len(arrivals) != k or len(counts) != k:
        raise TypeError(f"{k} sessions, {len(arrivals)} arrival times, {len(counts)} event counts")
    if not k:
        if tids or tss or poss:
            raise TypeError("events without sessions")
        return []
    if set(map(type, sids)) != _STR or not all(sids):
        raise TypeError("session ids must be non-empty strings")
    if set(map(type, counts)) != _INT or min(counts) < 1:
        raise TypeError("event counts must be positive ints")
    n = sum(counts)
    if len(tids) != n or len(tss) != n or len(poss) != n:
        raise TypeError(f"{n} events counted, columns of {len(tids)} / {len(tss)} / {len(poss)}")
    if set(map(type, tids)) != _INT or min(tids) < 0:
        raise TypeError("template ids must be non-negative ints")
    if set(map(type, poss)) != _INT:
        raise TypeError("positions must be ints")
    types = set(map(type, tss))
    if not types <= _TIMES:
        raise TypeError("event times must be numbers or null")
    if int in types:  # JSON without a fraction: times stay floats, as a parsed line's are
        tss = [None if t is None else float(t) for t in tss]
    types = set(map(type, arrivals))
    if not types <= _TIMES:
        raise TypeError("arrival times must be numbers or null")
    if int in types:
        arrivals = [None if t is None else float(t) for t in arrivals]
    ends = list(accumulate(counts))  # session i's events: [ends[i] - counts[i], ends[i])
    # Positions rise within each session: every fall (or repeat) must be at a session boundary.
    falls = compress(range(1, n), map(ge, poss, islice(poss, 1, None)))  # index of the later event
    if not set(falls) <= set(ends):
        raise TypeError("positions must rise within a session")
    out = []
    a = 0
    for sid, b, arrival in zip(sids, ends, arrivals):
        out.append((sid, tids[a:b], tss[a:b], poss[a:b], arrival))
        a = b
    return out


SessionColumns = tuple[str, list[int], list[float | None], list[int], float | None]


def decode_events_columns(data: bytes | None) -> tuple[str, str, list[SessionColumns], float | None]:
    """An events record -> (source, raw partition, [(session id, tids, times, positions, arrival
    time of its last event | None)], input clock | None). Column bundles only (encode_bundles);
    anything else, or a malformed one, is a CodecError."""
    return decode_events_bundle(data)[:4]  # type: ignore[return-value]


def decode_events_bundle(data: bytes | None) -> tuple[str, str, list[SessionColumns], float | None, str]:
    """decode_events_columns and the input guard's problem with the raw topic ("" = healthy):
    what the session agent applies."""
    doc = _loads(data, "events record")
    try:
        src, rp = doc["src"], doc["rp"]
        if not isinstance(src, str) or not isinstance(rp, str):
            raise TypeError("wrong field types")
        clock = doc.get("t")
        if not (clock is None or _number(clock)):
            raise TypeError("t must be a number")
        clock = None if clock is None else float(clock)
        hold = doc.get("g", "")
        if not isinstance(hold, str):
            raise TypeError("g must be a string")
        if "sid" not in doc:
            raise TypeError("not a column bundle (no 'sid')")
        return src, rp, _bundle_columns(doc), clock, hold
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"events record: {e}") from None


def decode_events_record(data: bytes | None
                         ) -> tuple[str, str, list[tuple[str, list[tuple[int, float | None, int]], float | None]],
                                    float | None]:
    """decode_events_columns with each session's events as rows: (source, raw partition,
    [(session id, [(tid, ts, pos), ...], arrival | None)], input clock | None). For tests and tools."""
    src, rp, sessions, clock = decode_events_columns(data)
    return src, rp, [(sid, to_rows(tids, tss, poss), arrival) for sid, tids, tss, poss, arrival in sessions], clock


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ------------------------------------------------------------------------------------ windows
def window_dict(w: Window, pos: list | None = None) -> dict[str, Any]:
    """The window's fields, and "pos" (streams/positions.py, packed raw positions of its scored
    events) when known."""
    d = {f: getattr(w, f) for f in WINDOW_FIELDS}
    if pos is not None:
        d["pos"] = pos
    return d


MAX_BUNDLE_WINDOWS = 256  # windows per windows record (~100 KB of JSON)
MAX_BUNDLE_BYTES = 512 * 1024  # ... and at most this many bytes (topics take 1 MiB records)


def encode_windows(windows: Sequence[Window], max_windows: int = MAX_BUNDLE_WINDOWS, *, vocab: str,
                   hold: str = "", positions: dict[int, list] | None = None) -> list[bytes]:
    """Windows of ONE windows partition -> bundle records (order kept) of <= max_windows windows
    and <= MAX_BUNDLE_BYTES each (a bundle too big is split in halves; one window is never split).
    `vocab`: the worker's vocab_tag; `hold`: the input guard's problem ("" = healthy);
    `positions`: id(window) -> its packed raw positions ("pos"), for the windows that have them."""
    meta: dict[str, str] = {"vocab": vocab}
    if hold:
        meta["hold"] = hold
    out: list[bytes] = []
    for i in range(0, len(windows), max_windows):
        _bundle(windows[i:i + max_windows], meta, out, positions)
    return out


def _bundle(windows: Sequence[Window], meta: dict[str, str], out: list[bytes],
            positions: dict[int, list] | None = None) -> None:
    if positions:
        docs = [window_dict(w, positions.get(id(w))) for w in windows]
    else:
        docs = [window_dict(w) for w in windows]
    data = orjson.dumps({"w": docs, **meta})
    if len(data) <= MAX_BUNDLE_BYTES or len(windows) == 1:
        out.append(data)
        return
    half = len(windows) // 2
    _bundle(windows[:half], meta, out, positions)
    _bundle(windows[half:], meta, out, positions)


def decode_windows(data: bytes | None) -> list[Window | CodecError]:
    """A windows record (a bundle) -> its windows in order (see decode_windows_record)."""
    return decode_windows_record(data)[0]


def decode_windows_record(data: bytes | None) -> tuple[list[Window | CodecError], str, str]:
    """A windows record -> (its windows in order, vocab fingerprint, hold): a malformed window is a
    CodecError in its place (the scorer dead-letters it, the others are scored). A record that is
    not JSON, not a bundle or has no windows at all raises CodecError."""
    return decode_windows_bundle(data)[:3]  # type: ignore[return-value]


def decode_windows_bundle(data: bytes | None) -> tuple[list[Window | CodecError], str, str, list[list | None]]:
    """decode_windows_record and each window's packed raw positions ("pos", None when absent;
    checked only where they are used: streams/positions.py unpack, for alerts)."""
    doc = _loads(data, "window record")
    if isinstance(doc, dict) and "w" in doc and "ids" not in doc:
        items = doc["w"]
        if not isinstance(items, list) or not items:
            raise CodecError("window bundle: 'w' must be a non-empty list")
        vocab, hold = doc.get("vocab", ""), doc.get("hold", "")
        if not isinstance(vocab, str) or not isinstance(hold, str):
            raise CodecError("window bundle: 'vocab' and 'hold' must be strings")
        out: list[Window | CodecError] = []
        poss: list[list | None] = []
        for d in items:
            try:
                out.append(_window(d))
                p = d.get("pos")
                poss.append(p if type(p) is list else None)
            except CodecError as e:
                out.append(e)
                poss.append(None)
        return out, vocab, hold, poss
    raise CodecError("window record: not a window bundle ({\"w\": [window, ...], \"vocab\": ...})")


_WINDOW_KEYS = frozenset(WINDOW_FIELDS)
_WINDOW_KEYS_POS = _WINDOW_KEYS | {"pos"}


def _window(doc: Any) -> Window:
    # Runs for every window the scorer reads: C-level checks (a keys view against a set, the set of
    # the ids' types, min) instead of a Python generator per id; the field at fault is looked for
    # only once a check failed. bool is not int here (type(), not isinstance), as before.
    try:
        if not isinstance(doc, dict) or (doc.keys() != _WINDOW_KEYS and doc.keys() != _WINDOW_KEYS_POS):
            raise TypeError(f"fields {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}")
        ids, start, n_context, n_lines = doc["ids"], doc["start"], doc["n_context"], doc["n_lines"]
        if not isinstance(ids, list) or not ids or not set(map(type, ids)) <= _INT or min(ids) < 0:
            raise TypeError("ids must be a non-empty list of template ids")
        if not {type(start), type(n_context), type(n_lines)} <= _INT or min(start, n_context, n_lines) < 0:
            bad = next(f for f in ("start", "n_context", "n_lines") if type(doc[f]) is not int or doc[f] < 0)
            raise TypeError(f"{bad} must be a non-negative int")
        if n_context >= len(ids):
            raise TypeError("n_context leaves nothing to score")
        first_ts, last_ts = doc["first_ts"], doc["last_ts"]
        for f, t in (("first_ts", first_ts), ("last_ts", last_ts)):
            if not (t is None or isinstance(t, (int, float))):
                raise TypeError(f"{f} must be a number or null")
        source, session_id, reason = doc["source"], doc["session_id"], doc["reason"]
        if not (isinstance(source, str) and isinstance(session_id, str) and isinstance(reason, str)):
            raise TypeError("source, session_id and reason must be strings")
        if not isinstance(doc["final"], bool):
            raise TypeError("final must be a bool")
        return Window(source=source, session_id=session_id, start=start, ids=tuple(ids), n_context=n_context,
                      first_ts=None if first_ts is None else float(first_ts),
                      last_ts=None if last_ts is None else float(last_ts),
                      reason=reason, final=doc["final"], n_lines=n_lines)
    except (KeyError, TypeError) as e:
        raise CodecError(f"window record: {e}") from None


# ------------------------------------------------------------------------------ alerts/scores
def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_scores(events: Sequence[bytes]) -> bytes:
    """Already-encoded score envelopes -> one scores bundle record (no re-encoding)."""
    return b'{"scores":[' + b",".join(events) + b"]}"


def decode_scores(data: bytes | None) -> list[Any]:
    """A scores record (a bundle, encode_scores) -> its envelopes; CodecError for anything else."""
    doc = _loads(data, "scores record")
    if _scores_bundle(doc):
        return doc["scores"]
    raise CodecError("scores record: not a scores bundle ({\"scores\": [envelope, ...]})")


def _scores_bundle(doc: Any) -> bool:
    """`doc` is what encode_scores writes (an envelope has an "id"; a bundle has none)."""
    return isinstance(doc, dict) and isinstance(doc.get("scores"), list) and "id" not in doc


def decode_envelopes(data: bytes | None) -> list[Any]:
    """A scores record's envelopes, or an alerts record's one (readers of either topic)."""
    doc = _loads(data, "scores or alerts record")
    if _scores_bundle(doc):
        return doc["scores"]
    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
        return [doc]
    raise CodecError("neither a scores bundle nor an alert envelope")


# -------------------------------------------------------------------------------- dead letter
def escape_head(value: bytes | None, limit: int = HEAD_BYTES) -> str:
    """The first `limit` bytes, readable: UTF-8 kept, anything else as \\xNN escapes."""
    return (value or b"")[:limit].decode("utf-8", "backslashreplace")


def encode_dead_letter(reason: str, topic: str, partition: int, offset: int, value: bytes | None,
                       line: int | None = None, detail: str = "") -> bytes:
    """Why a record (or one line of it) could not be processed, with where it is and its first bytes."""
    head = (value or b"")[:HEAD_BYTES]
    return orjson.dumps({
        "reason": reason, "topic": topic, "partition": partition, "offset": offset, "line": line,
        "size": len(value or b""), "head": escape_head(head), "head_b64": base64.b64encode(head).decode(),
        "detail": detail[:500],
    })
