"""The stream's fast paths, each held equal to its reference on seeded random inputs (many cases):

    Ingestor._fast_lines (parse_fields inlined)   == Ingestor._reference_lines (logad.parse.parse_fields)
    kafka_clients.key_partitions (numpy murmur2)  == aiokafka.partitioner.murmur2, Kafka's partitioner
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from logad.formats import FORMATS, LogFormat
from logad.parse import content_of, open_lines
from logad.templates import DriftMiner, TemplateVocab
from streams.ingest import Ingestor, RawRecord

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {"hdfs": ROOT / "data/hdfs/HDFS_head20k.log.gz", "openstack": ROOT / "data/loghub_2k/OpenStack/OpenStack_2k.log"}

# What the fast path must hand to parse_fields (or reject as it would): blank, spaces, NULs, over-long,
# no header, no session key, timestamps it has not cached (or that do not parse), several keys, CR
# endings; and non-ASCII lines, which send their whole record to the reference path.
HDFS_ODD = [b"", b"   ", b"\t", b"081109 203518 143 INFO dfs.DataNode: Receiving block blk_1\x00\x00 src: /1.2.3.4:5",
            b"081109 203518 143 INFO dfs.DataNode: " + b"x" * 300 + b" blk_7", b"garbage line without a header",
            b"081109 203518 143 INFO dfs.DataNode: no session key here", b"991231 235959 1 INFO a.B: late blk_9",
            b"081109 203518 143 INFO dfs.FSNamesystem: BLOCK* ask blk_1 blk_2 blk_1 to delete",
            b"081109 203518 143 INFO dfs.DataNode: Receiving block blk_3 src: /1.2.3.4:5\r",
            b"081109 999999 143 INFO dfs.DataNode: Receiving block blk_8 (an impossible time)",
            "081109 203518 143 INFO dfs.DataNode: Receiving block blk_4 caf\u00e9".encode(), b"\xff\xfe blk_5"]


def lines_of(name: str) -> list[bytes]:
    return [line.rstrip(b"\n") for line in open_lines(SAMPLES[name])][:2000]


def vocab_of(fmt: LogFormat, lines: list[bytes]) -> TemplateVocab:
    """Mined on the first 300 lines: later lines include UNK ones (drift)."""
    return TemplateVocab.fit([c for c in (content_of(line, fmt) for line in lines[:300]) if c is not None], fmt)


def mutate(line: bytes, rng: random.Random) -> bytes:
    """A random damage: cut, a byte changed (digits of the time included), a NUL, CR or key inserted."""
    k = rng.randrange(len(line) + 1)
    kind = rng.randrange(5)
    if kind == 0:
        return line[:k]
    if kind == 1 and line:
        return line[:k] + bytes([rng.choice(b"0123456789 :.-x\x00\x7f")]) + line[k + 1:]
    if kind == 2:
        return line[:k] + rng.choice([b"\x00", b"\r", b" blk_42 ", b"  "]) + line[k:]
    if kind == 3:
        return line + b"\r"
    return line.replace(b" ", b"  ", 1)


def random_records(lines: list[bytes], odd: list[bytes], rng: random.Random, n: int) -> list[RawRecord]:
    out = []
    for i in range(n):
        rec = [rng.choice(lines) for _ in range(rng.randint(1, 8))]
        for _ in range(rng.randint(0, 3)):
            r = rng.random()
            extra = rng.choice(odd) if r < 0.5 or not rec else mutate(rng.choice(rec), rng)
            rec.insert(rng.randrange(len(rec) + 1), extra)
        key = rng.choice([None, b"k", b"host-1/app.log"])
        value = b"\n".join(rec) + (b"\n" if rng.random() < 0.3 else b"")
        out.append(RawRecord("logs.x", rng.randrange(2), i, key, value, rng.choice([None, 1_000_000 + i])))
    return out


def run(fmt: LogFormat, vocab: TemplateVocab, records: list[RawRecord], fast: bool, max_line_bytes: int) -> tuple:
    fmt.ts_cache.clear()  # the "timestamp not cached yet" case, both times
    ing = Ingestor(fmt, vocab, max_record_bytes=1 << 20, max_line_bytes=max_line_bytes, drift=DriftMiner(fmt),
                   partitions=3)
    if not fast:
        ing._fast = None  # every record through the reference path
    assert fast == (ing._fast is not None)
    outs = []
    for i in range(0, len(records), 50):  # batches
        out = ing.process(records[i:i + 50], now=5000.0)
        outs.append((out.groups, out.arrival, out.clocks, out.dead, out.lines, out.sessions, out.bundles,
                     out.health, dict(out.lines_by_topic)))
    return outs, ing.stats, ing.counters, ing.drift.summary()  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["hdfs", "openstack"])
@pytest.mark.parametrize("seed", range(4))
def test_ingest_fast_path_equals_the_reference_path(name: str, seed: int) -> None:
    """Every output of Ingestor.process (events per session in order, arrival times, clocks, dead
    letters with reasons, lines and heads, bundles, guard counts, parse stats, counters, drift) is
    the same whether all-ASCII records take _fast_lines or everything takes _reference_lines."""
    fmt = FORMATS[name]
    lines = lines_of(name)
    vocab = vocab_of(fmt, lines)
    odd = HDFS_ODD if name == "hdfs" else [b"", b"  ", lines[5] + b"\x00", b"no header here", b"x" * 400,
                                           "caf\u00e9 ".encode() + lines[7], lines[9].replace(b"2017", b"2O17")]
    rng = random.Random(seed)
    records = random_records(lines, odd, rng, 300)
    limit = rng.choice([200, 400, 65536])
    fast, ref = run(fmt, vocab, records, True, limit), run(fmt, vocab, records, False, limit)
    assert fast == ref
    (outs, stats, counters, _) = fast
    assert stats.rejected and counters["events"] and any(out[3] for out in outs)  # the odd cases happened


@pytest.mark.parametrize("seed", range(3))
def test_key_partitions_equal_kafkas_partitioner(seed: int) -> None:
    """key_partitions (vectorised) and key_partition (memoised) give the partition of aiokafka's
    murmur2 (Kafka's default partitioner) for every key, any length, any count."""
    from aiokafka.partitioner import murmur2 as reference

    from streams import kafka_clients
    from streams.kafka_clients import key_partition, key_partitions

    rng = random.Random(seed)
    keys = [rng.randbytes(rng.randint(0, 41)) for _ in range(1500)] + [b"", b"a", b"ab", b"abc", b"abcd",
                                                                      "blk_\u00e9\u20ac".encode()]
    keys += [f"blk_{rng.randint(-10**19, 10**19)}".encode() for _ in range(1500)]
    keys += keys[:200]  # repeats
    old = kafka_clients.PARTITION_CACHE
    kafka_clients.PARTITION_CACHE = 700  # generations roll over within the test
    try:
        for n in (1, 2, 4, 7, 12):
            want = [(reference(k) & 0x7FFFFFFF) % n for k in keys]
            assert key_partitions(keys, n) == want
            assert [key_partition(k, n) for k in keys] == want  # fills the memo
            assert [key_partition(k, n) for k in keys] == want  # from it (and its previous generation)
    finally:
        kafka_clients.PARTITION_CACHE = old
    assert key_partitions([], 4) == []
