"""Recovery watchdog: the worker exits, for its supervisor to restart it, when Faust's table
recovery has stalled (records left to read, none read for RECOVERY_STALL_S)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("logad.worker")


RECOVERY_STALL_S = 45.0  # table recovery reading nothing for this long counts as stalled
STALL_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", what a supervisor's restart is for


@dataclass
class RecoveryWatch:
    """Whether Faust's table recovery has stalled: records still to read, none read for a while.

    faust-streaming 0.15.3 can hang in recovery after a crash loop: changelog partitions stay at
    "have offset -1" for minutes while the worker looks alive (seen in tests/reliability's crash
    loop; a fresh start recovers). A recovery that reads anything at all is never stalled."""

    stall_s: float = RECOVERY_STALL_S
    left: int = -1  # changelog records recovery still had to read at the last look
    moved_at: float = 0.0  # monotonic time that number last changed

    def stalled(self, recovery: Any, now: float) -> bool:
        try:
            left = int(recovery.active_remaining_total()) if recovery.in_recovery else 0
        except Exception:  # Faust internals (read from another thread): look again next time
            return False
        if left != self.left or left <= 0:
            self.left, self.moved_at = left, now
            return False
        return now - self.moved_at >= self.stall_s


def start_recovery_watchdog(app: Any, every_s: float = 5.0) -> threading.Thread:
    """A daemon thread that exits the process (STALL_EXIT_CODE) when table recovery stalls, so the
    supervisor (compose `restart: unless-stopped`, systemd, k8s) starts a fresh worker. A thread:
    Faust starts the app's timers and services only after recovery completes, and a stuck loop
    must not keep it from looking. Nothing is lost by exiting: no offset moves while recovering,
    so the next worker re-reads from the last commit; Faust's own stop can wait on the stuck
    recovery, so it is not asked."""
    watch = RecoveryWatch()

    def loop() -> None:
        while True:
            time.sleep(every_s)
            if watch.stalled(app.tables.recovery, time.monotonic()):
                log.critical("table recovery stalled: %d changelog records left, none read for %.0f s; exiting "
                             "(code %d) so that a fresh worker recovers", watch.left,
                             time.monotonic() - watch.moved_at, STALL_EXIT_CODE)
                logging.shutdown()
                os._exit(STALL_EXIT_CODE)

    t = threading.Thread(target=loop, name="logad-recovery-watchdog", daemon=True)
    t.start()
    return t
