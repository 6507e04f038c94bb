"""Readers: folders and .gz, multi-line entries with a counted cap, origins per file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from logad.errors import ParseError
from logad.format_files import format_from_dict
from logad.parse import ParseStats
from logad.readers import entries, expand_paths, iter_file_records
from logad.records import LogRecord, Rejected

JAVA = format_from_dict({"name": "java", "log_format": "<Date> <Time> <Level> <Content>", "multiline": True,
                         "max_entry_lines": 3, "session_keys": [r"req=(\w+)"]})
TRACE = [
    "2024-01-01 00:00:00 INFO req=a start",
    "2024-01-01 00:00:01 ERROR req=a failed",
    "java.lang.RuntimeException: boom",
    "\tat x.Y.z(Y.java:10)",
    "\tat x.Y.w(Y.java:20)",
    "\tat x.Y.v(Y.java:30)",
    "\tat x.Y.u(Y.java:40)",
    "2024-01-01 00:00:02 INFO req=a done",
]


def test_continuation_lines_join_their_entry_with_a_counted_cap() -> None:
    stats = ParseStats()
    got = list(entries(TRACE, JAVA, stats))
    assert [(i, n) for _, i, n in got] == [(0, 1), (1, 6), (7, 1)]
    text = got[1][0]
    assert text.count("\n") == 3 and text.endswith("(Y.java:20)")  # 3 continuation lines kept
    assert stats.continued == 3 and stats.dropped_lines == 2


def test_orphan_continuation_is_its_own_unparseable_entry(tmp_path: Path) -> None:
    p = tmp_path / "cut.log"
    p.write_text("\tat x.Y.z(Y.java:10)\n" + "\n".join(TRACE) + "\n", encoding="utf-8")
    stats = ParseStats()
    out = list(iter_file_records([p], JAVA, stats))
    assert isinstance(out[0][2], Rejected) and out[0][2].reason == "unparseable"
    assert [type(r) for _, _, r in out[1:]] == [LogRecord] * 3
    assert stats.lines == 9 and stats.records == 3 and stats.dropped_lines == 2
    assert stats.rejected_rate == pytest.approx(1 / 9)


def test_single_line_formats_never_join() -> None:
    flat = format_from_dict({"name": "flat", "log_format": "<Date> <Time> <Level> <Content>",
                             "session_keys": [r"req=(\w+)"]})
    assert len(list(entries(TRACE, flat))) == len(TRACE)


def test_folders_gzip_and_origins(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.log").write_text(TRACE[0] + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "b" / "c.log.gz", "wt") as f:
        f.write(TRACE[7] + "\n")
    (tmp_path / ".hidden").write_text("x\n")
    files = expand_paths([tmp_path])
    assert [f.name for f in files] == ["a.log", "c.log.gz"]
    origins = [o for o, _, r in iter_file_records([tmp_path], JAVA) if isinstance(r, LogRecord)]
    assert origins == [str(tmp_path / "a.log"), str(tmp_path / "b" / "c.log.gz")]
    with pytest.raises(ParseError, match="does not exist"):
        expand_paths([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParseError, match="no log files"):
        expand_paths([tmp_path / "empty"])


def test_time_order_is_stable_and_carries_times_forward() -> None:
    from logad.readers import time_order

    assert time_order([3.0, 1.0, None, 2.0, 1.0]) == [1, 2, 4, 3, 0]  # None keeps 1.0, the time before it
    assert time_order([1.0, 1.0, 2.0]) == [0, 1, 2]  # already in order: unchanged
    assert time_order([None, None]) == [0, 1]
