"""SessionStore bookkeeping that the session stage's speed relies on (streams/session_table.py)."""

from __future__ import annotations

from logad.config import SessionConfig
from logad.session_rules import SessionRules
from logad.windows import WindowRule
from streams.session_table import SessionStore, state_of, wrap
from streams.session_processor import SessionProcessor


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
    table["m"] = ((1, 0, "3", 1.0, "0", 1.0, 1.0), "r/0", 9, "r/1", 4)  # two raw partitions
    assert proc.store.applied("m", "r/1") == 4 and proc.store.applied("m", "r/0") == 9
    proc.store.tombstones_final = True  # everything committed: a close deletes outright, no watermark needed
    del proc.store["a"]
    proc.store.flush()
    assert "a" not in table and state_of(table["m"]) is not None


def test_sweep_in_chunks_closes_what_one_sweep_closes() -> None:
    """SessionRunner.sweep closes SWEEP_CHUNK sessions per unit: the same windows and the same
    table as one sweep of everything, each chunk produced before its state is written."""
    import asyncio

    import streams.session_processor as sz

    rules = SessionRules(rule=WindowRule(8, 4), idle_timeout_s=1.0)

    class Producer:
        def __init__(self) -> None:
            self.sent: list = []

        async def send(self, topic, key=None, value=None, partition=None):
            self.sent.append(value)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    def run(chunk: int) -> tuple[list, dict, int]:
        old, sz.SWEEP_CHUNK = sz.SWEEP_CHUNK, chunk
        try:
            table: dict = {}
            proc = SessionProcessor("hdfs", rules, table)
            for i in range(25):
                proc.apply(f"s{i}", "r/0", [(3, 1.0, i)], now=float(i % 5))
            proc.store.flush()
            producer = Producer()
            runner = sz.SessionRunner(proc, producer, "W", vocab="ab" * 8)
            windows = asyncio.run(runner.sweep(4.5, final=False))  # idle: activity before 3.5
            return windows, dict(table), len(producer.sent)
        finally:
            sz.SWEEP_CHUNK = old

    whole, chunks = run(1000), run(3)
    assert whole[0] == chunks[0] and whole[1] == chunks[1] and len(whole[0]) == 20
    assert chunks[2] == 20 == whole[2]  # every window produced (one record each without partitions)


def test_forget_drops_other_partitions_sessions_from_memory_only() -> None:
    """After a rebalance the worker forgets the sessions (and tombstones) of events partitions it no
    longer holds: len() counts only its own again, and no changelog record is written for them."""
    from types import SimpleNamespace

    from streams.kafka_clients import key_partition
    from streams.session_table import ChangelogTable

    rules = SessionRules(rule=WindowRule(8, 4), idle_timeout_s=1.0)
    faust_table = SimpleNamespace(data=SimpleNamespace(data={}))  # Table.data = memory Store; .data = its dict
    table = ChangelogTable(faust_table, "app-sessions-changelog", 4)
    proc = SessionProcessor("hdfs", rules, table)
    keys = [f"blk_{i}" for i in range(40)]
    for i, k in enumerate(keys):
        proc.apply(k, "r/0", [(3, 1.0, i)], now=1.0)
    proc.store.flush()
    proc.apply(keys[0], "r/0", [(4, 2.0, 100)], now=1.0)
    proc.store.tombstones_final = False
    del proc.store[keys[1]]  # closed: a tombstone
    proc.store.flush()
    table.queued.clear()  # (sent by the worker's drain)
    mine = {0, 2}
    owned = lambda k: key_partition(k.encode(), 4) in mine  # noqa: E731
    kept = [k for k in keys if owned(k)]
    assert 0 < len(kept) < len(keys)
    gone = proc.store.forget(owned)
    assert gone == len(keys) - len(kept) and not table.queued  # memory only
    assert sorted(faust_table.data.data) == sorted(k.encode() for k in kept)
    live = [k for k in kept if k != keys[1]]
    assert len(proc.store) == len(live) == proc.store.count_open()
    plain: dict = {"a": ((1, 0, "3", None, None, None, 1.0), "r/0", 1), "b": (None, "r/0", 2)}
    assert SessionStore(plain).forget(lambda k: k == "a") == 1 and list(plain) == ["a"]


def test_raw_byte_and_single_partition_shortcuts_equal_their_references() -> None:
    """BytesTable.tombstone_keys (a prefix test on the raw bytes) against decoding every value
    (state_of(value) is None), and SessionStore.applied (one raw partition read in place) against
    watermark_of, on random values: live or tombstone, 0-3 raw partitions, with or without positions."""
    import random

    from streams.session_table import BytesTable, watermark_of

    rng = random.Random(4)
    raw: dict[bytes, bytes] = {}
    t = BytesTable(raw)
    values = {}
    for i in range(500):
        state = None if rng.random() < 0.4 else (rng.randint(1, 9), 0, "3", None, None, None, float(i))
        wm = {f"r/{p}": rng.randint(0, 10**9) for p in rng.sample(range(4), rng.randint(0, 3))}
        values[f"k{i}"] = wrap(state, wm, [[1, 2]] if rng.random() < 0.3 else None)
        t[f"k{i}"] = values[f"k{i}"]
    assert sorted(t.tombstone_keys()) == sorted(k for k in t if state_of(t[k]) is None)
    store = SessionStore(t)
    for k, v in values.items():
        for rp in ("r/0", "r/1", "r/2", "r/3"):
            assert store.applied(k, rp) == watermark_of(v).get(rp, -1)
