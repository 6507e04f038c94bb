"""Early alerts: the first anomalous probe of an open session alerts once; closing forgets it."""

from __future__ import annotations

from logad.records import Window, WindowScore
from logad.windows import PROBE
from streams.early import EarlyGate


def _ws(sid: str, reason: str, anomalous: bool, final: bool = False, end: int = 3) -> WindowScore:
    w = Window(source="hdfs", session_id=sid, start=0, ids=tuple(range(3, 3 + end)), n_context=0,
               first_ts=None, last_ts=None, reason=reason, final=final, n_lines=end)
    return WindowScore(w, {}, anomalous, ())


def test_one_early_alert_per_open_session():
    g = EarlyGate()
    assert not g.admit(_ws("a", PROBE, False))  # normal so far
    assert g.admit(_ws("a", PROBE, True, end=4))  # first anomalous probe: alert
    assert not g.admit(_ws("a", PROBE, True, end=5))  # the same open session: quiet
    assert g.admit(_ws("b", PROBE, True))  # another session
    assert not g.admit(_ws("a", "gap", True, final=True, end=6))  # the close is not an early alert ...
    assert g.admit(_ws("a", PROBE, True))  # ... and forgets the session: a new one may alert again
    assert len(g) == 2


def test_non_final_closed_windows_do_not_forget():
    g = EarlyGate()
    assert g.admit(_ws("a", PROBE, True))
    assert not g.admit(_ws("a", "max_length", True, final=False))
    assert not g.admit(_ws("a", PROBE, True))


def test_memory_is_bounded():
    g = EarlyGate(max_tracked=10)
    for i in range(25):
        assert g.admit(_ws(f"s{i}", PROBE, True))
    assert len(g) <= 10
