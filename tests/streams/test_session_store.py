"""SessionStore bookkeeping that the session stage's speed relies on (streams/sessionize.py)."""

from __future__ import annotations

from logad.config import SessionConfig
from logad.sessionizer import SessionRules
from logad.sessions import WindowRule
from streams.sessionize import SessionProcessor, SessionStore, state_of, wrap


def test_purge_skips_the_scan_only_while_the_count_says_no_tombstones() -> None:
    table: dict = {}
    store = SessionStore(table)
    store["a"] = (1, 0, "3", None, None, None, 1.0)
    store.flush()
    assert len(store) == 1 and store.purge_tombstones() == 0  # counted: none, no scan needed
    table["b"] = wrap(None, {"r/0": 5})  # a tombstone recovered behind the store's back (a rebalance)
    assert store.purge_tombstones() == 0  # the count does not know it yet ...
    store.rescan()  # ... until the worker says the assignment changed
    assert store.purge_tombstones() == 1
    store.flush()
    assert "b" not in table and len(store) == 1


def test_applied_reads_the_watermark_without_building_it() -> None:
    rules = SessionRules(rule=WindowRule(8, 4), idle_timeout_s=SessionConfig().idle_timeout_s)
    table: dict = {}
    proc = SessionProcessor("hdfs", rules, table)
    proc.apply("a", "r/0", [(3, 1.0, 5), (4, 2.0, 6)], now=1.0)
    proc.store.flush()
    assert proc.store.applied("a", "r/0") == 6 and proc.store.applied("a", "r/1") == -1
    assert proc.store.applied("nobody", "r/0") == -1
    assert proc.apply("a", "r/0", [(3, 1.0, 5), (4, 2.0, 6), (5, 3.0, 7)], now=2.0) == []  # 2 re-delivered
    assert proc.duplicates == 2 and proc.store.applied("a", "r/0") == 7
    proc.store.flush()
    table["m"] = ({"n": 1, "start": 0, "ids": [3], "ts": [1.0]}, "r/0", 9, "r/1", 4)  # two raw partitions
    assert proc.store.applied("m", "r/1") == 4 and proc.store.applied("m", "r/0") == 9
    proc.store.tombstones_final = True  # everything committed: a close deletes outright, no watermark needed
    del proc.store["a"]
    proc.store.flush()
    assert "a" not in table and state_of(table["m"]) is not None
