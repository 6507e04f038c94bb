"""5. Poison pills: non-UTF-8 bytes, NUL bytes, empty values, 900 KB lines, lines crafted to make the
masking regexes backtrack, 100k-token lines.

Documented behaviour (streams/ingest.py, logad/parse.py), checked here per pill:
  * a record that is empty or larger than ingest.max_record_bytes -> dead letter ("empty", "too_large")
  * a line whose header does not parse / has no session key / an impossible time -> dead letter
    ("unparseable", "no_session_key", "bad_timestamp") with topic, partition, offset and line index
  * non-UTF-8 bytes in a parseable line -> parsed with U+FFFD, counted (`non_utf8`)
  * NUL bytes -> removed before parsing (an all-NUL line is then "empty")
  * a line longer than ingest.max_line_bytes -> cut there, parsed, counted (`truncated`)
and the records after the pills are still turned into events (the stream goes on). Through Kafka
the same pills precede the replay in tests/reliability/test_worker_faults.py (scenario 2).

Cost (in-process, parse_line + TemplateVocab.match, the per-line work of ingest): p99 per line of
each pill vs a normal line of the sample. Lines are cut at 64 KiB first, so a long pill costs what
64 KiB of text costs: its p99 is compared with a benign line of the same length (real HDFS
contents), which isolates what the crafting adds (backtracking would show as a large ratio there);
the ratio to a typical ~150-byte line is reported too.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from logad.config import IngestConfig
from logad.formats import FORMATS
from logad.parse import content_of, open_lines, parse_line
from logad.templates import TemplateVocab
from streams.ingest import Ingestor, RawRecord
from tests.reliability.harness import MODEL, RAW, record

pytestmark = [pytest.mark.reliability]

HDFS = FORMATS["hdfs"]
HEADER = b"081109 203615 148 INFO dfs.DataNode$PacketResponder: "
LIMIT = IngestConfig().max_line_bytes  # 64 KiB: the deployed default


def fake_blk(i: int) -> str:
    return f"blk_-91000000000000000{i:02d}"


# (name, raw record, session id it opens or None, expected dead-letter reason or None)
POISON: list[tuple[str, bytes, str | None, str | None]] = [
    ("non_utf8_junk", b"\xff\xfe\x80 not a log line \xc3\x28", None, "unparseable"),
    ("non_utf8_in_line", HEADER + b"Receiving block " + fake_blk(1).encode() + b" src: \xff\xfe\x80 \xc3\x28", fake_blk(1),
     None),
    ("nul_in_line", HEADER + b"\x00" * 64 + b"Receiving block " + fake_blk(2).encode() + b"\x00" * 64, fake_blk(2), None),
    ("nul_only", b"\x00" * 4096, None, "empty"),
    ("empty_value", b"", None, "empty"),
    ("whitespace_only", b" \t  \t ", None, "empty"),
    ("no_session_key", HEADER + b"PacketResponder 1 terminating", None, "no_session_key"),
    ("bad_timestamp", b"089999 996199 148 INFO dfs.DataNode: Receiving block " + fake_blk(3).encode(), None,
     "bad_timestamp"),
    ("line_900kb", HEADER + b"Receiving block " + fake_blk(4).encode() + b" src: " + b"x" * 900_000, fake_blk(4), None),
    ("record_2mb", HEADER + b"y" * (2 * 1024 * 1024), None, "too_large"),
    ("backtrack_ip_200kb", HEADER + fake_blk(5).encode() + b" " + b"1." * 100_000, fake_blk(5), None),
    ("backtrack_path_200kb", HEADER + fake_blk(6).encode() + b' ' + b'"/' * 100_000, fake_blk(6), None),
    ("backtrack_host_200kb", HEADER + fake_blk(7).encode() + b" " + b"a1." * 66_000, fake_blk(7), None),
    ("tokens_100k", HEADER + fake_blk(8).encode() + b" " + b"a " * 100_000, fake_blk(8), None),
]
STREAM_POISON = [(name, value, sid) for name, value, sid, _ in POISON]
DEAD = {name: reason for name, _, _, reason in POISON if reason}


def check_poison_dead_letters(dead: list[dict], topic: str, first_offset: int = 0) -> dict[str, int]:
    """Every pill that must be dead-lettered is, with its reason and raw offset; nothing else is."""
    got = {(d["offset"], d["reason"]) for d in dead if d["topic"] == topic}
    want = {(first_offset + i, reason) for i, (_, _, _, reason) in enumerate(POISON) if reason}
    assert got == want, f"dead letters {sorted(got)} != expected {sorted(want)}"
    for d in dead:
        assert d["partition"] == 0 and d["size"] <= 3 * 1024 * 1024 and len(d["head"]) <= 1100, d
    out: dict[str, int] = {}
    for _, reason in got:
        out[reason] = out.get(reason, 0) + 1
    return out


@pytest.fixture(scope="module")
def vocab() -> TemplateVocab:
    return TemplateVocab.load(MODEL / "template_vocab.json", HDFS)


def test_each_pill_is_dead_lettered_or_parsed_as_documented(vocab: TemplateVocab) -> None:
    normal = list(open_lines(RAW))[:200]
    ing = Ingestor(HDFS, vocab, max_record_bytes=IngestConfig().max_record_bytes, max_line_bytes=LIMIT)
    records = [RawRecord("logs.hdfs", 0, i, None, value) for i, (_, value, _, _) in enumerate(POISON)]
    records += [RawRecord("logs.hdfs", 0, len(POISON) + i, None, line) for i, line in enumerate(normal)]
    out = ing.process(records)
    dead = [orjson.loads(v) for _, v in out.dead]
    per_pill = check_poison_dead_letters(dead, "logs.hdfs")
    for d in dead:  # the line index is set for line-level rejections, the head is escaped
        name = POISON[d["offset"]][0]
        assert d["line"] == (None if DEAD[name] in ("empty", "too_large") and name != "nul_only"
                             and name != "whitespace_only" else 0), d
    sessions = {sid for by_session in out.groups.values() for sid in by_session}
    opened = {sid for _, _, sid, _ in POISON if sid}
    assert opened <= sessions, f"pills that parse must open their session: {opened - sessions}"
    # The stream goes on: every normal line after the pills became an event of its block.
    expected_normal = {key for line in normal for key in parse_line(line, HDFS).session_keys}
    assert expected_normal <= sessions
    assert ing.counters["non_utf8"] == 2  # the junk record and the line with bad bytes
    assert ing.stats.truncated == 5  # 900 KB, the three backtracking lines, the 100k-token line
    assert ing.counters["events"] == len(normal) + len(opened)
    record("5a poison pills: outcome per pill (in-process Ingestor)", True,
           dead_letters=per_pill, non_utf8_counted=ing.counters["non_utf8"], truncated_counted=ing.stats.truncated,
           parsed_pills=sorted(n for n, _, sid, _ in POISON if sid), later_normal_lines_evented=len(normal))


def _cost_us(line: bytes, vocab: TemplateVocab) -> float:
    t = time.perf_counter()
    rec = parse_line(line, HDFS, LIMIT)
    content = getattr(rec, "content", None)
    if content is not None:
        vocab.match(content)
    return (time.perf_counter() - t) * 1e6


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _benign(length: int, lines: list[bytes], n: int) -> list[bytes]:
    """n lines of `length` bytes of real HDFS contents one after another, the digits of each
    permuted differently: ordinary long lines (a dump, a trace) whose values no cache has seen yet,
    like a pill's."""
    rng = random.Random(length)
    contents = [c.encode() for c in (content_of(x, HDFS) for x in lines[:4000]) if c]
    body, i = bytearray(), 0
    while len(body) < length:
        body += contents[i % len(contents)] + b" "
        i += 1
    body = bytes(body[:length - len(HEADER)])
    out = []
    for _ in range(n):
        digits = list(b"0123456789")
        rng.shuffle(digits)
        out.append(HEADER + body.translate(bytes.maketrans(b"0123456789", bytes(digits))))
    return out


COST_PILLS = ["non_utf8_in_line", "nul_in_line", "non_utf8_junk", "no_session_key", "line_900kb",
              "backtrack_ip_200kb", "backtrack_path_200kb", "backtrack_host_200kb", "tokens_100k"]
# Hostile patterns at a normal line's length (~150 B): no length excuse, compared with normal lines.
SHORT_HOSTILE = {
    "short_ip_dots": b"1." * 60, "short_slashes": b'"/' * 60, "short_host": b"a1." * 40, "short_dashes": b"a-" * 60,
    "short_hex": b"0" * 120 + b"g", "short_uuidish": b"e3871ffd-5cd5-4287-bddd-3529f7b5951" * 3,
}


def test_pill_cost_is_bounded(vocab: TemplateVocab) -> None:
    lines = list(open_lines(RAW))
    for line in lines[:4000]:  # warm caches: the steady state of a running worker
        _cost_us(line, vocab)
    normal = [_cost_us(line, vocab) for line in lines[4000:12000]]
    normal_p99 = _p(normal, 0.99)
    mean_len = sum(map(len, lines[4000:12000])) / 8000
    reps = 25
    rows: dict[str, Any] = {}
    failures = []
    pills = {name: value for name, value, _, _ in POISON if name in COST_PILLS}
    pills.update({k: HEADER + fake_blk(9).encode() + b" " + v for k, v in SHORT_HOSTILE.items()})
    benign_p99: dict[int, float] = {}
    pills["blk_tokens_100k"] = HEADER + b" ".join(b"blk_-92%d" % i for i in range(100_000))
    for name, value in pills.items():
        # A new suffix per run (no cache can answer for the pill); each sample is the best of 3 runs,
        # so that another job preempting this 2-core box does not pass for a slow regex.
        costs = [min(_cost_us(value + b" %d" % (3 * i + j), vocab) for j in range(3)) for i in range(reps)]
        p99 = _p(costs, 0.99)
        effective = min(len(value), LIMIT)
        row = {"bytes": len(value), "p50_us": round(_p(costs, 0.5), 1), "p99_us": round(p99, 1),
               "x_normal_line": round(p99 / normal_p99, 1)}
        rec = parse_line(value, HDFS, LIMIT)
        row["session_keys"] = len(getattr(rec, "session_keys", ()))
        if effective > 4 * mean_len:  # long: compare with a benign line of the same (cut) length
            if effective not in benign_p99:
                variants = _benign(effective, lines, 3 * reps)
                benign_p99[effective] = _p([min(_cost_us(v, vocab) for v in variants[3 * i:3 * i + 3])
                                            for i in range(reps)], 0.99)
            ref = benign_p99[effective]
            row.update(benign_p99_us=round(ref, 1), x_benign_same_length=round(p99 / ref, 2))
            if p99 > 10 * ref:
                failures.append(f"{name}: p99 {p99:.0f} us > 10x a benign line of {effective} B ({ref:.0f} us)")
        elif p99 > 10 * normal_p99:
            failures.append(f"{name}: p99 {p99:.0f} us > 10x a normal line ({normal_p99:.1f} us)")
        rows[name] = row
    record("5b poison pills: per-line cost (parse_line + TemplateVocab.match)", not failures,
           normal_line={"mean_bytes": round(mean_len), "p50_us": round(_p(normal, 0.5), 1),
                        "p99_us": round(normal_p99, 1)},
           max_line_bytes=LIMIT, pills=rows)
    assert not failures, failures
