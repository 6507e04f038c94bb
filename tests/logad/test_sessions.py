import random

import pytest

from logad.errors import ConfigError
from logad.sessions import SessionWindower, WindowRule, plan_windows, windows_of


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
