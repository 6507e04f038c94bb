"""The worker exits (for its supervisor to restart it) when Faust's table recovery stalls."""

from __future__ import annotations

from types import SimpleNamespace

from streams.watchdog import RecoveryWatch


def stalls(remaining: list[int], in_recovery: bool = True, stall_s: float = 5.0) -> int | None:
    """The look (one per value of `remaining`, 1 s apart) at which the watch says stalled, or None."""
    it = iter(remaining)
    rec = SimpleNamespace(in_recovery=in_recovery, active_remaining_total=lambda: next(it))
    watch = RecoveryWatch(stall_s=stall_s)
    for i in range(len(remaining)):
        if watch.stalled(rec, 1000.0 + i):
            return i
    return None


def test_a_recovery_that_reads_nothing_for_the_stall_time_is_stalled() -> None:
    assert stalls([1612] * 10) == 5  # unchanged since look 0, 5 s later


def test_a_slow_recovery_that_moves_is_never_stalled() -> None:
    assert stalls([1612 - i for i in range(20)]) is None  # one record per look
    assert stalls([1612, 1612, 1612, 1500, 1500, 1500, 1400, 1400, 1400, 1400]) is None
    assert stalls([0] * 10) is None  # nothing left: about to complete
    assert stalls([7] * 10, in_recovery=False) is None  # not (or no longer) recovering


def test_faust_internals_that_fail_to_read_are_not_a_stall() -> None:
    def boom() -> int:
        raise RuntimeError("dictionary changed size during iteration")

    watch = RecoveryWatch(stall_s=0.0)
    assert not watch.stalled(SimpleNamespace(in_recovery=True, active_remaining_total=boom), 1.0)
