"""Memory per open session: RSS of a worker's session store at 10^5 and 10^6 open sessions.

    the worker's store: streams.session_processor.SessionProcessor over BytesTable over a plain dict (what
    the worker's Faust memory:// table keeps: session id bytes -> orjson bytes of the value), fed
    HDFS-like sessions (12 events each, whole-second event times, block-id keys), one raw partition
    of watermarks, all changes flushed to the table, and a sweep run (it builds the sessionizer's
    activity index: last activity per open session + a heap, part of the per-session cost).

Each size runs in a fresh child process; RSS (from /proc/self/statm) is read before the sessions
open and after, with the sessions still open, and divided by their number. Same run, same sessions:
the store without raw positions (scorer.evidence_lines = 0) and the compact states as Python
objects (what a plain-dict Sessionizer keeps). Then the open-session cap: 1.05 x 10^6 sessions against
sessions.max_open_sessions = 10^6 must leave at most 10^6 open (the oldest are evicted).
Bar: <= 1024 B per open session at 10^6. Usage:
    .venv/bin/python bench/memory.py [--sizes 100000,1000000] [--events 12]
Ends with one line: RESULT bytes_per_open_session=... (at the largest size) ...
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BAR = 1024


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(n: int, events: int, layout: str, cap: int) -> dict:
    from logad.session_rules import SessionRules
    from logad.windows import WindowRule
    from streams.codec import position
    from streams.session_table import BytesTable, state_of
    from streams.session_processor import SessionProcessor

    rules = SessionRules(rule=WindowRule(64, 32), max_open_sessions=cap)
    table: dict = {}
    # "worker": as the worker runs by default (alerts quote raw lines: each session also keeps the raw
    # positions of its pending events, streams/positions.py); "worker-nopos": scorer.evidence_lines = 0
    proc = SessionProcessor("hdfs", rules, BytesTable(table) if layout.startswith("worker") else table,
                            positions=layout in ("worker", "objects"))
    rp = "logs.hdfs/0"
    base_ids = [5, 5, 5, 22, 11, 9, 11, 9, 11, 9, 26, 26, 26, 23, 23, 23][:events]
    t0 = 1226262975.0
    keys = [f"blk_{-1608999687919862906 + 7919 * i}" for i in range(n)]  # real-looking block ids
    before = rss()
    start = time.perf_counter()
    for i, key in enumerate(keys):
        ts = [t0 + (i % 150) + k for k in range(events)]
        # a block's events lie ~1,500 records apart in a replayed HDFS log (sessions interleave):
        # offset deltas of 4 digits, as the positions kept in the state have them there
        rows = [(tid, t, position(i + k * 1543, 0)) for k, (tid, t) in enumerate(zip(base_ids, ts))]
        proc.apply(key, rp, rows, now=float(i))
        if i % 1000 == 999:
            proc.store.flush()
    proc.store.flush()
    # a sweep (nothing idle yet) builds the sessionizer's activity index, as in the worker
    proc.sweep(now=0.0, final=False)  # earlier than every activity: closes nothing
    proc.store.flush()
    seconds = time.perf_counter() - start
    del keys
    after = rss()
    open_now = len(proc.store)
    assert open_now == sum(1 for v in proc.store.table.values() if state_of(v) is not None)
    return {"n": n, "layout": layout, "open": open_now, "bytes": after - before,
            "per_session": (after - before) / max(1, open_now), "seconds": seconds,
            "evicted": proc.sessionizer.counters["evicted"], "cap": cap}


def run_child(n: int, events: int, layout: str, cap: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--events", str(events), "--layout", layout,
                          "--cap", str(cap)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--events", type=int, default=12)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="worker", help=argparse.SUPPRESS)
    ap.add_argument("--cap", type=int, default=1_000_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.layout, args.cap)))
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    for n in sizes:
        cur = run_child(n, args.events, "worker", max(sizes))
        nopos = run_child(n, args.events, "worker-nopos", max(sizes))
        obj = run_child(n, args.events, "objects", max(sizes))
        rows.append((n, cur))
        print(f"{n:>9,} open sessions ({args.events} events each): worker store {cur['per_session']:5.0f} B/session "
              f"(filled at {n / cur['seconds']:,.0f} sessions/s), {nopos['per_session']:5.0f} B without raw positions "
              f"(scorer.evidence_lines = 0); compact tuples as objects {obj['per_session']:5.0f} B", flush=True)
    cap = max(sizes)
    over = run_child(cap + cap // 20, args.events, "worker", cap)
    cap_ok = over["open"] <= cap
    print(f"cap: {over['n']:,} sessions against max_open_sessions={cap:,}: {over['open']:,} open, "
          f"{over['evicted']:,} evicted -> {'holds' if cap_ok else 'BROKEN'}")
    n, cur = rows[-1]
    ok = cur["per_session"] <= BAR
    print(f"bar: <= {BAR} B per open session at {n:,}: {cur['per_session']:.0f} B -> {'met' if ok else 'NOT met'}")
    small = rows[0][1]["per_session"]
    print(f"RESULT bytes_per_open_session={cur['per_session']:.0f} bytes_per_open_session_{rows[0][0]}={small:.0f} "
          f"cap_holds={int(cap_ok)} bar_met={int(ok)}")


if __name__ == "__main__":
    main()
