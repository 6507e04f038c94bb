"""logad.alerts.EventEncoder: the same bytes as orjson.dumps(make_event(...)) for any window
(session ids with quotes, commas and non-ASCII; null, integral and huge timestamps; shared and
fresh decisions; details on and off; early alerts; several batch times)."""

from __future__ import annotations

import random

import orjson

from logad.alerts import EventEncoder, make_event, validate
from logad.records import Window, WindowScore


def test_event_encoder_matches_make_event() -> None:
    rng = random.Random(1)
    th = {"mean_nll": 2.31, "max_nll": 9.5, "topk_miss": 0.25}
    enc = EventEncoder("v1-abc", th, vocab="0123456789abcdef")
    enc.MAX_DECIDED = 8  # the memo fills and is cleared during the test
    shared = [({"mean_nll": 1.0 + i, "max_nll": 3.5, "combined": -0.1 * i, "unseen_rate": 0.0}, bool(i % 2),
               ("mean_nll > 2.31",) if i % 2 else ()) for i in range(5)]
    events = ({"index": 1, "template_id": 3, "template_key": "E5", "template": 'Rec "x", \u00e9', "prob": 0.001,
               "expected": [{"template_key": "E1", "template": "t", "prob": 0.5}]},)
    stamps = ["2023-11-14T22:13:20.250Z", "2026-01-01T00:00:00.000Z"]
    n = 0
    for _ in range(2000):
        if rng.random() < 0.8:
            scores, flag, reasons = shared[rng.randrange(5)]
        else:
            scores = {"mean_nll": rng.random() * 1e17, "x": float("nan") if rng.random() < 0.1 else 1e-9}
            flag, reasons = rng.random() < 0.5, ()
        sid = rng.choice(["blk_-123", 'we"ird,\\ sid', "\u00fcn\u00ef,", f"blk_{rng.randint(-10**19, 10**19)}"])
        ts = [rng.choice([None, 1.5, 1e16, 1234567890.123, 0.1 + 0.2, 5]) for _ in range(2)]
        w = Window(rng.choice(["hdfs", "open,stack"]), sid, rng.randint(0, 500), tuple(range(rng.randint(1, 9))),
                   rng.randint(0, 1), ts[0], ts[1], rng.choice(["idle", "max_length", "open", 'g"ap']),
                   rng.random() < 0.5, rng.randint(0, 99))
        ws = WindowScore(w, scores, flag, reasons, events if rng.random() < 0.5 else ())
        for details in (True, False):
            for early in (False, True):
                stamp = rng.choice(stamps)
                ev = rng.choice([None, [], [{"index": 3, "position": {"topic": "logs.x", "partition": 0, "offset": 7,
                                                                      "line": 2}, "line": 'raw "line", \u00e9'}]])
                want = orjson.dumps(make_event(ws, "v1-abc", th, early=early, stamp=stamp, details=details,
                                               evidence=ev, vocab="0123456789abcdef"), option=orjson.OPT_SERIALIZE_NUMPY)
                assert enc.encode(ws, stamp, early=early, details=details, evidence=ev) == want
                n += 1
    assert n == 8000
    validate(orjson.loads(want))


def test_severity_and_summary() -> None:
    from logad.alerts import severity_of, summary_of

    w = Window("hdfs", "blk_1", 0, (3, 4, 5, 6), 0, 1.0, 2.0, "idle", True, 4)
    ev = ({"index": 2, "template_key": "E9", "template": "Exception   in receiveBlock for block <*>", "prob": 0.0012,
           "expected": []},
          {"index": 1, "template_key": "E5", "template": "Receiving block <*>", "prob": 0.2, "expected": []})
    normal = WindowScore(w, {"combined": -1.0}, False, (), ())
    assert severity_of(normal) == "info" and summary_of(normal) == ""
    warn = WindowScore(w, {"combined": 0.4}, True, ("count_tail > 3.1",), ev)
    assert severity_of(warn) == "warning"
    assert summary_of(warn) == ('hdfs session blk_1: events 1-4 (4 scored); most surprising: "Exception in '
                                'receiveBlock for block <*>" (p=0.0012); rules: count_tail')
    assert severity_of(WindowScore(w, {"combined": 0.2}, True, ("unseen_rate 0.25 > 0.05",), ())) == "error"
    assert severity_of(WindowScore(w, {"combined": 2.0}, True, ("edit_tail > 1",), ())) == "error"
    assert severity_of(WindowScore(w, {"combined": 7.5}, True, ("edit_tail > 1",), ())) == "critical"
    e = make_event(warn, "m-1", {"count_tail": 3.1}, stamp="2026-01-01T00:00:00.000Z")
    validate(e)
    assert e["data"]["schema_version"] == 2 and e["data"]["evidence"] == []
