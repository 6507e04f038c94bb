import random

import pytest

from logad.errors import ConfigError
from logad.windows import SessionWindower, WindowRule, plan_windows, windows_of


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 9, 15, 16, 17, 40, 101])
@pytest.mark.parametrize("rule", [WindowRule(8, 4), WindowRule(8, 8), WindowRule(8, 1), WindowRule(5, 3)])
def test_every_event_scored_exactly_once(n, rule):
    scored = []
    for a, b, ctx in plan_windows(n, rule):
        assert b - a <= rule.length
        scored += list(range(a + ctx, b))
    assert scored == list(range(n))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 23, 64, 65, 200])
def test_incremental_windower_equals_offline_rule(n):
    rule = WindowRule(8, 3)
    ids = [random.Random(n).randrange(3, 40) for _ in range(n)]
    ts = [float(i) for i in range(n)]
    w = SessionWindower("hdfs", "s", rule)
    got = [x for x in (w.push(i, t) for i, t in zip(ids, ts)) if x is not None]
    tail = w.close("end")
    if tail is not None:
        got.append(tail)
    # Same windows; only `reason`/`final` may differ (a stream cannot know that a full window was the
    # session's last), and they are not part of the alert id.
    strip = lambda ws: [(x.start, x.ids, x.n_context, x.first_ts, x.last_ts, x.n_lines) for x in ws]  # noqa: E731
    assert strip(got) == strip(windows_of("hdfs", "s", ids, rule, ts, reason="end"))
    assert all(len(x.ids) <= rule.length for x in got)


def test_windower_state_roundtrip_and_bounded_memory():
    rule = WindowRule(6, 2)
    w = SessionWindower("hdfs", "s", rule)
    for i in range(1000):
        w.push(3 + i % 5, float(i))
        assert len(w.ids) < rule.length
    w2 = SessionWindower.from_state("hdfs", "s", rule, w.to_state())
    assert w2.close("idle") == w.close("idle")


def test_bad_rule_is_config_error():
    with pytest.raises(ConfigError):
        WindowRule(8, 0)
    with pytest.raises(ConfigError):
        WindowRule(8, 9)


@pytest.mark.parametrize("ts", [
    [1226262975.0 + i for i in range(10)],  # whole seconds: compact offsets
    [1226262975.25 + 0.001 * i for i in range(10)],  # fractions: kept as a list
    [None] * 10,
    [5.0, None, 7.0, 3.0, 1e9, 1e-300, -1.0, 0.0, 2.0, 2.0],  # gaps, late, huge, tiny, negative
])
def test_compact_state_round_trips_exactly(ts):
    import orjson

    rule = WindowRule(64, 32)
    for ids in ([3, 4, 5, 6, 7, 8, 9, 10, 11, 127], [3, 200, 70000, 0xD800, 2, 3, 4, 5, 6, 1]):
        w = SessionWindower("hdfs", "s", rule)
        for i, t in zip(ids, ts):
            w.push(i, t)
        for state in (w.to_state(), orjson.loads(orjson.dumps(w.to_state()))):  # in memory and via JSON
            w2 = SessionWindower.from_state("hdfs", "s", rule, state)
            assert (w2.n, w2.start, w2.ids) == (w.n, w.start, w.ids)
            assert [repr(t) for t in w2.ts] == [repr(t) for t in w.ts]  # bit-exact (alert ids use repr)


def test_close_state_equals_closing_a_rebuilt_windower():
    """close_state builds the tail window from the compact state: the same Window as
    from_state(...).close(...), for every compact form (offsets or listed times, wide ids, none)."""
    import orjson

    rng = random.Random(5)
    rule = WindowRule(8, 3)
    for _ in range(400):
        w = SessionWindower("hdfs", "s", rule)
        t = 1226262975.0
        for _ in range(rng.randint(0, 30)):
            kind = rng.random()
            ts = None if kind < 0.1 else t + rng.choice([0.0, 1.0, 2.0]) if kind < 0.8 else t + rng.random()
            w.push(rng.choice([3, 4, 5, 300]) if rng.random() < 0.9 else 70000, ts)
        for state in (w.to_state(), orjson.loads(orjson.dumps(w.to_state()))):
            expected = SessionWindower.from_state("hdfs", "s", rule, state).close("idle")
            assert SessionWindower.close_state("hdfs", "s", rule, state, "idle") == expected


@pytest.mark.parametrize("seed", range(3))
def test_push_many_decides_like_one_push_per_event(seed):
    """push_many is a fast path of push (the reference). Random sessions with gaps, late events,
    missing times, terminal ids, the events cap and evictions: applying each session's events in
    runs (push_many) closes exactly the windows of one push per event, with the same counters and
    the same stored state after every run."""
    from logad.session_rules import SessionRules, Sessionizer

    rng = random.Random(11 + seed)
    rules = SessionRules(rule=WindowRule(6, 2), gap_s=50.0, max_open_sessions=20, max_events_per_session=15,
                         terminal_ids=frozenset({9}))
    clock = {}
    one, many = Sessionizer("hdfs", rules), Sessionizer("hdfs", rules)
    for step in range(1500):  # runs of 1..8 events of one session that share `now`
        key, now, run = f"s{rng.randrange(40)}", float(step // 3), []
        for _ in range(rng.randint(1, 8)):
            t = clock.get(key, 0.0) + rng.choice([1.0, 1.0, 2.0, 60.0, -3.0]) if rng.random() < 0.9 else None
            if t is not None:
                clock[key] = t
            tid = 9 if rng.random() < 0.02 else rng.choice([3, 4, 5, 6, 7, 8]) if rng.random() < 0.95 else 10
            run.append((tid, t))
        expected = [w for tid, ts in run for w in one.push(key, tid, ts, now)]
        assert many.push_many(key, run, now) == expected
        assert many.store.get(key) == one.store.get(key)
    assert dict(one.store) == dict(many.store) and one.counters == many.counters
    assert many.close_all() == one.close_all()
    assert one.counters["evicted"] and one.counters["closed_gap"] and one.counters["closed_terminal"]
    assert one.counters["closed_max_events"] and one.counters["late_events"]


@pytest.mark.parametrize("seed", range(4))
def test_push_columns_fast_path_decides_and_stores_like_push(seed):
    """push_columns is a fast path of push (the reference): it appends common runs to the compact
    state without a windower. The windows, the counters and every stored state must be exactly
    those of one push per event, on streams that
    mix the fast path (whole-second times in order) with everything it must leave to push_many:
    gaps, late events, fractional and missing times, terminal ids, ids that do not fit a byte,
    filling windows, the events cap and evictions."""
    from logad.session_rules import SessionRules, Sessionizer

    rng = random.Random(seed)
    rules = SessionRules(rule=WindowRule(10, 4), gap_s=50.0, max_open_sessions=25, max_events_per_session=40,
                         terminal_ids=frozenset({9}))
    clock: dict[str, float] = {}
    runs = []  # (key, [(tid, ts)], now)
    for step in range(2500):
        key = f"s{rng.randrange(40)}"
        run = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.03:
                t = None
            else:
                dt = rng.choice([0.0, 1.0, 1.0, 2.0, 7.0]) if r < 0.93 else rng.choice([60.0, -3.0, 0.25])
                t = clock.get(key, 1226262975.0) + dt
                clock[key] = t
            tid = 9 if rng.random() < 0.01 else 300 if rng.random() < 0.01 else rng.choice([3, 4, 5, 6, 7, 8])
            run.append((tid, t))
        runs.append((key, run, float(step // 3)))
    one, cols = Sessionizer("hdfs", rules), Sessionizer("hdfs", rules)
    expected, got = [], []
    for key, run, now in runs:
        for tid, ts in run:
            expected += one.push(key, tid, ts, now)
        got += cols.push_columns(key, [t for t, _ in run], [ts for _, ts in run], now)
        assert cols.store.get(key) == one.store.get(key)
    assert got == expected and one.counters == cols.counters
    assert dict(one.store) == dict(cols.store)
    assert got + cols.close_all() == expected + one.close_all()
    assert one.counters["evicted"] and one.counters["closed_gap"] and one.counters["closed_terminal"]
    assert one.counters["closed_max_events"] and one.counters["late_events"]


def test_push_columns_takes_the_fast_path_on_ordinary_runs():
    """The fast path is taken (no windower built) for an open session's in-order events."""
    from logad.session_rules import SessionRules, Sessionizer

    sz = Sessionizer("hdfs", SessionRules(rule=WindowRule(64, 32)))
    t = 1226262975.0
    assert sz._append("b", [3, 4], [t, t + 1.0], 0.0)
    assert sz._append("b", [5], [t + 2.0], 1.0)
    assert sz.store["b"] == (3, 0, "345", t, "012", t + 2.0, 1.0)
    assert not sz._append("b", [5], [t + 1.5], 1.0)  # late and fractional: push_many decides
    assert sz._append("c", [3], [None], 0.0) and sz.store["c"] == (1, 0, "3", None, None, None, 0.0)


def test_sweep_index_closes_exactly_the_idle_sessions():
    """The activity index (heap + lazy deletion) closes the same sessions as a full scan would."""
    from logad.session_rules import SessionRules, Sessionizer, seen_of

    rng = random.Random(3)
    rules = SessionRules(rule=WindowRule(6, 2), idle_timeout_s=5.0, max_open_sessions=50)
    sz = Sessionizer("hdfs", rules)
    now = 0.0
    for step in range(4000):
        now += rng.choice([0.0, 0.1, 0.5, 2.0])
        if rng.random() < 0.05:
            expected = sorted(k for k, s in sz.store.items() if now - seen_of(s) > rules.idle_timeout_s)
            got = sz.sweep(now)
            assert sorted(w.session_id for w in got) == expected
            assert all(now - seen_of(s) <= rules.idle_timeout_s for s in sz.store.values())
        else:
            key = f"s{rng.randrange(80)}"
            sz.push_many(key, [(rng.choice([3, 4, 5]), float(step))], now)
    assert sz.counters["closed_idle"] > 100 and sz.counters["evicted"] > 0
    sz.store["x"] = sz.store.pop(next(iter(sz.store)))  # written behind the index's back ...
    sz.invalidate_index()  # ... as a rebalance does: rebuilt from the store by the next sweep
    assert {w.session_id for w in sz.sweep(now + 100)} >= {"x"} and not sz.store


def test_probes_show_the_open_window_and_change_nothing():
    """Early alerts: with probe=True push_many also returns the open session's window (reason PROBE,
    not final, never complete), and the windows that close are exactly those without probes."""
    from logad.session_rules import SessionRules, Sessionizer
    from logad.windows import PROBE, is_complete

    rules = SessionRules(rule=WindowRule(6, 2), gap_s=50.0, terminal_ids=frozenset({9}))
    runs = [("a", [3, 4]), ("b", [5]), ("a", [5, 6, 7, 8, 3]), ("a", [9]), ("a", [4])]
    plain, probed = Sessionizer("hdfs", rules), Sessionizer("hdfs", rules)
    closed, probes = [], []
    for key, ids in runs:
        base = plain.push_many(key, [(t, None) for t in ids], 0.0)
        got = probed.push_many(key, [(t, None) for t in ids], 0.0, probe=True)
        closed += base
        assert [w for w in got if w.reason != PROBE] == base
        probes += [w for w in got if w.reason == PROBE]
    assert plain.close_all() == probed.close_all()
    assert all(not p.final and not is_complete(p.reason) for p in probes)
    # a: [3, 4] -> probe of 2; b: [5]; a: 5 more -> the 6-event window closes (max_length) and the
    # probe holds the one unscored event after 4 context events; a: 9 fills the next window and closes
    # the session (terminal), no probe;
    # a: a new session [4].
    assert [(p.session_id, p.ids, p.n_context) for p in probes] == [
        ("a", (3, 4), 0), ("b", (5,), 0), ("a", (5, 6, 7, 8, 3), 4), ("a", (4,), 0)]
    assert [w.reason for w in closed] == ["max_length", "max_length"]  # 9 fills the second; nothing left at the terminal close
