"""Fast tests of the streaming pieces without Kafka: codecs, ingest, sessions (incl. re-delivery
after a crash), scorer batching/routing, replay grouping, evaluation helpers.

The central one: the stream's pure steps (Ingestor -> events records -> SessionProcessor), fed the
sample file cut into arbitrary records and batches, produce exactly the windows of the offline
pipeline (logad.detect_files.windows_from_lines), also when batches are re-delivered."""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from logad.config import SessionConfig, Settings, TopicsConfig
from logad.detect_files import windows_from_lines
from logad.formats import FORMATS
from logad.parse import ParseStats, content_of, open_lines
from logad.records import Window, WindowScore
from logad.session_rules import Sessionizer
from logad.windows import SessionWindower, WindowRule
from logad.templates import UNK, DriftMiner, TemplateVocab
from streams.codec import (MAX_BUNDLE_BYTES, CodecError, decode_events_record, decode_scores,
                           decode_windows, encode_bundles, encode_dead_letter, encode_windows,
                           position, split_position, window_dict)
from streams.ingest import Ingestor, RawRecord
from streams.session_table import state_of, watermark_of
from streams.session_processor import SessionProcessor, key_partition, load_session_rules

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data/hdfs/HDFS_head20k.log.gz"
HDFS = FORMATS["hdfs"]
LINES = list(open_lines(RAW))
CFG = SessionConfig(idle_timeout_s=3.0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle without weights (all the worker reads): vocab mined on the first 1000 lines of the
    sample (so later lines include UNK ones) and a short window rule (many sliding windows)."""
    from logad.artifacts import sha256_file

    d = tmp_path_factory.mktemp("bundle")
    contents = [c for c in (content_of(line, HDFS) for line in LINES[:1000]) if c is not None]
    TemplateVocab.fit(contents, HDFS).save(d / "template_vocab.json")
    manifest = {"window": {"length": 8, "stride": 4},
                "vocab": {"file": "template_vocab.json", "sha256": sha256_file(d / "template_vocab.json")}}
    (d / "manifest.json").write_bytes(orjson.dumps(manifest))
    return d


@pytest.fixture(scope="module")
def setup(bundle: Path) -> tuple[TemplateVocab, Any]:
    vocab, fmt, rules = load_session_rules(bundle, None, CFG)
    assert fmt is HDFS and rules.rule == WindowRule(8, 4)
    return vocab, rules


def offline_windows(vocab: TemplateVocab, rules: Any) -> list[Window]:
    det = SimpleNamespace(bundle=SimpleNamespace(vocab=vocab, rule=rules.rule))
    return list(windows_from_lines(LINES, HDFS, det, Sessionizer("hdfs", rules), ParseStats()))


def raw_records(lines: list[bytes], rng: random.Random, topic: str = "logs.hdfs") -> list[RawRecord]:
    """The file as raw records of 1..4 newline-joined lines (some with a trailing newline)."""
    out, i = [], 0
    while i < len(lines):
        n = rng.randint(1, 4)
        value = b"".join(lines[i:i + n])
        if rng.random() < 0.5:
            value = value.rstrip(b"\n")
        out.append(RawRecord(topic, 0, len(out), None, value))
        i += n
    return out


def run_stream(vocab: TemplateVocab, rules: Any, batches: list[list[RawRecord]],
               table: dict | None = None) -> tuple[list[Window], SessionProcessor, Ingestor]:
    ing = Ingestor(HDFS, vocab, max_record_bytes=1 << 20, max_line_bytes=65536, drift=DriftMiner(HDFS))
    proc = SessionProcessor("hdfs", rules, {} if table is None else table)
    windows: list[Window] = []
    for batch in batches:
        out = ing.process(batch)
        for _part, value in out.bundles:
            src, rp, sessions, _clock = decode_events_record(value)
            for sid, events, _arrival in sessions:
                windows += proc.apply(sid, rp, events, now=1.0)
            proc.store.flush()
    windows += proc.sessionizer.close_all("end")
    proc.store.flush()
    return windows, proc, ing


def key_of(w: Window) -> tuple:
    return (w.session_id, w.start, w.ids, w.n_context, w.first_ts, w.last_ts, w.final, w.n_lines)


# ------------------------------------------------------------------------------------ codec
def test_codec_roundtrips() -> None:
    w = Window("hdfs", "blk_1", 4, (3, 4, 1, 5), 2, 1.5, None, "idle", True, 2)
    assert decode_windows(encode_windows([w], vocab=TAG)[0]) == [w]
    (v,) = encode_bundles("hdfs", "logs.hdfs/0", [("blk_1", [[3, 1.0, 7], [1, None, 8]])])
    src, rp, sessions, clock = decode_events_record(v)
    assert (src, rp, sessions, clock) == ("hdfs", "logs.hdfs/0", [("blk_1", [(3, 1.0, 7), (1, None, 8)], None)], None)
    assert split_position(position(123456, 789)) == (123456, 789)
    assert position(5, 0) > position(4, (1 << 20) - 1)
    for bad in (None, b"", b"{", b"[]", b'{"src":"h","rp":"x","sid":["a"]}', b'{"src":"h","sid":[]}'):
        with pytest.raises(CodecError):
            decode_events_record(bad)
    doc = window_dict(w)
    for field, value in (("ids", []), ("n_context", 4), ("start", -1), ("final", 1), ("extra", None)):
        (bad,) = decode_windows(orjson.dumps({"w": [{**doc, field: value}], "vocab": TAG}))
        assert isinstance(bad, CodecError)
    dl = orjson.loads(encode_dead_letter("too_large", "logs.hdfs", 0, 42, b"\xff" + b"a" * 5000, detail="x"))
    assert dl["reason"] == "too_large" and dl["offset"] == 42 and dl["size"] == 5001
    assert dl["head"].startswith("\\xffaaa") and len(base64.b64decode(dl["head_b64"])) == 256


# ----------------------------------------------------------------------------------- ingest
def test_ingest_coalesces_per_session_and_dead_letters(setup: tuple) -> None:
    vocab, _ = setup
    ing = Ingestor(HDFS, vocab, max_record_bytes=1000, max_line_bytes=65536, drift=DriftMiner(HDFS))
    good = LINES[0].rstrip(b"\n")
    blk = good.split(b"blk_")[1].split(b" ")[0]
    non_utf8 = good.replace(b"Receiving", b"Recei\xffving")
    records = [
        RawRecord("logs.hdfs", 0, 10, None, good + b"\n" + LINES[1]),  # two lines, same block
        RawRecord("logs.hdfs", 0, 11, b"k", b""),
        RawRecord("logs.hdfs", 0, 12, None, b"z" * 1001),
        RawRecord("logs.hdfs", 0, 13, None, b"garbage\n\n081109 203518 143 INFO dfs.X: no block here"),
        RawRecord("logs.hdfs", 0, 14, None, non_utf8),
    ]
    out = ing.process(records)
    assert len(out.bundles) == 1  # one record per events partition per batch
    src, rp, sessions, _ = decode_events_record(out.bundles[0][1])
    assert (src, rp) == ("hdfs", "logs.hdfs/0") and len(sessions) == 1  # the batch's events of one session
    key, events, _ = sessions[0]
    assert key == "blk_" + blk.decode()
    assert [e[2] for e in events] == [position(10, 0), position(10, 1), position(14, 0)]  # arrival order
    assert events[2][0] == UNK  # the replacement character makes the line unknown, but it is kept
    dead = [orjson.loads(v) for _, v in out.dead]
    assert [(d["reason"], d["offset"], d["line"]) for d in dead] == [
        ("empty", 11, None), ("too_large", 12, None), ("unparseable", 13, 0), ("empty", 13, 1),
        ("no_session_key", 13, 2)]
    assert out.dead[0][0] == b"k"  # the raw key travels with the dead letter
    assert ing.counters["non_utf8"] == 1 and ing.counters["records"] == 5
    assert ing.stats.lines == 6 and ing.stats.records == 3


def test_ingest_never_raises_on_a_broken_vocab(setup: tuple) -> None:
    vocab, _ = setup

    class Broken:
        def match(self, content: str) -> int:
            raise RuntimeError("boom")

    ing = Ingestor(HDFS, Broken(), max_record_bytes=1 << 20, max_line_bytes=65536)  # type: ignore[arg-type]
    out = ing.process([RawRecord("t", 0, i, None, LINES[i]) for i in range(3)])
    assert [orjson.loads(v)["reason"] for _, v in out.dead] == ["error"] * 3 and not out.groups["t/0"]


# ------------------------------------------------------------------ stream == offline windows
def test_stream_steps_equal_offline_windows(setup: tuple) -> None:
    vocab, rules = setup
    expected = offline_windows(vocab, rules)
    assert len(expected) > 1443 and any(not w.final for w in expected)  # sliding windows happen
    assert any(UNK in w.ids for w in expected)
    rng = random.Random(7)
    records = raw_records(LINES, rng)
    batches, i = [], 0
    while i < len(records):
        n = rng.randint(1, 700)
        batches.append(records[i:i + n])
        i += n
    got, proc, ing = run_stream(vocab, rules, batches)
    assert sorted(map(key_of, got)) == sorted(map(key_of, expected))
    assert proc.duplicates == 0 and list(proc.store) == []  # (closed sessions stay as tombstones)
    assert ing.counters["unk"] > 0 and ing.drift is not None and ing.drift.summary()["templates"] > 0


def test_redelivered_batches_change_nothing(setup: tuple) -> None:
    """A crash re-delivers: ingest re-reads from its last commit (other batch boundaries), the
    session agent re-reads events it had applied. Watermarks drop every repeated event."""
    vocab, rules = setup
    expected = offline_windows(vocab, rules)
    records = raw_records(LINES, random.Random(3))
    third = len(records) // 3
    batches = [records[:third], records[third // 2:2 * third], records[third:2 * third],  # overlaps
               records[2 * third - 100:]]
    got, proc, _ = run_stream(vocab, rules, batches)
    # Sliding windows closed before a re-delivery are emitted again (same ids): dedupe downstream.
    assert sorted(set(map(key_of, got))) == sorted(map(key_of, expected))
    assert proc.duplicates > 0


def test_tombstones_keep_closed_sessions_closed(setup: tuple) -> None:
    _, rules = setup
    table: dict = {}
    proc = SessionProcessor("hdfs", rules, table)
    proc.apply("blk_1", "r/0", [(3, 1.0, position(0, 0)), (4, 2.0, position(1, 0))], now=100.0)
    proc.store.flush()
    closed = proc.sweep(now=200.0, final=False)  # idle; not everything committed yet
    proc.store.flush()
    assert [w.session_id for w in closed] == ["blk_1"]
    assert state_of(table["blk_1"]) is None and watermark_of(table["blk_1"]) == {"r/0": position(1, 0)}
    # A late re-delivery of the same events does not re-open the session ...
    assert proc.apply("blk_1", "r/0", [(3, 1.0, position(0, 0)), (4, 2.0, position(1, 0))], now=201.0) == []
    proc.store.flush()
    assert "blk_1" not in proc.store and proc.duplicates == 2
    # ... a new event does (a new session under the same key), and keeps the watermark.
    proc.apply("blk_1", "r/0", [(5, 3.0, position(2, 0))], now=202.0)
    proc.store.flush()
    assert SessionWindower.from_state("hdfs", "blk_1", rules.rule, state_of(table["blk_1"])).n == 1
    assert proc.sweep(now=300.0, final=True)[0].ids == (5,)
    proc.store.flush()
    assert table == {}  # final sweep: deletes, and purges every tombstone


def test_store_len_and_iteration_ignore_tombstones(setup: tuple) -> None:
    _, rules = setup
    proc = SessionProcessor("hdfs", rules, {"old": (None, "r/0", 5)})  # a tombstone
    proc.apply("a", "r/0", [(3, 1.0, 1)], now=1.0)
    assert sorted(proc.store) == ["a"] and len(proc.store) == 1  # len: open sessions, tombstones not counted
    proc.store.owned = lambda k: k != "a"
    assert list(proc.store) == []
    assert key_partition("blk_1", 4) == key_partition("blk_1", 4) < 4


# ----------------------------------------------------------------------------------- scorer
TAG = "ab" * 8  # streams.codec.vocab_tag of FakeDetector's vocab: what its windows records carry


class FakeDetector:
    version = "m-1"
    thresholds = SimpleNamespace(values={"max_nll": 1.0})
    bundle = SimpleNamespace(vocab=SimpleNamespace(fingerprint=lambda: "ab" * 32))

    def __init__(self, bad: set[str]) -> None:
        self.bad, self.calls = bad, []

    def score_windows(self, windows: list[Window], details: bool = False) -> list[WindowScore]:
        self.calls.append(len(windows))
        if any(w.session_id in self.bad for w in windows):
            raise RuntimeError("cuda says no")
        return [WindowScore(w, {"max_nll": float(len(w.ids)), "combined": 0.0}, len(w.ids) > 2,
                            ("max_nll > 1",) if len(w.ids) > 2 else ()) for w in windows]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []  # per sent record

    async def send(self, topic: str, key: bytes | None = None, value: bytes = b"", partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future:
        self.sent.append((topic, key, value))
        self.headers.append(headers)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []

    async def commit(self, offsets: dict) -> None:
        self.commits.append(dict(offsets))


def test_scorer_routes_scores_alerts_and_dead_letters() -> None:
    from logad.alerts import validate
    from streams.scorer import Scorer

    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))
    windows = [Window("hdfs", f"blk_{i}", 0, tuple(range(3, 3 + i)), 0, 1.0, 2.0, "idle", True, i) for i in (1, 2, 3, 4)]
    recs = [SimpleNamespace(topic="W", partition=i % 2, offset=10 + i, key=w.session_id.encode(),
                            value=encode_windows([w], vocab=TAG)[0]) for i, w in enumerate(windows)]
    recs.append(SimpleNamespace(topic="W", partition=0, offset=20, key=b"x", value=b"not json"))
    det, producer, consumer = FakeDetector(bad={"blk_3"}), FakeProducer(), FakeConsumer()
    scorer = Scorer(det, consumer, producer, settings)
    asyncio.run(scorer.handle(recs))
    by_topic = Counter(t for t, _, _ in producer.sent if t != "S")
    assert by_topic == {"A": 1, "D": 2}  # blk_3 failed alone, "not json" cannot be decoded
    scores = [e for t, key, value in producer.sent if t == "S" for e in decode_scores(value)]
    assert sorted(e["subject"] for e in scores) == ["blk_1", "blk_2", "blk_4"]  # in bundles, one per partition
    assert all(key is None for t, key, _ in producer.sent if t == "S")
    assert det.calls == [4, 1, 1, 1, 1]  # the batch, then window by window
    for t, key, value in producer.sent:
        doc = orjson.loads(value)
        if t == "A":
            validate(doc)
            assert doc["data"]["is_anomaly"] and key == doc["subject"].encode()
        if t == "D":
            assert doc["reason"] in {"score_failed", "bad_window"} and doc["topic"] == "W"
    ((offsets),) = consumer.commits  # one commit, after every send, past the whole batch
    assert {(tp.partition, o) for tp, o in offsets.items()} == {(0, 21), (1, 14)}


def test_scorer_early_alerts_from_probes() -> None:
    """scorer.early_alerts: an open session's first anomalous probe becomes one alert with early: true;
    probes publish no scores; the session's closing window is scored and alerted as always."""
    from logad.alerts import validate
    from logad.windows import PROBE
    from streams.scorer import Scorer

    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))
    probe = lambda n: Window("hdfs", "blk_e", 0, tuple(range(3, 3 + n)), 0, 1.0, 2.0, PROBE, False, n)  # noqa: E731
    windows = [probe(2), probe(3), probe(4), Window("hdfs", "blk_e", 0, (3, 4, 5, 6, 7), 0, 1.0, 2.0, "gap", True, 5)]
    recs = [SimpleNamespace(topic="W", partition=0, offset=i, key=b"blk_e", value=encode_windows([w], vocab=TAG)[0])
            for i, w in enumerate(windows)]
    producer = FakeProducer()
    asyncio.run(Scorer(FakeDetector(set()), FakeConsumer(), producer, settings).handle(recs))
    alerts = [orjson.loads(v) for t, _, v in producer.sent if t == "A"]
    for a in alerts:
        validate(a)
    # probe(2) is normal, probe(3) alerts early, probe(4) stays quiet, the close alerts (final decision)
    assert [(a["data"]["early"], a["data"]["window"]["reason"], a["data"]["line_count"]) for a in alerts] == [
        (True, PROBE, 3), (False, "gap", 5)]
    assert len({a["id"] for a in alerts}) == 2
    scores = [e for t, _, v in producer.sent if t == "S" for e in decode_scores(v)]
    assert [e["data"]["window"]["reason"] for e in scores] == ["gap"]


def test_scorer_window_bundles_commit_after_their_last_window() -> None:
    """A bundle's bad window is dead-lettered alone (with its index); a bundle split over two
    batches is committed past only when its last window is settled."""
    from streams.scorer import Scorer
    from streams.window_queue import unpack

    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))
    ws = [Window("hdfs", f"blk_{i}", 0, (3, 4, 5), 0, 1.0, 2.0, "idle", True, 3) for i in range(5)]
    (value,) = encode_windows(ws, vocab=TAG)
    doc = orjson.loads(value)
    doc["w"][2]["ids"] = []  # one malformed window in the bundle
    rec = SimpleNamespace(topic="W", partition=0, offset=7, key=None, value=orjson.dumps(doc))
    outcomes = unpack([rec], TAG)
    assert [o.window is None for o in outcomes] == [False, False, True, False, False]
    assert [o.last for o in outcomes] == [False] * 4 + [True] and outcomes[2].index == 2
    producer, consumer = FakeProducer(), FakeConsumer()
    scorer = Scorer(FakeDetector(set()), consumer, producer, settings)

    async def go() -> None:
        await scorer.process(outcomes[:3])
        await scorer.process(outcomes[3:])

    asyncio.run(go())
    assert [{tp.partition: o for tp, o in c.items()} for c in consumer.commits] == [{0: 7}, {0: 8}]
    (dead,) = [orjson.loads(v) for t, _, v in producer.sent if t == "D"]
    assert dead["reason"] == "bad_window" and dead["offset"] == 7 and dead["line"] == 2
    assert len([e for t, _, v in producer.sent if t == "S" for e in decode_scores(v)]) == 4


def test_window_bundles_roundtrip_and_split() -> None:
    ws = [Window("hdfs", f"blk_{i}", i, tuple(range(3, 300)), 2, 1.5, None, "idle", True, 9) for i in range(600)]
    recs = encode_windows(ws, vocab=TAG)
    assert len(recs) >= 3 and all(len(r) <= MAX_BUNDLE_BYTES for r in recs)
    assert [w for r in recs for w in decode_windows(r)] == ws
    for bad in (b"nope", b'{"w": []}', b'{"w": 3}', orjson.dumps(window_dict(ws[0]))):  # a bare window: no
        with pytest.raises(CodecError):
            decode_windows(bad)
    assert decode_scores(b'{"scores":[{"id":"a"},{"id":"b"}]}') == [{"id": "a"}, {"id": "b"}]
    with pytest.raises(CodecError):  # a bare envelope is no scores record
        decode_scores(b'{"id":"a","data":{}}')
    from streams.codec import decode_envelopes  # readers of the scores and the alerts topics

    assert decode_envelopes(b'{"id":"a","data":{}}') == [{"id": "a", "data": {}}]
    assert decode_envelopes(b'{"scores":[{"id":"a"}]}') == [{"id": "a"}]
    for bad in (b"[]", b'{"data":{}}', b"nope"):
        with pytest.raises(CodecError):
            decode_envelopes(bad)


def test_scorer_dynamic_batches() -> None:
    """Queue entries are decoded records (lists of windows); a batch takes whole records up to
    max_batch windows (splitting the one that does not fit) and waits up to max_wait_ms for more."""
    from logad.config import ScorerConfig
    from streams.scorer import Scorer

    async def go() -> list[list[int]]:
        # max_wait well above the late put's 5 ms: a preempted test process still sees [8, 9]
        settings = Settings(scorer=ScorerConfig(max_batch=3, max_wait_ms=300, queue_size=10))
        scorer = Scorer(FakeDetector(set()), FakeConsumer(), FakeProducer(), settings)
        scorer.queue.put_nowait([0, 1])
        scorer.queue.put_nowait([2, 3])
        assert scorer.queue.qsize() == 4  # windows, not records
        batches = [await scorer.next_batch(), await scorer.next_batch()]  # full (a record split), then the rest

        async def late() -> None:
            await asyncio.sleep(0.005)
            scorer.queue.put_nowait([9])

        scorer.queue.put_nowait([8])
        task = asyncio.create_task(late())
        batches.append(await scorer.next_batch())  # waits up to max_wait for a second window
        await task
        return batches

    assert asyncio.run(go()) == [[0, 1, 2], [3], [8, 9]]


def test_scorer_queue_backpressure() -> None:
    """put() waits while queue_size windows or more are waiting; a record is let in whole."""
    from streams.window_queue import WindowQueue

    async def go() -> list:
        q = WindowQueue(3)
        await q.put([1, 2])
        await q.put([3, 4])  # 2 < 3 waiting: in, whole (4 now)
        blocked = asyncio.create_task(q.put([5]))
        await asyncio.sleep(0.01)
        seen = [blocked.done(), q.qsize()]
        seen.append(q.take(2))  # 2 left: room again
        await asyncio.wait_for(blocked, 1)
        seen += [q.qsize(), q.take(10), q.empty(), await q.wait(0.01)]
        return seen

    assert asyncio.run(go()) == [False, 4, [1, 2], 3, [3, 4, 5], True, False]


# ------------------------------------------------------------------- replay, evaluation, topics
def test_replay_groups_lines_in_order(tmp_path: Path) -> None:
    from logad.errors import ConfigError
    from streams.replay import Pace, records

    f = tmp_path / "x.log"
    f.write_bytes(b"a\nb\nc\nd\ne\n")
    assert [(v, n) for v, n, _ in records(f, 2)] == [(b"a\nb", 2), (b"c\nd", 2), (b"e", 1)]
    assert [v for v, _, _ in records(RAW, 1)][:2] == [LINES[0].rstrip(b"\n"), LINES[1].rstrip(b"\n")]
    with pytest.raises(ConfigError):
        Pace(rate=10, speed=2)
    with pytest.raises(ConfigError):
        list(records(f, 0))


def test_evaluation_helpers(tmp_path: Path) -> None:
    from streams.evaluate_stream import compare, read_labels

    labels = tmp_path / "l.csv"
    labels.write_text("BlockId,Label\nblk_1,Normal\nblk_2,Anomaly\n")
    assert read_labels(labels) == {"blk_1": 0, "blk_2": 1}
    a = {"x": {"subject": "blk_2"}, "y": {"subject": "blk_2"}}
    same = compare(a, dict(a))
    assert same["alerts_equal"] and same["sessions_equal"] and same["alert_jaccard"] == 1.0
    diff = compare(a, {"x": {"subject": "blk_2"}})
    assert not diff["alerts_equal"] and diff["sessions_equal"] and diff["only_stream"] == ["y"]


def test_partition_plan() -> None:
    from streams.topics import partition_plan, raw_topic

    s = Settings()
    assert raw_topic(s, "hdfs") == "logs.hdfs" and raw_topic(s, "openstack") == "logs.openstack"
    assert raw_topic(s, "myapp") == "logs.myapp"  # any source: topics.raw is a template
    plan = partition_plan(s, [raw_topic(s, "hdfs"), raw_topic(s, "openstack")])
    assert plan["logs.hdfs"] == plan["logs.openstack"] == 1  # order of a log stream
    assert {plan[t] for t in (s.topics.events, s.topics.windows, s.topics.alerts, s.topics.dead_letter)} == {4}
    assert partition_plan(s).keys() == {s.topics.events, s.topics.windows, s.topics.scores, s.topics.alerts,
                                        s.topics.dead_letter}


def test_bytes_table_keeps_keys_as_on_the_events_topic() -> None:
    from streams.session_table import BytesTable

    raw: dict[bytes, bytes] = {}
    t = BytesTable(raw)
    t["blk_1"] = [[1, 0, "\x07", None, None, None, 2.0], "r/0", 5]
    assert raw == {b"blk_1": orjson.dumps([[1, 0, "\x07", None, None, None, 2.0], "r/0", 5])}
    assert t["blk_1"][1:] == ["r/0", 5] and t.get("nope") is None and "blk_1" in t and list(t) == ["blk_1"]
    proc = SessionProcessor("hdfs", load_rules_for_test(), t)
    proc.apply("blk_2", "r/0", [(3, 1.0, 7)], now=1.0)
    proc.store.flush()
    assert set(raw) == {b"blk_1", b"blk_2"} and proc.store.watermark("blk_2") == {"r/0": 7}


def test_session_stage_sends_probes_only_when_early_alerts_are_on() -> None:
    from logad.windows import PROBE

    for probes in (False, True):
        proc = SessionProcessor("hdfs", load_rules_for_test(), {}, probes=probes)
        out = proc.apply("blk_1", "r/0", [(3, 1.0, 1), (4, 1.0, 2)], now=1.0)
        out += proc.apply("blk_1", "r/0", [(4, 1.0, 2)], now=1.0)  # a re-delivery: no new events, no probe
        assert [(w.reason, w.ids, w.final) for w in out] == ([(PROBE, (3, 4), False)] if probes else [])


def load_rules_for_test():
    from logad.session_rules import SessionRules

    return SessionRules(rule=WindowRule(8, 4))


def test_tombstones_do_not_count_against_the_session_cap() -> None:
    """len(store) is the number of open sessions: closed sessions kept as tombstones must not make
    every new session evict (a full-table sort each time) once the cap is reached."""
    import dataclasses

    rules = dataclasses.replace(load_rules_for_test(), max_open_sessions=5, idle_timeout_s=1.0)
    table: dict = {}
    proc = SessionProcessor("hdfs", rules, table)
    for i in range(5):
        proc.apply(f"a{i}", "r/0", [(3, 1.0, i)], now=1.0)
    proc.store.flush()
    assert len(proc.sweep(now=10.0, final=False)) == 5  # -> 5 tombstones
    proc.store.flush()
    assert len(proc.store) == 0 and len(table) == 5
    for i in range(5):
        proc.apply(f"b{i}", "r/0", [(3, 1.0, 10 + i)], now=11.0)
        proc.store.flush()
    assert proc.sessionizer.counters["evicted"] == 0 and len(proc.store) == 5
    proc.apply("c", "r/0", [(3, 1.0, 20)], now=12.0)  # the 6th open session evicts one
    proc.store.flush()
    assert proc.sessionizer.counters["evicted"] == 1 and len(proc.store) == 5 == proc.store.count_open()
    proc.sweep(now=100.0, final=True)  # purges the tombstones: the count stays exact
    proc.store.flush()
    assert len(proc.store) == 0 == proc.store.count_open() and table == {}


# ------------------------------------------------------------------------- bundled events records
def test_bundles_equal_offline_windows_and_stay_co_partitioned(setup: tuple) -> None:
    """What the worker produces: one bundle per (raw partition, events partition) per batch. Fed the
    sample in random batches, bundles -> SessionProcessor close exactly the offline windows."""
    vocab, rules = setup
    expected = offline_windows(vocab, rules)
    rng = random.Random(5)
    records = raw_records(LINES, rng)
    ing = Ingestor(HDFS, vocab, max_record_bytes=1 << 20, max_line_bytes=65536, partitions=4)
    proc = SessionProcessor("hdfs", rules, {})
    got: list[Window] = []
    i = n_bundles = 0
    while i < len(records):
        n = rng.randint(1, 900)
        out = ing.process(records[i:i + n])
        i += n
        assert len(out.bundles) <= 4 and out.sessions == sum(map(len, out.groups.values()))
        for part, value in out.bundles:
            n_bundles += 1
            src, rp, sessions, clock = decode_events_record(value)
            assert (src, rp) == ("hdfs", "logs.hdfs/0") and clock is not None
            assert all(key_partition(sid, 4) == part for sid, _, _ in sessions)
            for sid, events, _arrival in sessions:
                got += proc.apply(sid, rp, events, now=1.0)
        proc.store.flush()
    got += proc.sessionizer.close_all("end")
    assert sorted(map(key_of, got)) == sorted(map(key_of, expected))
    assert n_bundles < len(records) // 10  # far fewer records than one per session per batch


def test_bundle_split_keeps_each_session_in_order() -> None:
    sessions = [("a", [[3, 1.0, p] for p in range(7)]), ("b", [[4, None, 100]]), ("c", [[5, 2.0, p] for p in range(5)])]
    records = encode_bundles("hdfs", "r/0", sessions, max_events=3)
    assert len(records) == 5
    seen: dict[str, list] = {}
    for v in records:
        _, _, part, _ = decode_events_record(v)
        assert sum(len(e) for _, e, _ in part) <= 3
        for sid, events, _ in part:
            seen.setdefault(sid, []).extend(events)
    assert {k: [list(e) for e in v] for k, v in seen.items()} == dict(sessions)
    clocked = encode_bundles("hdfs", "r/0", [("a", [[3, 1.0, p] for p in range(5)], 17.5)], max_events=3, clock=20.0)
    decoded = [decode_events_record(v) for v in clocked]
    assert [d[3] for d in decoded] == [None, 20.0]  # the clock rides on the last record of the batch only
    assert [d[2][0][2] for d in decoded] == [17.5, 17.5]  # arrival of the session's last event
    (only_clock,) = encode_bundles("hdfs", "r/0", [], clock=21.0)
    assert decode_events_record(only_clock) == ("hdfs", "r/0", [], 21.0)
    for bad in (b'{"src":"h","rp":"x","s":[[1,[]]]}', b"[]"):
        with pytest.raises(CodecError):
            decode_events_record(bad)


def cols(sessions: list[tuple]) -> list[tuple]:
    """[(session id, [(tid, ts, pos), ...][, arrival])] -> on_bundle's sessions (columns, arrival)."""
    from streams.codec import to_columns

    return [(sid, *to_columns(rows), t[0] if t else None) for sid, rows, *t in sessions]


def test_events_columns_are_checked_and_other_shapes_refused() -> None:
    """Column bundles (what the worker writes) decode to the session stage's columns; any other
    shape (rows, one-session records) and malformed columns are a CodecError saying what is wrong
    (the session agent dead-letters the record)."""
    from streams.codec import decode_events_columns

    rows = [(3, 1.0, 1), (4, None, 2), (5, 3.0, 9)]
    (v,) = encode_bundles("hdfs", "r/0", [("a", rows, 5.0), ("b", [(6, 2.0, 3)])], clock=6.0)
    want = ("hdfs", "r/0", [("a", [3, 4, 5], [1.0, None, 3.0], [1, 2, 9], 5.0), ("b", [6], [2.0], [3], None)], 6.0)
    assert decode_events_columns(v) == want  # b's positions start below a's: a new session may
    rows_bundle = orjson.dumps({"src": "hdfs", "rp": "r/0", "t": 6.0, "s": [["a", rows, 5.0], ["b", [[6, 2.0, 3]]]]})
    one_session = orjson.dumps({"src": "hdfs", "rp": "r/0", "e": rows})
    for other in (rows_bundle, one_session):
        with pytest.raises(CodecError, match="not a column bundle"):
            decode_events_columns(other)
    good = {"src": "hdfs", "rp": "r/0", "sid": ["a", "b"], "arr": [1, None], "n": [2, 1], "tid": [3, 4, 5],
            "ts": [2, None, 3.5], "pos": [1, 2, 1]}
    (_, tids, tss, _, arr), _ = decode_events_columns(orjson.dumps(good))[2]
    assert (tids, tss, arr) == ([3, 4], [2.0, None], 1.0) and type(tss[0]) is float and type(arr) is float
    for field, value in (("n", [2, 2]), ("n", [3, 0]), ("n", [2]), ("tid", [3, -1, 5]), ("tid", [3, True, 5]),
                         ("pos", [2, 1, 1]), ("pos", [1, 1, 5]), ("pos", [1, 2.0, 3]), ("ts", [1.0, "x", 2.0]),
                         ("ts", [1.0, False, 2.0]), ("sid", ["a", ""]), ("sid", ["a", 7]), ("arr", [1.0, "late"]),
                         ("tid", "345"), ("sid", [])):
        with pytest.raises(CodecError):
            decode_events_columns(orjson.dumps({**good, field: value}))
    del good["pos"]
    with pytest.raises(CodecError):
        decode_events_columns(orjson.dumps(good))


def test_on_bundle_applies_once_and_isolates_a_failing_session(setup: tuple) -> None:
    from streams.session_processor import SessionRunner

    _, rules = setup

    class Flaky(SessionProcessor):
        def apply_columns(self, session_id, rp, tids, tss, poss, now):
            if session_id == "bad":
                raise RuntimeError("boom")
            return super().apply_columns(session_id, rp, tids, tss, poss, now)

    table: dict = {}
    producer = FakeProducer()
    runner = SessionRunner(Flaky("hdfs", rules, table), producer, "W", vocab=TAG)
    full = [(3 + k % 4, 1.0 + k, k) for k in range(9)]  # 9 events: one sliding window closes (length 8)
    ok = [("a", full), ("b", [(3, 1.0, 0)])]
    windows, failures = asyncio.run(runner.on_bundle("r/0", cols(ok), partition=1, offset=7))
    assert not failures and [w.session_id for w in windows] == ["a"] and len(producer.sent) == 1
    assert sorted(table) == ["a", "b"] and runner.processed_end == {1: 8}
    windows, failures = asyncio.run(runner.on_bundle(
        "r/0", cols([("c", full), ("bad", [(3, 1.0, 0)]), ("d", [(3, 1.0, 0)])]), partition=1, offset=8))
    assert [f[0] for f in failures] == ["bad"] and [w.session_id for w in windows] == ["c"]
    assert failures[0][1] == [(3, 1.0, 0)]  # the failed session's events, as rows (for its dead letter)
    assert sorted(table) == ["a", "b", "c", "d"] and runner.processed_end == {1: 9}


def test_idle_sessions_close_on_the_input_clock(setup: tuple) -> None:
    """Idle = silent in INPUT time (Kafka arrival times carried by the bundles), so a worker that is
    behind, or never quite caught up on a busy stream, still closes idle sessions, and decides as
    one that kept up would."""
    import dataclasses

    from streams.session_processor import TOMBSTONE_TTL_S, SessionRunner

    _, rules = setup
    rules = dataclasses.replace(rules, idle_timeout_s=0.3)
    table: dict = {}
    runner = SessionRunner(SessionProcessor("hdfs", rules, table), FakeProducer(), "W", vocab=TAG)
    ev = [(3, 1.0, 1)]
    asyncio.run(runner.on_bundle("r/0", cols([("a", ev, 10.0), ("b", [(3, 1.0, 2)], 10.35)]), 0, 0, clock=10.4))
    assert runner.input_clock([0, 1]) is None  # partition 1 has no clock yet: no sweep
    asyncio.run(runner.on_bundle("r/0", [], 1, 0, clock=10.5))
    assert runner.input_clock([0, 1]) == 10.4 and runner.input_clock([1]) == 10.5
    closed = asyncio.run(runner.sweep(runner.input_clock([0, 1]), final=False))
    assert [w.session_id for w in closed] == ["a"] and state_of(table["a"]) is None  # "b" arrived 50 ms ago
    asyncio.run(runner.sweep(10.4 + TOMBSTONE_TTL_S + 1, final=False))  # b idle too; a's tombstone expired
    assert "a" not in table and state_of(table["b"]) is None


def test_ingest_carries_arrival_times_and_the_input_clock(setup: tuple) -> None:
    from streams.codec import decode_events_record

    vocab, _ = setup
    ing = Ingestor(HDFS, vocab, max_record_bytes=1 << 20, max_line_bytes=65536, partitions=2)
    recs = [RawRecord("logs.hdfs", 0, i, None, LINES[i], timestamp=1_000_000 + 100 * i) for i in range(40)]
    out = ing.process(recs, now=2000.0)
    decoded = [(p, decode_events_record(v)) for p, v in out.bundles]
    assert sorted(p for p, _ in decoded) == [0, 1] and all(d[3] == 1000 + 0.1 * 39 for _, d in decoded)
    arrivals = {sid: t for _, d in decoded for sid, _, t in d[2]}
    assert arrivals == out.arrival["logs.hdfs/0"] and max(arrivals.values()) <= 1003.9
    out2 = ing.process(recs[:1], clocks={"logs.hdfs/0": 1999.0}, now=2000.0)  # read to the end: wall clock
    assert {decode_events_record(v)[3] for _, v in out2.bundles} == {1999.0}
    future = ing.process([RawRecord("logs.hdfs", 0, 50, None, LINES[50], timestamp=9_999_999_999_999)], now=2001.0)
    assert {decode_events_record(v)[3] for _, v in future.bundles} == {2001.0}  # clamped to now


def test_detection_delay_counts_from_the_first_unseen_template() -> None:
    from streams.evaluate_stream import detection_delay

    def alert(sid: str, start: int, end: int, ctx: int, t: float, aid: str) -> dict:
        return {"id": aid, "subject": sid, "_kafka_ts": t,
                "data": {"window": {"start": start, "end": end, "n_context": ctx, "reason": "idle", "final": True}}}

    events = {"a": [(3, 10.0), (4, 10.1), (9, 10.2), (4, 10.3), (4, 10.4)],  # 9 is unseen at index 2
              "b": [(3, 20.0), (4, 20.5), (4, 21.0)],  # anomalous by counts only
              "c": [(9, 30.0)]}  # labelled normal: not counted
    alerts = {"1": alert("a", 0, 5, 0, 12.0, "1"), "0": alert("a", 0, 5, 0, 15.0, "0"),  # the first alert counts
              "2": alert("b", 0, 3, 0, 22.0, "2"), "3": alert("c", 0, 1, 0, 31.0, "3")}
    d = detection_delay(alerts, {"a": 1, "b": 1, "c": 0}, events, unseen={1, 9})
    rows = {r["session"]: r for r in d["examples"]}
    assert d["sessions"] == 2 and d["by_unseen_template"] == 1
    assert (rows["a"]["first_anomalous_event"], rows["a"]["lines"], rows["a"]["seconds"]) == (2, 2, 1.8)
    assert (rows["b"]["by"], rows["b"]["lines"], rows["b"]["seconds"]) == ("window_start", 2, 2.0)


def test_changelog_table_writes_store_and_changelog_itself() -> None:
    from streams.session_table import ChangelogTable
    from streams.session_processor import SessionRunner

    class Producer(FakeProducer):
        async def send(self, topic: str, key: bytes | None = None, value: bytes | None = b"", partition=None):
            self.sent.append((topic, key, value, partition))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    faust_table = SimpleNamespace(data=SimpleNamespace(data={}))  # Table.data = memory Store; .data = its dict
    t = ChangelogTable(faust_table, "app-sessions-changelog", 4)
    t.producer = producer = Producer()
    runner = SessionRunner(SessionProcessor("hdfs", load_rules_for_test(), t), producer, "W", vocab=TAG)

    async def go() -> None:
        await runner.on_bundle("r/0", cols([("blk_1", [(3, 1.0, 5)], 1.0)]), 0, 0)
        assert not t.queued and t.in_flight  # sent with the bundle; acks awaited by settled() (commit gate)
        await t.settled()
        assert not t.in_flight
        await runner.sweep(100.0, final=True)
        await t.settled()

    asyncio.run(go())
    (topic, key, value, part), (_, key2, value2, _) = [x for x in producer.sent if x[0] != "W"]
    assert (topic, key, part) == ("app-sessions-changelog", b"blk_1", key_partition("blk_1", 4))
    assert orjson.loads(value)[1:] == ["r/0", 5]
    assert (key2, value2) == (b"blk_1", None) and faust_table.data.data == {}  # delete = tombstone record
