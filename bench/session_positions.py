"""What keeping raw positions costs the worker's session step, against the same step without them,
in the same run.

    HDFS sample lines --parse_line + vocab.match--> (session, template id, time) per line
      --records of --per-record lines, position (record offset, line)--> per record and session:
      SessionProcessor.apply_columns (positions on: windows carry the positions of their scored
      events, each open session keeps those of its pending events), one table flush per record
      (a BytesTable over a dict: the worker's JSON table values, no Kafka)

The scorer quotes raw lines in alerts (`scorer.evidence_lines` > 0, the default) only because of
these positions; with `scorer.evidence_lines=0` the worker keeps none. CPU time (process_time),
best of --repeat, the two runs interleaved so that both see the same machine.

    python bench/session_positions.py [--lines 200000] [--per-record 100] [--repeat 3]
Ends with `RESULT session_us_per_line=... session_us_per_line_positions=... ratio_positions_vs_none=...`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import hdfs_lines, log  # noqa: E402

RP = "logs.hdfs/0"


def events_of(n_lines: int) -> list[tuple[str, int, float | None]]:
    """(session key, template id, event time) of each line of the HDFS sample (copies of it)."""
    from logad.format_files import load_format
    from logad.parse import parse_line
    from logad.records import LogRecord
    from logad.templates import TemplateVocab

    from _common import MODEL

    fmt = load_format("hdfs")
    vocab = TemplateVocab.load(MODEL / "template_vocab.json", fmt)
    out = []
    for raw in hdfs_lines(n_lines):
        rec = parse_line(raw, fmt)
        if isinstance(rec, LogRecord):
            tid = vocab.match(rec.content)
            out += [(key, tid, rec.timestamp) for key in rec.session_keys]
    return out


def run(events: list, per_record: int, positions: bool) -> tuple[float, int]:
    """CPU seconds of the session step over `events` in records of `per_record`, windows closed."""
    from logad.config import SessionConfig
    from logad.detect_files import session_rules
    from logad.detector import Detector
    from logad.format_files import load_format
    from streams.codec import position
    from streams.session_processor import SessionProcessor
    from streams.session_table import BytesTable

    from _common import MODEL

    rules = session_rules(Detector.load(MODEL, "cpu"), load_format("hdfs"), SessionConfig())
    proc = SessionProcessor("hdfs", rules, BytesTable({}), positions=positions)
    records = []
    for r, a in enumerate(range(0, len(events), per_record)):
        by: dict[str, tuple[list, list, list]] = {}  # session -> (tids, times, positions) of this record
        for line, (key, tid, ts) in enumerate(events[a:a + per_record]):
            cols = by.setdefault(key, ([], [], []))
            cols[0].append(tid)
            cols[1].append(ts)
            cols[2].append(position(r, line))
        records.append(by)
    windows = 0
    t = time.process_time()
    for by in records:
        for key, (tids, tss, poss) in by.items():
            windows += len(proc.apply_columns(key, RP, tids, tss, poss, 0.0))
        proc.store.flush()
        proc.window_pos = {}  # what SessionRunner._emit takes with the windows
    windows += len(proc.sweep(float("inf"), final=True))
    return time.process_time() - t, windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--per-record", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    events = events_of(args.lines)
    best = {False: float("inf"), True: float("inf")}
    closed: dict[bool, int] = {}
    for _ in range(args.repeat):
        for positions in (False, True):
            cpu, closed[positions] = run(events, args.per_record, positions)
            best[positions] = min(best[positions], cpu)
    if closed[False] != closed[True]:
        raise SystemExit(f"windows differ: {closed[False]} without positions, {closed[True]} with")
    n = len(events)
    off, on = best[False] / n * 1e6, best[True] / n * 1e6
    log(f"{n:,} events in records of {args.per_record} lines, {closed[True]:,} windows: session step "
        f"{off:.2f} us/line without positions, {on:.2f} with")
    print(f"RESULT session_us_per_line={off:.2f} session_us_per_line_positions={on:.2f} "
          f"ratio_positions_vs_none={on / off:.2f} windows={closed[True]}", flush=True)


if __name__ == "__main__":
    main()
