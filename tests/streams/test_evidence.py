"""Evidence in the stream: windows carry the raw positions of their scored events (packed), the
session keeps those of its pending events only, and the scorer quotes the raw lines of alerts."""

from __future__ import annotations

import random

import orjson
import pytest

from logad.session_rules import SessionRules
from logad.windows import WindowRule
from streams.codec import decode_windows_bundle, encode_windows, position
from streams.positions import append, pack, unpack
from streams.session_table import BytesTable
from streams.session_processor import SessionProcessor


def test_pack_round_trip_and_is_compact() -> None:
    ps = [("logs.hdfs/0", position(10, 0)), ("logs.hdfs/0", position(12, 0)), ("logs.hdfs/0", position(12, 3)),
          ("logs.hdfs/1", position(5, 0)), ("logs.hdfs/0", position(13, 0))]
    packed = pack(ps)
    # ints only: the next line of one record is -(offset delta * 2**20 + line)
    assert packed == ["logs.hdfs/0", 10, 2, -3, "logs.hdfs/1", 5, "logs.hdfs/0", 13]
    assert unpack(orjson.loads(orjson.dumps(packed))) == ps
    assert unpack(["r", -((4 << 20) | 7)]) == [("r", position(4, 7))]
    for bad in ([1, 2], ["rp", [1]], ["rp", "x", 1.5], "rp", ["rp", [0, 3]], ["rp", True], {"rp": 1}):
        with pytest.raises(ValueError):
            unpack(bad)


@pytest.mark.parametrize("seed", range(20))
def test_append_equals_pack_of_the_longer_sequence(seed: int) -> None:
    """append(pack(a), rp, poss) is pack(a + fresh): the same partition or another, lines > 0 too."""
    rnd = random.Random(seed)
    offsets = {"r/0": 0, "r/1": 0}

    def some(rp: str, n: int) -> list[int]:
        out = []
        for _ in range(n):
            offsets[rp] += rnd.choice((0, 1, 7))
            out.append(position(offsets[rp], rnd.choice((0, 0, 3))))
        return sorted(out)

    a = [(rp, p) for rp in rnd.sample(["r/0", "r/1"], 2) for p in some(rp, rnd.randrange(0, 6))]
    rp = rnd.choice(["r/0", "r/1"])
    poss = some(rp, rnd.randrange(1, 5))
    packed = pack(a)
    before = list(packed)
    assert append(packed, rp, poss) == pack(a + [(rp, p) for p in poss])
    assert packed == before  # a new list: the stored value is left as it was


def _stream(seed: int, rule: WindowRule, n_sessions: int = 30, n_events: int = 3000):
    """Random interleaved sessions: (session, tid, ts, rp, pos), rising positions per raw partition."""
    rnd = random.Random(seed)
    offsets = {"r/0": 0, "r/1": 0}
    lines = {"r/0": 0, "r/1": 0}
    t = 1_000_000.0
    out = []
    for _ in range(n_events):
        sid = f"s{rnd.randrange(n_sessions)}"
        rp = "r/0" if rnd.random() < 0.8 else "r/1"
        step = rnd.choice((0, 1, 1, 3, 1000))  # 0: the next line of the same record
        offsets[rp] += step
        lines[rp] = lines[rp] + 1 if not step else 0
        line = lines[rp]
        t += rnd.choice((0.0, 1.0, 1.0, 400.0)) if rnd.random() < 0.02 else rnd.choice((0.0, 1.0))
        out.append((sid, rnd.choice((3, 4, 5, 6, 7, 8)), t, rp, position(offsets[rp], line)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_windows_carry_the_positions_of_their_scored_events(seed: int) -> None:
    """Every window's positions are exactly those of its scored events (gaps, terminal events,
    sliding windows, evictions, idle closes), and each session keeps at most a window's worth."""
    rule = WindowRule(8, 4)
    rules = SessionRules(rule=rule, gap_s=300.0, idle_timeout_s=30.0, max_open_sessions=12,
                         terminal_ids=frozenset({8}))
    table: dict = {}
    proc = SessionProcessor("t", rules, BytesTable(table), positions=True)
    tid_at: dict[tuple[str, int], int] = {}
    windows = []
    events = _stream(seed, rule)
    now = 0.0
    rnd = random.Random(seed)
    i = 0
    while i < len(events):
        k = rnd.randint(1, 5)
        chunk = [e for e in events[i:i + k]]
        i += k
        by: dict[tuple[str, str], list] = {}
        for sid, tid, ts, rp, pos in chunk:
            tid_at[(rp, pos)] = tid
            by.setdefault((sid, rp), []).append((tid, ts, pos))
        now = chunk[-1][2]
        for (sid, rp), rows in by.items():
            windows += [(w, proc.window_pos.get(id(w))) for w in proc.apply(sid, rp, rows, now)]
        for key, value in table.items():  # kept positions: at most a window's length
            v = orjson.loads(value)
            if v[0] is not None and len(v) % 2 == 0:
                assert len(unpack(v[-1])) <= rule.length
        proc.store.flush()
    swept = proc.sweep(now + 1000.0, final=True)
    windows += [(w, proc.window_pos.get(id(w))) for w in swept]
    with_pos = 0
    for w, packed in windows:
        assert packed is not None, w
        ps = unpack(packed)
        assert len(ps) == w.n_lines
        assert [tid_at[p] for p in ps] == list(w.ids[w.n_context:]), w
        with_pos += 1
    assert with_pos == len(windows) > 20
    # the wire: windows with and without positions decode; positions come back as sent
    (rec,) = encode_windows([w for w, _ in windows[:5]], vocab="x",
                            positions={id(w): p for w, p in windows[:5]})
    items, vocab, hold, poss = decode_windows_bundle(rec)
    assert items == [w for w, _ in windows[:5]] and poss == [p for _, p in windows[:5]]
    (bare,) = encode_windows([windows[0][0]], vocab="x")
    assert decode_windows_bundle(bare)[3] == [None]


def test_positions_off_keeps_the_state_as_it_was() -> None:
    rules = SessionRules(rule=WindowRule(8, 4))
    table: dict = {}
    proc = SessionProcessor("t", rules, BytesTable(table))
    proc.apply("s", "r/0", [(3, 1.0e6, position(1, 0)), (4, 1.0e6, position(2, 0))], 1.0)
    proc.store.flush()
    assert len(orjson.loads(table[b"s"])) == 3  # (state, rp, watermark): no positions


# ---------------------------------------------------------------------------------- the scorer side
def _ws(start: int, ids: tuple, n_context: int, surprising: tuple = (), session: str = "blk_1"):
    from logad.records import Window, WindowScore

    w = Window("hdfs", session, start, ids, n_context, 1.0, 2.0, "idle", True, len(ids) - n_context)
    return WindowScore(w, {"max_nll": 9.0, "combined": 2.0}, True, ("max_nll > 1",), surprising)


def test_quoter_picks_like_offline_and_leaves_out_what_is_gone() -> None:
    """Most surprising first, then the last scored events; a record gone from the raw topic leaves
    its line out (the alert keeps the rest), and a multi-line format quotes the whole entry."""
    import asyncio

    from logad.formats import FORMATS
    from streams.evidence import Quoter

    records = {("logs.hdfs", 0, 10): b"line ten\n", ("logs.hdfs", 0, 11): b"a\nb\nc\n",
               ("logs.hdfs", 0, 14): b"fourteen"}
    asked = []

    async def fetch(wanted):
        asked.append(set(wanted))
        return {k: v for k, v in records.items() if k in wanted}

    # events 4..11 of the session, 8..11 scored (4 of context): the positions are of 8..11
    ws = _ws(4, (3, 3, 3, 3, 5, 6, 7, 8), 4, surprising=({"index": 9, "prob": 0.01}, {"index": 6, "prob": 0.2}))
    packed = pack([("logs.hdfs/0", position(10, 0)), ("logs.hdfs/0", position(11, 2)),
                   ("logs.hdfs/0", position(13, 0)), ("logs.hdfs/0", position(14, 0))])
    q = Quoter(fetch, FORMATS["hdfs"], 3)
    (ev,) = asyncio.run(q.quote([(ws, packed)]))
    # picks 9 (most surprising; 6 is context, not scored here), then the last scored: 11, 10.
    # 10's record (offset 13) is gone from the raw topic: left out
    assert [e["index"] for e in ev] == [9, 11]
    assert ev[0] == {"index": 9, "position": {"topic": "logs.hdfs", "partition": 0, "offset": 11, "line": 2},
                     "line": "c"}
    assert ev[1]["line"] == "fourteen" and ev[1]["position"]["offset"] == 14
    assert q.missing == 1  # index 10 (offset 13): not in the raw topic any more
    assert asked == [{("logs.hdfs", 0, 11), ("logs.hdfs", 0, 13), ("logs.hdfs", 0, 14)}]
    # unreadable positions or a failing fetch: the alert goes without evidence, nothing raises

    async def broken(wanted):
        raise RuntimeError("broker down")

    assert asyncio.run(Quoter(broken, FORMATS["hdfs"], 3).quote([(ws, packed), (ws, ["x", "y"])])) == [[], []]


def test_multiline_entry_is_quoted_whole() -> None:
    from pathlib import Path

    from logad.format_files import load_format
    from streams.evidence import line_of

    fmt = load_format(Path(__file__).resolve().parents[2] / "formats/examples/java-multiline.toml")
    value = (b"2024-03-01 10:00:00,200 ERROR [main] app.Server: request 17 failed\n"
             b"java.lang.IllegalStateException: boom\n\tat app.Server.handle(Server.java:42)\n"
             b"2024-03-01 10:00:01,000 INFO [main] app.Server: request 18 accepted\n")
    assert line_of(value, 0, fmt) == ("2024-03-01 10:00:00,200 ERROR [main] app.Server: request 17 failed\n"
                                      "java.lang.IllegalStateException: boom\n\tat app.Server.handle(Server.java:42)")
    assert line_of(value, 3, fmt).endswith("request 18 accepted")
    assert line_of(value, 1, fmt) is None and line_of(value, 9, fmt) is None


def test_scorer_alerts_carry_evidence_scores_of_normal_windows_do_not() -> None:
    import asyncio
    from types import SimpleNamespace

    from logad.alerts import validate
    from logad.config import Settings, TopicsConfig
    from logad.formats import FORMATS
    from logad.records import Window
    from streams.evidence import Quoter
    from streams.scorer import Scorer
    from tests.streams.test_stream_units import TAG, FakeConsumer, FakeDetector, FakeProducer

    settings = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"))
    bad = Window("hdfs", "blk_bad", 0, (3, 4, 5), 0, 1.0, 2.0, "idle", True, 3)  # FakeDetector: > 2 ids alert
    ok = Window("hdfs", "blk_ok", 0, (3, 4), 0, 1.0, 2.0, "idle", True, 2)
    rp = "logs.hdfs/0"
    pos = {id(bad): pack([(rp, position(o, 0)) for o in (1, 2, 3)]), id(ok): pack([(rp, position(o, 0)) for o in (4, 5)])}
    (value,) = encode_windows([bad, ok], vocab=TAG, positions=pos)
    rec = SimpleNamespace(topic="W", partition=0, offset=0, key=None, value=value, timestamp=1_700_000_000_000)
    raw = {("logs.hdfs", 0, o): f"raw line {o}".encode() for o in range(1, 6)}
    fetched = []

    async def fetch(wanted):
        fetched.append(wanted)
        return {k: raw[k] for k in wanted}

    producer = FakeProducer()
    scorer = Scorer(FakeDetector(set()), FakeConsumer(), producer, settings)
    scorer.quoter = Quoter(fetch, FORMATS["hdfs"], 2)
    asyncio.run(scorer.handle([rec]))
    (alert,) = [orjson.loads(v) for t, _, v in producer.sent if t == "A"]
    validate(alert)
    assert alert["subject"] == "blk_bad"
    assert [e["line"] for e in alert["data"]["evidence"]] == ["raw line 3", "raw line 2"]  # the last scored first
    assert fetched == [{("logs.hdfs", 0, 3), ("logs.hdfs", 0, 2)}]  # the normal window's records are never read
    scores = [e for t, _, v in producer.sent if t == "S" for e in orjson.loads(v)["scores"]]
    assert [e["data"]["evidence"] for e in scores if e["subject"] == "blk_ok"] == [[]]


def test_alerts_printer_shows_the_quoted_lines() -> None:
    from logad.alerts import make_event
    from streams.alerts_cli import render

    ev = [{"index": 9, "position": {"topic": "logs.hdfs", "partition": 0, "offset": 11, "line": 0},
           "line": "081109 203615 148 INFO dfs.DataNode: blk_1 served\nsecond line"}]
    text = render(make_event(_ws(0, (3, 4, 5), 0), "m-1", {}, evidence=ev))
    assert "    line #9 logs.hdfs/0@11:0: 081109 203615 148 INFO dfs.DataNode: blk_1 served" in text.splitlines()
