"""Raw log line (bytes or str) -> LogRecord, or Rejected with a reason. Pure; never raises on bad input.

    b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38 terminating"
      -> LogRecord(source="hdfs", timestamp=1226262975.0, level="INFO", component="dfs.DataNode$...",
                   content="PacketResponder 1 for block blk_38 terminating", session_keys=("blk_38",))

This is the streaming hot path (one call per Kafka record): one anchored header regex, one
`findall` per session-key rule, a cached timestamp, no intermediate dicts.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from logad.errors import ParseError
from logad.formats import TIME_EPOCH, TIME_EPOCH_MS, LogFormat, named_time
from logad.records import LogRecord, Rejected

DETAIL_CHARS = 120  # how much of a bad line a Rejected keeps (enough to recognise it, bounded)


def _decode(raw: bytes | bytearray | memoryview, limit: int) -> tuple[str, bool]:
    if isinstance(raw, memoryview):
        raw = raw.tobytes()
    if raw.endswith((b"\n", b"\r")):  # the line ending does not count towards the limit
        raw = raw.rstrip(b"\r\n")
    truncated = len(raw) > limit
    if truncated:
        raw = raw[:limit]
    # "replace": a bad byte becomes U+FFFD instead of failing the line (logs mix encodings);
    # a multi-byte character cut by the limit ends up as one U+FFFD too.
    return bytes(raw).decode("utf-8", "replace"), truncated


def _limit_str(text: str, limit: int) -> tuple[str, bool]:
    if text.endswith(("\n", "\r")):
        text = text.rstrip("\r\n")
    if len(text) <= limit // 4:  # cannot exceed the byte limit (UTF-8 is at most 4 bytes per char)
        return text, False
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def parse_line(raw: bytes | str, fmt: LogFormat, max_line_bytes: int | None = None,
               origin: str = "") -> LogRecord | Rejected:
    """Parse one raw line (or one multi-line entry). Lines longer than the limit (bytes) are cut there
    and marked truncated. `origin` is where the line came from (a file path offline, the Kafka record
    key in the stream): session_from_path and session_window_s sessions are named from it.

    Rejected reasons: "empty", "unparseable" (header does not match), "bad_timestamp",
    "no_timestamp" (time windows need one), "no_session_key" (nothing to attach the event to),
    "bad_json" / "no_message" (JSON input).
    """
    fields = parse_fields(raw, fmt, max_line_bytes, origin)
    if type(fields) is Rejected:
        return fields
    return LogRecord(fmt.name, *fields)


Fields = tuple[float | None, str, str, str, tuple[str, ...], bool]  # LogRecord's fields after source


def parse_fields(raw: bytes | str, fmt: LogFormat, max_line_bytes: int | None = None, origin: str = ""
                 ) -> Fields | Rejected:
    """parse_line without the LogRecord: (timestamp, level, component, content, session_keys,
    truncated), in LogRecord's field order, or Rejected. The streaming ingest's hot path (a tuple
    is several times cheaper to build than the dataclass)."""
    limit = fmt.max_line_bytes if max_line_bytes is None else max_line_bytes
    if fmt.input == "json":
        limit = max(limit, JSON_LINE_BYTES)  # the limit applies to the message, not the JSON around it
    if type(raw) is bytes and len(raw) <= limit:  # the common case, inlined
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        truncated = False
    elif isinstance(raw, str):
        text, truncated = _limit_str(raw, limit)
    else:
        text, truncated = _decode(raw, limit)
    if "\x00" in text:  # NUL runs appear in logs after crashes (preallocated, zeroed blocks)
        text = text.replace("\x00", "")
    if not text or text.isspace():
        return Rejected("empty")
    if not fmt.full_header:
        return _parse_general(text, truncated, fmt, origin)
    m = fmt.header_re.match(text)
    if m is None:
        return Rejected("unparseable", text[:DETAIL_CHARS])
    ts_text, level, component, content = m.group("timestamp", "level", "component", "content")
    level = level or ""
    component = component or ""
    session_res = fmt.session_res
    if len(session_res) == 1:  # fast path (both built-ins): one findall, usually one key
        keys = tuple(session_res[0].findall(content))
        if len(keys) > 1:
            keys = tuple(dict.fromkeys(keys))
    else:
        keys = fmt.find_session_keys(content)
    if not keys:
        return Rejected("no_session_key", text[:DETAIL_CHARS])
    ts = None
    if ts_text is not None and fmt.timestamp_formats:
        ts = fmt.ts_cache.get(ts_text)  # inlined fast path of fmt.parse_timestamp
        if ts is None:
            ts = fmt.parse_timestamp(ts_text)
            if ts is None:
                return Rejected("bad_timestamp", text[:DETAIL_CHARS])
    return ts, level, component, content, keys, truncated


JSON_LINE_BYTES = 1 << 20  # a JSON record is read whole up to this size; its message is then cut to the limit


def _walk(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _json_time(value: Any, fmt: LogFormat) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if fmt.timestamp_formats:
            for f in fmt.timestamp_formats:
                if f in (TIME_EPOCH, TIME_EPOCH_MS):
                    return named_time(value, f)
            return None
        return named_time(value, TIME_EPOCH_MS if abs(value) > 1e11 else TIME_EPOCH)  # ms after 1973 as s
    if isinstance(value, str):
        return fmt.parse_timestamp(value)
    return None


def _parse_general(text: str, truncated: bool, fmt: LogFormat, origin: str) -> Fields | Rejected:
    """Every format but the built-ins' shape: header fields by role, JSON input, any session rule."""
    doc: Any = None
    if fmt.input == "json":
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            return Rejected("bad_json", f"{e}: {text[:DETAIL_CHARS]}")
        if not isinstance(doc, dict):
            return Rejected("bad_json", f"not a JSON object: {text[:DETAIL_CHARS]}")
        paths = fmt.json_paths
        msg = _walk(doc, paths["message"])
        if not isinstance(msg, str) or not msg.strip():
            return Rejected("no_message", f"no text at {'.'.join(paths['message'])}: {text[:DETAIL_CHARS]}")
        msg, cut = _limit_str(msg, fmt.max_line_bytes)
        truncated = truncated or cut
        text = msg
    m = fmt.header_re.match(text)
    if m is None:
        return Rejected("unparseable", text[:DETAIL_CHARS])
    ts_text, level, component, content = fmt.header_fields(m)
    ts = None
    if ts_text is not None:
        ts = fmt.parse_timestamp(ts_text)
        if ts is None:
            return Rejected("bad_timestamp", text[:DETAIL_CHARS])
    if doc is not None:
        paths = fmt.json_paths
        if "timestamp" in paths:
            raw_ts = _walk(doc, paths["timestamp"])
            ts = _json_time(raw_ts, fmt) if raw_ts is not None else None
            if ts is None and raw_ts is not None:
                return Rejected("bad_timestamp", f"{raw_ts!r}: {text[:DETAIL_CHARS]}")
        for role in ("level", "component"):
            if role in paths:
                v = _walk(doc, paths[role])
                if v is not None:
                    if role == "level":
                        level = str(v)
                    else:
                        component = str(v)
        if "path" in paths:
            p = _walk(doc, paths["path"])
            origin = str(p) if p is not None else origin
    rule = fmt.session_rule
    keys: tuple[str, ...]
    if rule == "session_keys":
        keys = fmt.find_session_keys(content)
    elif rule == "session_field":
        v = m.group(fmt.session_field)
        keys = (v,) if v else ()
    elif rule == "json.session":
        v = _walk(doc, fmt.json_paths["session"])
        keys = (str(v),) if v is not None and v != "" and not isinstance(v, dict | list) else ()
    elif rule == "session_from_path":
        k = fmt.key_from_origin(origin)
        keys = (k,) if k else ()
    elif rule == "session_window_s":
        if ts is None:
            return Rejected("no_timestamp", text[:DETAIL_CHARS])
        keys = (fmt.window_key(origin, ts),)
    else:
        keys = ()
    if not keys:
        return Rejected("no_session_key", text[:DETAIL_CHARS])
    return ts, level, component, content, keys, truncated


def content_of(line: bytes | str, fmt: LogFormat, max_line_bytes: int | None = None) -> str | None:
    """The message part of a line (header stripped), session key or not; None when the header does not match.

    For template mining and parser evaluation, where lines without a session key still count.
    """
    limit = fmt.max_line_bytes if max_line_bytes is None else max_line_bytes
    if fmt.input == "json":
        r = parse_fields(line, fmt, limit)
        if type(r) is not Rejected:
            return r[3]  # type: ignore[index]
        return None if r.reason not in ("no_session_key", "no_timestamp") else _json_content(line, fmt)
    text = _limit_str(line, limit)[0] if isinstance(line, str) else _decode(line, limit)[0]
    m = fmt.header_re.match(text.replace("\x00", ""))
    return None if m is None else fmt.header_fields(m)[3]


def _json_content(line: bytes | str, fmt: LogFormat) -> str | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    msg = _walk(doc, fmt.json_paths["message"])
    if not isinstance(msg, str):
        return None
    m = fmt.header_re.match(msg)
    return None if m is None else fmt.header_fields(m)[3]


@dataclass
class ParseStats:
    """Counters for a stream of parse results (exported as metrics and printed by the CLI)."""

    lines: int = 0  # raw lines read
    records: int = 0  # LogRecords produced
    truncated: int = 0  # records cut at max_line_bytes
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> count
    continued: int = 0  # continuation lines joined to the entry before them (multi-line formats)
    dropped_lines: int = 0  # continuation lines beyond max_entry_lines, dropped

    def add(self, result: LogRecord | Rejected, lines: int = 1) -> None:
        self.lines += lines
        if isinstance(result, LogRecord):
            self.records += 1
            if result.truncated:
                self.truncated += 1
        else:
            self.rejected[result.reason] += 1

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"lines": self.lines, "records": self.records, "truncated": self.truncated,
                                "rejected": dict(sorted(self.rejected.items()))}
        if self.continued or self.dropped_lines:
            d.update(continued=self.continued, dropped_lines=self.dropped_lines)
        return d

    @property
    def unparsed(self) -> int:
        """Raw lines that gave no record (a continuation line counts with its entry)."""
        return self.lines - self.records - self.continued - self.dropped_lines

    @property
    def rejected_rate(self) -> float:
        """Share of raw lines that gave no record."""
        return self.unparsed / self.lines if self.lines else 0.0


def _read_bounded(f: IO[bytes], limit: int) -> Iterator[bytes]:
    """Lines of a binary file; a line longer than `limit` is yielded cut (limit + 1 bytes, so the
    parser still sees it as over-long) and its rest skipped, so memory stays bounded."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            yield line
            while True:  # skip the rest of the over-long line
                rest = f.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            continue
        yield line


def open_lines(path: str | Path, max_line_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Raw lines (bytes, newline kept) of a plain or gzip file, read lazily; gzip is detected by magic."""
    p = Path(path)
    try:
        with p.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        f: IO[bytes] = gzip.open(p, "rb") if gz else p.open("rb")  # type: ignore[assignment]
    except OSError as e:
        raise ParseError(f"cannot read {p}: {e.strerror or e}") from None
    with f:
        try:
            yield from _read_bounded(f, max_line_bytes)
        except (OSError, EOFError) as e:  # corrupt or truncated gzip
            raise ParseError(f"{p}: {e}") from None


def iter_records(
    source: str | Path | Iterable[bytes | str],
    fmt: LogFormat,
    *,
    stats: ParseStats | None = None,
    max_line_bytes: int | None = None,
    include_rejected: bool = False,
) -> Iterator[LogRecord | Rejected]:
    """Parse a file (path; gzip or plain, read lazily) or an iterable of raw lines.

    Yields LogRecords, plus the Rejected results when include_rejected; `stats` counts both.
    """
    limit = fmt.max_line_bytes if max_line_bytes is None else max_line_bytes
    lines = open_lines(source, limit) if isinstance(source, (str, Path)) else source
    for raw in lines:
        result = parse_line(raw, fmt, limit)
        if stats is not None:
            stats.add(result)
        if include_rejected or isinstance(result, LogRecord):
            yield result
