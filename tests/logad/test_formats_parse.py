"""Formats, masking and parse_line on real lines of the bundled data, plus hostile input."""

from __future__ import annotations

import dataclasses
import gzip
import time
from pathlib import Path

import pytest

from logad.errors import ConfigError
from logad.format_files import load_format
from logad.formats import FORMATS
from logad.masking import Masker, MaskRule, render
from logad.parse import ParseStats, content_of, iter_records, open_lines, parse_line
from logad.records import LogRecord, Rejected

DATA = Path(__file__).resolve().parents[2] / "data"
HDFS, OS = FORMATS["hdfs"], FORMATS["openstack"]

HDFS_LINE = ("081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 "
             "src: /10.250.19.102:54106 dest: /10.250.19.102:50010")
OS_LINE = ("nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:04.500 2931 INFO nova.compute.manager "
           "[req-3ea4052c-895d-4b64-9e2d-04d64c4d94ab - - - - -] [instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] "
           "VM Started (Lifecycle Event)")


def test_hdfs_line_parses_with_utc_timestamp() -> None:
    rec = parse_line(HDFS_LINE.encode(), HDFS)
    assert isinstance(rec, LogRecord)
    assert rec.source == "hdfs" and rec.level == "INFO" and rec.component == "dfs.DataNode$DataXceiver"
    assert rec.timestamp == 1226262918.0  # 2008-11-09 20:35:18 UTC
    assert rec.session_keys == ("blk_-1608999687919862906",)
    assert rec.content.startswith("Receiving block blk_-1608999687919862906 src:")
    assert not rec.truncated


def test_openstack_line_parses_with_fraction_and_instance_key() -> None:
    rec = parse_line(OS_LINE, OS)
    assert isinstance(rec, LogRecord)
    assert rec.timestamp == pytest.approx(1494892804.5)  # 2017-05-16 00:00:04.500 UTC
    assert rec.session_keys == ("b9000564-fe1a-409b-b8cc-1e88b294cd1d",)
    assert rec.content == "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started (Lifecycle Event)"
    # "for instance <uuid>" names the session too; an API line without an instance has no session
    lines = (DATA / "loghub_2k/OpenStack/OpenStack_2k.log").read_bytes().splitlines()
    vif = next(x for x in lines if b"network-vif-plugged" in x)
    assert parse_line(vif, OS).session_keys == ("b9000564-fe1a-409b-b8cc-1e88b294cd1d",)  # type: ignore[union-attr]
    api = parse_line(lines[0], OS)
    assert isinstance(api, Rejected) and api.reason == "no_session_key"


def test_every_bundled_line_parses() -> None:
    stats = ParseStats()
    recs = list(iter_records(DATA / "hdfs/HDFS_head20k.log.gz", HDFS, stats=stats))
    assert stats.lines == len(recs) == 16252 and not stats.rejected
    for ds, fmt in (("HDFS", HDFS), ("OpenStack", OS)):
        raw = (DATA / f"loghub_2k/{ds}/{ds}_2k.log").read_bytes().splitlines()
        assert all(content_of(x, fmt) is not None for x in raw)
    os_stats = ParseStats()
    list(iter_records(DATA / "loghub_2k/OpenStack/OpenStack_2k.log", OS, stats=os_stats))
    assert os_stats.records == 557 and os_stats.rejected == {"no_session_key": 1443}  # API / periodic-task lines


def test_multi_block_line_gives_every_block_once() -> None:
    line = ("081109 214043 19 INFO dfs.FSNamesystem: BLOCK* ask 10.250.17.177:50010 to delete  "
            "blk_-8570780307468499817 blk_-9122557405432088649 blk_-8570780307468499817")
    rec = parse_line(line, HDFS)
    assert isinstance(rec, LogRecord)
    assert rec.session_keys == ("blk_-8570780307468499817", "blk_-9122557405432088649")
    # ... and the list of blocks is one parameter after masking
    assert HDFS.masker.mask(rec.content) == "BLOCK* ask <IP>:<NUM> to delete <BLK>"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   \r\n", "empty"),
        (b"\x00\x00\x00\n", "empty"),
        (b"this is not an hdfs line", "unparseable"),
        (b"081109 203518 143 INFO dfs.DataNode$DataXceiver: no block named here", "no_session_key"),
        (b"081399 253518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /1.2.3.4:1", "bad_timestamp"),
    ],
)
def test_bad_lines_are_rejected_not_raised(raw: bytes, reason: str) -> None:
    r = parse_line(raw, HDFS)
    assert isinstance(r, Rejected) and r.reason == reason


def test_binary_and_nul_bytes_are_survived() -> None:
    raw = HDFS_LINE.encode().replace(b"Receiving", b"Rec\xff\xfeiving\x00")
    rec = parse_line(raw, HDFS)
    assert isinstance(rec, LogRecord)
    assert "\ufffd" in rec.content and "\x00" not in rec.content
    assert rec.session_keys == ("blk_-1608999687919862906",)
    assert isinstance(parse_line(b"\xff\xfe\x00\x81garbage", HDFS), Rejected)


def test_long_lines_are_truncated_at_the_byte_limit() -> None:
    tail = " x" * 600_000  # ~1.2 MB line
    for raw in (HDFS_LINE + tail, (HDFS_LINE + tail).encode()):
        rec = parse_line(raw, HDFS)
        assert isinstance(rec, LogRecord) and rec.truncated
        assert len(rec.content.encode()) < HDFS.max_line_bytes
    short = parse_line(HDFS_LINE + "\n", HDFS, max_line_bytes=len(HDFS_LINE))
    assert isinstance(short, LogRecord) and not short.truncated  # the newline does not count
    cut = parse_line("é" * 100, HDFS, max_line_bytes=101)  # cut inside a 2-byte character: no error
    assert isinstance(cut, Rejected)


def test_reader_bounds_memory_on_giant_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.log.gz"
    with gzip.open(p, "wb") as f:
        f.write(HDFS_LINE.encode() + b" y" * 2_000_000 + b"\n" + HDFS_LINE.encode() + b"\n")
    lines = list(open_lines(p, max_line_bytes=1000))
    assert [len(x) for x in lines] == [1001, len(HDFS_LINE) + 1]
    stats = ParseStats()
    recs = list(iter_records(p, HDFS, stats=stats, max_line_bytes=1000))
    assert len(recs) == 2 and stats.truncated == 1 and recs[0].truncated


# Near-matches for every rule, repeated to 900 KB: each must stay linear (no catastrophic backtracking).
HOSTILE = ["1.", "1.1.1.1.", "/a", "=/a", '"/', "blk_", "blk_1 ", "a1", "1,", "-", "0x", "aaaaaaaa-",
           "e3871ffd-5cd5-4287-bddd-3529f7b5951", "a1.", "a-1.", "[instance: ", "instance ", "req-",
           "/ HTTP/1.1 ", '/ HTTP/1.1"', "<A> ", "\ufffd"]


@pytest.mark.parametrize("fmt", [HDFS, OS], ids=["hdfs", "openstack"])
def test_regexes_are_linear_on_hostile_900kb_lines(fmt) -> None:  # type: ignore[no-untyped-def]
    header = HDFS_LINE[:46] if fmt is HDFS else OS_LINE[:155]
    worst = (0.0, "")
    for piece in HOSTILE:
        body = (piece * (900_000 // len(piece) + 1))[:900_000]
        took = []
        for _ in range(3):  # best of 3: a preempted run on a busy machine is not a slow regex
            masker = Masker(fmt.masking, fmt.merge_lists)  # cold caches
            t0 = time.perf_counter()
            parse_line(header + body, fmt, max_line_bytes=1 << 20)
            masker.mask(body)
            took.append(time.perf_counter() - t0)
            if took[-1] < 1.0:
                break
        worst = max(worst, (min(took), piece))
    assert worst[0] < 1.0, f"{worst[1]!r} took {worst[0]:.2f}s"


def test_masking_follows_loghub2_conventions() -> None:
    m = OS.masker.mask
    assert render(m('10.11.10.1 "GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/detail HTTP/1.1" status: 200 '
                    "len: 1893 time: 0.2477829")) == '<*> "GET <*>" status: <*> len: <*> time: <*>'
    assert render(m("10.11.21.122,10.11.10.1 \"GET /openstack/2013-10-17 HTTP/1.1\" status: 200")) == (
        '<*> "GET <*>" status: <*>')
    assert m("Final resource view: name=cp-1.slowvm1.tcloud-pg0.utah.cloudlab.us phys_ram=64172MB used_ram=2560MB") \
        == "Final resource view: name=<HOST> phys_ram=<NUM> used_ram=<NUM>"
    assert m("image 0673dd71-34c5-4fbb-86c4-40623fbe45b4 at (/var/lib/nova/instances/_base/a489c868f0c3): checking") \
        == "image <UUID> at (<PATH>): checking"
    assert m("nova.exception.NoMoreFixedIps: after 1 attempt(s)") == (
        "nova.exception.NoMoreFixedIps: after <NUM> attempt(s)")  # a module path is not a host name
    h = HDFS.masker.mask
    assert h("BLOCK* NameSystem.allocateBlock: /mnt/hadoop/mapred/system/job_200811092030_0001/job.jar. blk_-16") \
        == "BLOCK* NameSystem.allocateBlock: <PATH> <BLK>"
    assert h("10.251.30.85:50010:Got exception while serving blk_-29 to /10.251.90.64:") \
        == "<IP>:<NUM>:Got exception while serving <BLK> to <IP>:"
    assert h("Starting thread to transfer block blk_42 to 10.250.15.240:50010, 10.250.15.241:50010") \
        == "Starting thread to transfer block <BLK> to <IP>:<NUM>"


def test_needs_hints_do_not_change_masking() -> None:
    """`needs` only skips regexes that cannot match: same output as running every rule on every token."""
    hdfs = [r.content for r in iter_records(DATA / "hdfs/HDFS_head20k.log.gz", HDFS)]  # type: ignore[union-attr]
    stack = [content_of(x, OS) for x in (DATA / "loghub_2k/OpenStack/OpenStack_2k.log").read_bytes().splitlines()]
    for fmt, contents in ((HDFS, hdfs), (OS, stack)):
        plain = Masker([dataclasses.replace(r, needs="") for r in fmt.masking], fmt.merge_lists)
        assert any(r.needs for r in fmt.masking)
        for c in [*contents, *HOSTILE]:
            assert plain.mask(c) == fmt.masker.mask(c), c  # type: ignore[arg-type]


def test_masking_is_one_definition_with_a_fingerprint() -> None:
    assert HDFS.masker.fingerprint != OS.masker.fingerprint
    assert Masker(HDFS.masking).fingerprint == HDFS.masker.fingerprint
    with pytest.raises(ConfigError):
        Masker([MaskRule("bad", "x*", "<X>")])  # matches the empty string
    with pytest.raises(ConfigError):
        Masker([MaskRule("bad", "x", "not-a-placeholder")])


def test_a_third_format_is_a_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "app.toml"
    p.write_text(
        'name = "app"\n'
        "header = '(?P<timestamp>\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d) (?P<level>\\w+) (?P<content>.*)'\n"
        'timestamp_formats = ["%Y-%m-%d %H:%M:%S"]\n'
        "session_keys = ['session=(\\w+)']\n"
        "[[mask]]\nname = \"num\"\npattern = '(?<![\\w.])\\d+(?![\\w])'\nplaceholder = \"<NUM>\"\n",
        encoding="utf-8",
    )
    fmt = load_format(p)
    rec = parse_line("2024-01-02 03:04:05 WARN took 12 ms session=abc", fmt)
    assert isinstance(rec, LogRecord)
    assert rec.session_keys == ("abc",) and rec.timestamp == 1704164645.0 and rec.component == ""
    assert fmt.masker.mask(rec.content) == "took <NUM> ms session=abc"
    assert load_format("hdfs") is HDFS
    p.write_text("colour = 'red'\n" + p.read_text(), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_format(p)
    p.write_text(p.read_text().replace("colour = 'red'\n", "") + "colour = 'red'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mask #0"):  # unknown key inside a [[mask]] table
        load_format(p)
    with pytest.raises(ConfigError):
        load_format("no-such-format")
