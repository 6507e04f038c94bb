"""The faust-streaming internals streams/ relies on are still there and shaped as it expects.

logad pins faust-streaming==0.15.3 and works around some of its behaviours by reaching into it.
Each test names the workaround and fails loudly, with what to re-check, when an upgrade changes
what that workaround touches (no Kafka needed).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version


def test_the_pinned_release() -> None:
    assert version("faust-streaming") == "0.15.3", (
        "faust-streaming is not 0.15.3: re-check every workaround in streams/faust_compat.py and "
        "streams/watchdog.py against the new release before changing the pin")


def test_commit_offsets_can_be_gated_and_called() -> None:
    """streams.faust_compat.gate_commits_on_changelog wraps Consumer._commit_offsets (commit only after the
    session changelog writes are acknowledged) and unstick_commits calls it directly (Faust's ack
    list can lose handled offsets after a restart)."""
    from faust.transport.consumer import Consumer

    fn = getattr(Consumer, "_commit_offsets", None)
    assert fn is not None and inspect.iscoroutinefunction(fn), "Consumer._commit_offsets is gone or not async"
    params = list(inspect.signature(fn).parameters)
    assert params[:2] == ["self", "offsets"], f"Consumer._commit_offsets takes {params}: the gate passes (offsets, ...)"


def test_memory_store_keeps_a_plain_dict() -> None:
    """streams.faust_compat.memory_store_dict: streams/session_table.py ChangelogTable writes Faust's memory store directly (its `.data`
    dict) and sends the changelog records itself."""
    from faust.stores.memory import Store

    assert "self.data" in inspect.getsource(Store.__post_init__), "faust.stores.memory.Store no longer keeps .data"


def test_recovery_exposes_its_completion() -> None:
    """streams.faust_compat.recovery_done reads app.tables.recovery.completed; streams/watchdog.py
    reads in_recovery and active_remaining_total() (it restarts a worker stuck in recovery)."""
    from faust.tables.recovery import Recovery

    src = inspect.getsource(Recovery.__init__)
    assert "self.completed = Event()" in src, "Recovery.completed is no longer an Event set when recovery completes"
    assert "self.completed.set()" in inspect.getsource(Recovery), "nothing sets Recovery.completed any more"
    # streams/watchdog.py: a recovery that reads nothing for a while, records left, is stalled
    assert callable(getattr(Recovery, "active_remaining_total", None)), "Recovery.active_remaining_total is gone"
    assert "in_recovery" in inspect.getsource(Recovery), "Recovery.in_recovery is gone"


def test_monitor_table_hooks_can_be_replaced() -> None:
    """streams.faust_compat.quiet_table_monitor replaces the monitor's per-key table hooks (a labelled Prometheus increment
    per session read and write) with no-ops."""
    from faust.sensors.monitor import Monitor

    for hook in ("on_table_get", "on_table_set", "on_table_del"):
        assert callable(getattr(Monitor, hook, None)), f"Monitor.{hook} is gone"


def test_producer_buffer_limit_is_settable() -> None:
    """streams.faust_compat.raise_producer_buffer raises the producer buffer's max_messages (Faust warns past 100 queued
    changelog writes, a normal burst for the session table)."""
    from faust.transport.producer import ProducerBuffer

    assert "max_messages" in inspect.getsource(ProducerBuffer), "ProducerBuffer.max_messages is gone"
