"""The ingest with format files (no Kafka): every session rule, multi-line entries within a record,
JSON records, the record key as origin; the stream's sessions equal `logad detect`'s reading of
the same file (logad.readers), event for event. And the input guard: a bad verdict rides on the
events bundles, the session stage marks the windows it emits (`hold`), recovery clears it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from logad.config import GuardConfig
from logad.format_files import format_from_dict, load_format
from logad.parse import content_of, open_lines
from logad.readers import iter_file_records, read_limit
from logad.records import LogRecord
from logad.templates import TemplateVocab
from streams.codec import decode_events_bundle, decode_windows_record
from streams.ingest import Ingestor, RawRecord
from streams.replay import default_key, records
from tests.streams.test_stream_units import TAG, FakeProducer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "formats/examples"
LOGHUB = ROOT / "data/loghub_2k"


def vocab_for(fmt, paths: list[Path]) -> TemplateVocab:
    contents = [c for p in paths for line in open_lines(p, read_limit(fmt)) if (c := content_of(line, fmt))]
    return TemplateVocab.fit(contents, fmt)


def offline(fmt, vocab: TemplateVocab, paths: list[Path]) -> dict[str, list[int]]:
    """Session -> template ids in file order, as `logad detect` reads the files (origin = path)."""
    out: dict[str, list[int]] = defaultdict(list)
    for _origin, _line, rec in iter_file_records(paths, fmt):
        if isinstance(rec, LogRecord):
            for key in rec.session_keys:
                out[key].append(vocab.match(rec.content))
    return dict(out)


def streamed(ing: Ingestor, raw: list[RawRecord]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    res = ing.process(raw, now=2e9)
    for sessions in res.groups.values():
        for sid, rows in sessions.items():
            out[sid] += [tid for tid, _, _ in rows]
    return dict(out)


def replayed(path: Path, fmt, lines_per_record: int, offset: int = 0, topic: str = "logs.x") -> list[RawRecord]:
    """The file as `logad replay` publishes it (whole entries per record, the path as key when the
    format names sessions from it)."""
    key = default_key(path, fmt)
    return [RawRecord(topic, 0, offset + i, key, v, 1_000)
            for i, (v, _, _) in enumerate(records(path, lines_per_record, fmt=fmt))]


def ingestor(fmt, vocab: TemplateVocab, **kw) -> Ingestor:
    return Ingestor(fmt, vocab, max_record_bytes=1 << 20, max_line_bytes=65536, **kw)


@pytest.mark.parametrize("lines_per_record", [1, 3, 50])
def test_session_field_format_as_offline(lines_per_record: int) -> None:
    fmt = format_from_dict({"name": "zk", "log_format": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
                            "timestamp_fields": ["Date", "Time"], "timestamp_formats": ["%Y-%m-%d %H:%M:%S,%f"],
                            "session_field": "Component"})
    path = LOGHUB / "Zookeeper/Zookeeper_2k.log"
    vocab = vocab_for(fmt, [path])
    want = offline(fmt, vocab, [path])
    assert len(want) > 5
    assert streamed(ingestor(fmt, vocab), replayed(path, fmt, lines_per_record)) == want


def test_time_window_format_names_windows_by_record_key(tmp_path: Path) -> None:
    """session_window_s: fixed windows per origin; the origin is the record key (replay: the path),
    else "topic/partition"."""
    fmt = load_format(EXAMPLES / "bgl-windows.toml")
    path = LOGHUB / "BGL/BGL_2k.log"
    vocab = vocab_for(fmt, [path])
    want = offline(fmt, vocab, [path])
    assert len(want) > 3 and all(k.startswith(f"{path}@") for k in want)
    assert streamed(ingestor(fmt, vocab), replayed(path, fmt, 7)) == want
    unkeyed = [RawRecord(r.topic, r.partition, r.offset, None, r.value) for r in replayed(path, fmt, 7)]
    got = streamed(ingestor(fmt, vocab), unkeyed)
    assert {k.replace("logs.x/0@", f"{path}@") for k in got} == set(want)


JAVA = [
    "2024-03-01 10:00:00,100 INFO [main] app.Server: request 17 accepted",
    "2024-03-01 10:00:00,200 ERROR [main] app.Server: request 17 failed",
    "java.lang.IllegalStateException: boom",
    "\tat app.Server.handle(Server.java:42)",
    "\tat app.Server.run(Server.java:10)",
    "2024-03-01 10:00:01,000 INFO [main] app.Server: request 18 accepted",
    "2024-03-01 10:00:02,000 WARN [pool-1] app.Pool: pool exhausted",
    "\tat app.Pool.take(Pool.java:7)",
]


@pytest.mark.parametrize("lines_per_record", [1, 2, 4, 100])
def test_multiline_entries_within_a_record_and_the_key_as_origin(tmp_path: Path, lines_per_record: int) -> None:
    """Java-style entries, one file per session (session_from_path over the record key): replay puts
    whole entries into records; the stream joins continuation lines as `logad detect` does, and an
    event's position is its entry's first line."""
    fmt = load_format(EXAMPLES / "java-multiline.toml")
    paths = []
    for name in ("payments-1.log", "payments-2.log"):
        p = tmp_path / name
        p.write_text("\n".join(JAVA) + "\n")
        paths.append(p)
    vocab = vocab_for(fmt, paths)
    want = offline(fmt, vocab, paths)
    assert set(want) == {"payments-1", "payments-2"} and len(want["payments-1"]) == 4  # 8 lines, 4 entries
    ing = ingestor(fmt, vocab)
    raw = replayed(paths[0], fmt, lines_per_record) + replayed(paths[1], fmt, lines_per_record, offset=100)
    assert streamed(ing, raw) == want
    assert ing.stats.continued == 2 * 4 and not ing.stats.rejected
    res = ingestor(fmt, vocab).process(replayed(paths[0], fmt, 100), now=2e9)  # one record, four entries
    (rows,) = res.groups["logs.x/0"].values()
    assert [pos & 0xFFFFF for _, _, pos in rows] == [0, 1, 5, 6]  # first lines of the entries


def test_json_records_each_line_one_object(tmp_path: Path) -> None:
    """JSON input: each line of a record is one JSON object (shippers send one per record, or
    newline-joined); a line that is not JSON is dead-lettered with its reason, the rest are read."""
    fmt = load_format(EXAMPLES / "vector-json.toml")
    docs = [{"message": f"user {u} step {s} done", "@timestamp": f"2024-03-01T10:00:0{s}Z", "level": "info",
             "kubernetes": {"pod_name": "web-1"}, "trace": {"id": f"t{u}"}} for s in range(3) for u in range(4)]
    lines = [orjson.dumps(d) for d in docs]
    path = tmp_path / "shipped.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    vocab = vocab_for(fmt, [path])
    want = offline(fmt, vocab, [path])
    assert sorted(want) == ["t0", "t1", "t2", "t3"] and all(len(v) == 3 for v in want.values())
    raw = [RawRecord("logs.shipped", 0, 0, None, b"\n".join(lines[:5])),
           RawRecord("logs.shipped", 0, 1, b"web-1", b"{not json"),
           *[RawRecord("logs.shipped", 0, 2 + i, None, v) for i, v in enumerate(lines[5:])]]
    ing = ingestor(fmt, vocab)
    assert streamed(ing, raw) == want
    (dead,) = ing.process([raw[1]]).dead
    doc = orjson.loads(dead[1])
    assert doc["reason"] == "bad_json" and doc["offset"] == 1 and doc["line"] == 0


def test_guard_marks_bundles_and_windows_and_recovers() -> None:
    """A burst of lines the format cannot read: the verdict (per raw topic) goes on every events
    bundle of that topic; the session stage stamps `hold` on the windows it emits meanwhile (and the
    vocab fingerprint on all); healthy lines clear it again."""
    from logad.config import SessionConfig
    from logad.formats import FORMATS
    from logad.session_rules import SessionRules
    from logad.windows import WindowRule
    from streams.session_processor import SessionProcessor, SessionRunner

    hdfs = FORMATS["hdfs"]
    good = list(open_lines(ROOT / "data/hdfs/HDFS_head20k.log.gz"))[:400]
    vocab = TemplateVocab.fit([c for line in good if (c := content_of(line, hdfs))], hdfs)
    ing = ingestor(hdfs, vocab, guard=GuardConfig(min_lines=20, window_lines=100), partitions=2)
    cfg = SessionConfig()
    rules = SessionRules(rule=WindowRule(4, 4), gap_s=cfg.gap_s, idle_timeout_s=cfg.idle_timeout_s,
                         max_open_sessions=100, max_events_per_session=1000, terminal_ids=frozenset())
    producer = FakeProducer()
    runner = SessionRunner(SessionProcessor("hdfs", rules, {}), producer, "W", windows_partitions=2, vocab=TAG)

    def feed(values: list[bytes], offset: int) -> tuple[set[str], list]:
        out = ing.process([RawRecord("logs.hdfs", 0, offset + i, None, v) for i, v in enumerate(values)], now=2e9)
        holds = set()
        for p, v in out.bundles:
            src, rp, sessions, clock, hold = decode_events_bundle(v)
            holds.add(hold)
            asyncio.run(runner.on_bundle(rp, sessions, p, 0, clock=clock, hold=hold))
        return holds, out.dead

    assert feed(good[:100], 0)[0] == {""}
    holds, dead = feed([b"this is not an hdfs line %d" % i for i in range(60)] + good[100:140], 100)
    assert holds == {"unparsed"} and len(dead) == 60
    assert ing.guard.verdicts["logs.hdfs"].problem == "unparsed"
    producer.sent.clear()
    windows = asyncio.run(runner.sweep(3e9, final=True))  # close everything now: emitted while held
    assert windows and producer.sent
    for _, _, value in producer.sent:
        _, tag, hold = decode_windows_record(value)
        assert (tag, hold) == (TAG, "unparsed")
    assert feed(good[140:400], 200)[0] == {""}  # 260 good lines: the last 100 are healthy
    assert runner.hold == ""
    producer.sent.clear()
    asyncio.run(runner.sweep(4e9, final=True))
    assert producer.sent and all(decode_windows_record(v)[1:] == (TAG, "") for _, _, v in producer.sent)


def test_worker_refuses_a_format_without_session_rule(tmp_path: Path) -> None:
    """A bundle whose format only parses (no session rule): load_session_rules and `logad worker`
    fail with one line naming the format, before any Kafka client starts."""
    import os
    import subprocess
    import sys

    from logad.artifacts import sha256_file
    from logad.config import SessionConfig
    from logad.errors import ConfigError
    from streams.session_processor import load_session_rules

    text = 'name = "plain"\nlog_format = "<Level> <Content>"\n'
    fmt = format_from_dict({"name": "plain", "log_format": "<Level> <Content>"})
    TemplateVocab.fit(["started", "stopped"], fmt).save(tmp_path / "template_vocab.json")
    (tmp_path / "format.toml").write_text(text)
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({
        "window": {"length": 8, "stride": 4},
        "vocab": {"file": "template_vocab.json", "sha256": sha256_file(tmp_path / "template_vocab.json")}}))
    with pytest.raises(ConfigError, match="format 'plain' has no session rule"):
        load_session_rules(tmp_path, None, SessionConfig())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
    r = subprocess.run([sys.executable, "-m", "logad_cli.main", "worker", "--model", str(tmp_path)], cwd=ROOT,
                       env={**env, "LOGAD_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: format 'plain' has no session rule"), r.stderr[-2000:]
