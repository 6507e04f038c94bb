"""Format files: every key, what it does to a parsed line, and the errors bad files get."""

from __future__ import annotations

from pathlib import Path

import pytest

from logad.errors import ConfigError
from logad.format_files import format_from_dict, load_format
from logad.parse import content_of, parse_line
from logad.records import LogRecord, Rejected

ROOT = Path(__file__).resolve().parents[2]
SPARK = r"<Date> <Time> <Level> <Component>: <Content>"
SPARK_LINE = "17/06/09 20:10:40 INFO spark.SecurityManager: Changing view acls to: yarn,curi"


def fmt(**kw):
    return format_from_dict({"name": "t", **kw}, origin="test")


def test_log_format_fields_by_role_and_timestamp_fields() -> None:
    f = fmt(log_format=SPARK, timestamp_fields=["Date", "Time"], timestamp_formats=["%y/%m/%d %H:%M:%S"],
            session_keys=[r"acls to: (\w+)"])
    rec = parse_line(SPARK_LINE, f)
    assert isinstance(rec, LogRecord)
    assert rec.level == "INFO" and rec.component == "spark.SecurityManager"
    assert rec.content == "Changing view acls to: yarn,curi"
    assert rec.timestamp == 1497039040.0  # 2017-06-09 20:10:40 UTC
    assert rec.session_keys == ("yarn",)


def test_session_field_names_the_session() -> None:
    f = fmt(log_format=r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>", session_field="Pid",
            timestamp_fields=["Date", "Day", "Time"], timestamp_formats=["%b %d %H:%M:%S"])
    rec = parse_line("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186", f)
    assert isinstance(rec, LogRecord) and rec.session_keys == ("24200",)
    assert rec.timestamp is not None  # syslog has no year: 1900, ordering within the log still holds


def test_session_from_path_uses_the_origin() -> None:
    f = fmt(log_format="<Level> <Content>", session_from_path=r"pods/([^/]+)/")
    rec = parse_line("INFO started", f, origin="/var/log/pods/web-7f9c/app.log")
    assert isinstance(rec, LogRecord) and rec.session_keys == ("web-7f9c",)
    bad = parse_line("INFO started", f, origin="/elsewhere/app.log")
    assert isinstance(bad, Rejected) and bad.reason == "no_session_key"
    whole = fmt(log_format="<Level> <Content>", session_from_path=".+")
    assert parse_line("INFO x", whole, origin="container-42").session_keys == ("container-42",)  # type: ignore[union-attr]


def test_time_windows_per_origin() -> None:
    f = fmt(log_format="<Date> <Time> <Content>", timestamp_fields=["Date", "Time"],
            timestamp_formats=["%Y-%m-%d %H:%M:%S"], session_window_s=60)
    a = parse_line("2024-01-01 00:00:59 a", f, origin="node1")
    b = parse_line("2024-01-01 00:01:00 b", f, origin="node1")
    c = parse_line("2024-01-01 00:00:10 c", f, origin="node2")
    assert a.session_keys == ("node1@1704067200",)  # type: ignore[union-attr]
    assert b.session_keys == ("node1@1704067260",)  # type: ignore[union-attr]
    assert c.session_keys == ("node2@1704067200",)  # type: ignore[union-attr]
    untimed = fmt(log_format="<Date> <Time> <Content>", timestamp_fields=["Date", "Time"],
                  timestamp_formats=["%Y-%m-%d %H:%M:%S"], session_window_s=60)
    r = parse_line("yesterday noon c", untimed)
    assert isinstance(r, Rejected) and r.reason == "bad_timestamp"


def test_named_timestamp_formats() -> None:
    f = fmt(log_format="<Ts> <Content>", timestamp_fields=["Ts"], timestamp_formats=["iso8601", "epoch"],
            session_keys=["(x)"])
    assert parse_line("2024-01-01T00:00:00Z x", f).timestamp == 1704067200.0  # type: ignore[union-attr]
    assert parse_line("2024-01-01T01:00:00+01:00 x", f).timestamp == 1704067200.0  # type: ignore[union-attr]
    assert parse_line("1704067200.5 x", f).timestamp == 1704067200.5  # type: ignore[union-attr]
    assert parse_line("noon x", f).reason == "bad_timestamp"  # type: ignore[union-attr]


def test_json_input_field_mapping() -> None:
    f = fmt(input="json", session_keys=[], json={"message": "log.msg", "timestamp": "@timestamp",
                                                  "level": "lvl", "session": "trace.id"})
    line = ('{"@timestamp": "2024-05-01T10:00:00.250Z", "lvl": "ERROR", "trace": {"id": "abc"},'
            ' "log": {"msg": "payment 42 failed"}}')
    rec = parse_line(line, f)
    assert isinstance(rec, LogRecord)
    assert (rec.content, rec.level, rec.session_keys) == ("payment 42 failed", "ERROR", ("abc",))
    assert rec.timestamp == pytest.approx(1714557600.25)
    assert parse_line("{not json", f).reason == "bad_json"  # type: ignore[union-attr]
    assert parse_line("[1, 2]", f).reason == "bad_json"  # type: ignore[union-attr]
    assert parse_line('{"log": {"msg": 5}, "trace": {"id": "a"}}', f).reason == "no_message"  # type: ignore[union-attr]
    assert parse_line('{"log": {"msg": "m"}}', f).reason == "no_session_key"  # type: ignore[union-attr]
    # epoch milliseconds from a shipper, and a raw line inside the message parsed with log_format
    g = fmt(input="json", log_format=SPARK, session_keys=[r"acls to: (\w+)"], json={"timestamp": "ts"})
    rec = parse_line('{"message": "%s", "ts": 1497039040123}' % SPARK_LINE, g)
    assert isinstance(rec, LogRecord) and rec.level == "INFO" and rec.timestamp == pytest.approx(1497039040.123)
    assert content_of('{"message": "%s"}' % SPARK_LINE, g) == "Changing view acls to: yarn,curi"


def test_json_path_field_feeds_session_from_path() -> None:
    f = fmt(input="json", session_from_path=r"containers/(\w+)", json={"path": "file.path"})
    rec = parse_line('{"message": "hi", "file": {"path": "/var/containers/c1/x.log"}}', f)
    assert isinstance(rec, LogRecord) and rec.session_keys == ("c1",)


def test_multiline_header_reads_across_lines() -> None:
    f = fmt(log_format="<Date> <Time> <Level> <Content>", multiline=True, session_keys=[r"order (\d+)"])
    entry = "2024-01-01 00:00:00 ERROR order 7 failed\njava.lang.IllegalStateException: boom\n\tat a.B.c(B.java:1)"
    rec = parse_line(entry, f)
    assert isinstance(rec, LogRecord) and rec.session_keys == ("7",)
    assert rec.content.endswith("at a.B.c(B.java:1)") and "IllegalStateException" in rec.content


def test_default_masks_and_opting_out() -> None:
    f = fmt(log_format="<Content>", session_keys=["(x)"])
    assert f.masker.mask("took 12 ms from 10.0.0.1") == "took <NUM> ms from <IP>"
    own = fmt(log_format="<Content>", session_keys=["(x)"], default_masks=False,
              mask=[{"name": "ord", "pattern": r"ORD-\d+", "placeholder": "<ORD>"}])
    assert own.masker.mask("ORD-12 took 12 ms") == "<ORD> took 12 ms"


def test_parse_only_formats_need_no_session_rule() -> None:
    f = fmt(log_format=SPARK)
    assert content_of(SPARK_LINE, f) == "Changing view acls to: yarn,curi"
    assert f.session_rule == ""
    with pytest.raises(ConfigError, match="no session rule"):
        f.require_sessions()


@pytest.mark.parametrize("kw, message", [
    ({}, "missing key 'log_format'"),
    ({"log_format": "<Level> <Message>"}, "Content"),
    ({"log_format": "<Level><Content>"}, "need text between"),
    ({"log_format": "<Lev el> <Content>"}, "letters, digits"),
    ({"log_format": "<A> <A> <Content>"}, "twice"),
    ({"log_format": "<Content>", "header": "(?P<content>.*)"}, "not both"),
    ({"log_format": "<Content>", "session_field": "Pid"}, "not a header field"),
    ({"log_format": "<Content>", "timestamp_fields": ["Date"]}, "not a header field"),
    ({"log_format": "<Content>", "timestamp_formats": ["%Y"]}, "no timestamp field"),
    ({"log_format": "<Content>", "session_keys": ["(a)"], "session_field": "Content"}, "choose one session rule"),
    ({"log_format": "<Content>", "session_window_s": 60}, "needs a positive number of seconds and a timestamp"),
    ({"log_format": "<Content>", "session_keys": ["(a)(b)"]}, "at most one group"),
    ({"log_format": "<Content>", "session_keys": ["("]}, "invalid regex"),
    ({"log_format": "<Content>", "input": "xml"}, "input must be one of"),
    ({"log_format": "<Content>", "json": {"message": "m"}}, "input is not"),
    ({"input": "json", "json": {"msg": "m"}}, "unknown keys"),
    ({"input": "json", "json": {"message": 3}}, "dotted field path"),
    ({"log_format": "<Content>", "multiline": "yes"}, "multiline must be bool"),
    ({"log_format": "<Content>", "max_entry_lines": 0}, "max_entry_lines"),
    ({"log_format": "<Content>", "session_window_s": "60"}, "session_window_s must be float"),
    ({"log_format": "<Content>", "timestamp_fields": "Date"}, "list of strings"),
    ({"log_format": "<Content>", "mask": [{"name": "x"}]}, "mask #0"),
    ({"log_format": "<Content>", "mask": [{"name": "x", "pattern": "", "placeholder": "<X>"}]}, "empty string"),
])
def test_bad_format_files_name_the_problem(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fmt(**kw)


def test_bad_name_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name must be"):
        format_from_dict({"name": "my app!", "log_format": "<Content>"})
    p = tmp_path / "f.toml"
    p.write_text("name = 'x'\nlog_format = '<Content>\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_format(p)


def test_shipped_format_files_load() -> None:
    for p in sorted((ROOT / "formats").rglob("*.toml")):
        f = load_format(p)
        assert f.source_text and f.name
