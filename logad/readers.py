"""Raw input -> log entries -> parsed records: files, folders and .gz, multi-line entries joined.

    PATH... --expand_paths--> files (folders walked, sorted; gzip found by its magic bytes)
    file --open_lines--> raw lines --entries--> entries (one header line + its continuation lines)
         --parse_line(origin=file path)--> LogRecord | Rejected                (counted in ParseStats)

A multi-line format (`multiline = true`) joins every line that does not match the header to the
entry before it (a Java stack trace under its log line). An entry keeps at most `max_entry_lines`
continuation lines; the rest are dropped and counted (ParseStats.dropped_lines), never silently.
A continuation line with no entry before it (the head of a file cut mid-trace) stays a line of its
own and is rejected as "unparseable", as any line the header does not match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from logad.errors import ParseError
from logad.formats import LogFormat
from logad.parse import JSON_LINE_BYTES, ParseStats, open_lines, parse_line
from logad.records import LogRecord, Rejected

Line = bytes | str


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The files behind the given paths: files as given, folders walked (sorted, hidden entries
    skipped). Raises ParseError for a path that does not exist or a folder without files."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
            if not found:
                raise ParseError(f"folder {p} has no log files")
            out += found
        else:
            raise ParseError(f"{p} does not exist")
    if not out:
        raise ParseError("no input files given")
    return out


def read_limit(fmt: LogFormat) -> int:
    """Bytes read per raw line: JSON records are read whole (their message is cut to the limit)."""
    return max(fmt.max_line_bytes, JSON_LINE_BYTES) if fmt.input == "json" else fmt.max_line_bytes


def _text(line: Line) -> str:
    return line.decode("utf-8", "replace") if isinstance(line, bytes) else line


def entries(lines: Iterable[Line], fmt: LogFormat, stats: ParseStats | None = None
            ) -> Iterator[tuple[Line, int, int]]:
    """(entry, index of its first line, raw lines in it) per entry. Without `multiline` every line
    is an entry. Continuation lines are joined with "\\n" (the header regex reads across them)."""
    if not fmt.multiline:
        for i, line in enumerate(lines):
            yield line, i, 1
        return
    match = fmt.header_re.match
    cap = fmt.max_entry_lines
    head: Line | None = None
    parts: list[str] = []
    start = n = 0
    for i, line in enumerate(lines):
        text = _text(line).rstrip("\r\n")
        if match(text) is not None or head is None:
            if head is not None:
                yield (head if not parts else "\n".join([_text(head).rstrip("\r\n"), *parts])), start, n
            head, parts, start, n = line, [], i, 1
            continue
        n += 1
        if len(parts) < cap:
            parts.append(text)
            if stats is not None:
                stats.continued += 1
        elif stats is not None:
            stats.dropped_lines += 1
    if head is not None:
        yield (head if not parts else "\n".join([_text(head).rstrip("\r\n"), *parts])), start, n


def iter_entries_parsed(lines: Iterable[Line], fmt: LogFormat, origin: str = "", stats: ParseStats | None = None
                        ) -> Iterator[tuple[int, LogRecord | Rejected]]:
    """(index of the entry's first line, parse result) for every entry of the lines."""
    for entry, i, n in entries(lines, fmt, stats):
        result = parse_line(entry, fmt, origin=origin)
        if stats is not None:
            stats.add(result, n)
        yield i, result


def time_order(times: Sequence[float | None]) -> list[int]:
    """Indexes of entries in event-time order, stable: an entry without a time keeps the time of the
    entry before it, so a file already in time order keeps its order (as the stream reads it) and
    per-service logs concatenated into one file, or several files, interleave as they happened.
    Without any time at all: the input order."""
    if all(t is None for t in times):
        return list(range(len(times)))
    last = float("-inf")
    keyed = []
    for i, t in enumerate(times):
        if t is not None:
            last = t
        keyed.append((last, i))
    keyed.sort()  # (time, input index): stable
    return [i for _, i in keyed]


def iter_file_records(paths: Sequence[str | Path], fmt: LogFormat, stats: ParseStats | None = None
                      ) -> Iterator[tuple[str, int, LogRecord | Rejected]]:
    """(file, 0-based line of the entry, parse result) for every entry of every file, file by file."""
    for path in expand_paths(paths):
        origin = str(path)
        try:
            for i, result in iter_entries_parsed(open_lines(path, read_limit(fmt)), fmt, origin, stats):
                yield origin, i, result
        except ParseError:
            raise
        except OSError as e:
            raise ParseError(f"cannot read {path}: {e}") from None


def entry_texts(wanted: dict[str, set[int]], fmt: LogFormat) -> dict[tuple[str, int], str]:
    """The raw text (verbatim, lines of a multi-line entry joined by newlines) of the entries that
    start at the given lines of the given files: {(file, line): text}. One pass per file."""
    out: dict[tuple[str, int], str] = {}
    for origin, lines in wanted.items():
        if not lines:
            continue
        last = max(lines)
        for entry, i, _n in entries(open_lines(origin, read_limit(fmt)), fmt):
            if i in lines:
                out[(origin, i)] = _text(entry).rstrip("\r\n")
            if i >= last:
                break
    return out
