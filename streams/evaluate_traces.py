"""Which labelled sessions a log sample holds whole, and the detector's figures on those alone.

A sample cut from a longer log (HDFS_head20k: the first 20,000 lines) stops most anomalous sessions
before they log what makes them anomalous: counted against their label, they measure where the
sample was cut, not the detector. With every session's full trace (a sequence CSV: one row per
session, its events as template keys, e.g. Loghub's hdfs_anomalous_block_sequences.csv.gz with
BlockId and EventSequence "E5 E22 E5 ..."), an anomalous session counts only when its events in the
sample equal its full trace as a multiset (order aside: the sample is read in arrival order).
Normal sessions all count: a normal session cut short is still normal, and an alert on it is still
a false alarm. An anomalous session with no full trace in the CSV cannot be judged whole: left out.

    labels {session: 0|1} + alerted sessions + sample traces {session: [key, ...]} + full traces CSV
      -> complete_report: {"sessions", "anomalous", "left_out", "reason", precision, recall, f1, ...}
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from logad.errors import ParseError
from logad.eval_metrics import prf

ID_COLUMNS = ("session_id", "blockid", "block_id", "session", "id")
SEQUENCE_COLUMNS = ("eventsequence", "event_sequence", "sequence", "events")

ALL_REASON = ("every labelled session against its label; a session the sample cuts before it logs what "
              "makes it anomalous counts as missed, so recall here says where the sample was cut")
COMPLETE_REASON = ("every normal session (cut short it is still normal, an alert on it still a false alarm) and "
                   "the anomalous sessions whose events in the sample equal their full trace, so each one "
                   "could be caught from what the sample holds")


def read_full_traces(path: str | Path, wanted: Iterable[str] | None = None) -> dict[str, Counter[str]]:
    """Sequence CSV (.csv or .csv.gz; columns BlockId / session_id and EventSequence, keys separated by
    spaces, commas or semicolons) -> {session: multiset of its template keys}; only `wanted` sessions
    when given. ParseError (one line) when the file cannot be read or has no such columns."""
    p = Path(path)
    keep = None if wanted is None else set(wanted)
    csv.field_size_limit(min(sys.maxsize, 1 << 30))  # a long session's sequence is one big field
    out: dict[str, Counter[str]] = {}
    try:
        with (gzip.open(p, "rt", newline="", encoding="utf-8") if p.suffix == ".gz"
              else p.open(newline="", encoding="utf-8")) as fh:
            rows = csv.reader(fh)
            header = [h.strip().lower() for h in next(rows, [])]
            id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
            seq_col = next((header.index(c) for c in SEQUENCE_COLUMNS if c in header), None)
            if id_col is None or seq_col is None:
                raise ParseError(f"{p}: expected a header with a session id (BlockId, session_id) and "
                                 f"EventSequence columns, got {header[:6]}")
            for row in rows:
                if len(row) <= max(id_col, seq_col) or (keep is not None and row[id_col] not in keep):
                    continue
                out[row[id_col]] = Counter(row[seq_col].replace(",", " ").replace(";", " ").split())
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as e:
        raise ParseError(f"cannot read full traces {p}: {getattr(e, 'strerror', None) or e}") from None
    return out


def complete_sessions(truth: dict[str, int], sample: dict[str, list[str]],
                      full: dict[str, Counter[str]]) -> tuple[set[str], dict[str, int]]:
    """The labelled sessions whose whole trace is in the sample (see the module docstring), and
    why the others are left out: {"cut": anomalous, sample holds fewer or other events than the
    full trace, "no_trace": anomalous, not in the CSV}."""
    keep, left = set(), {"cut": 0, "no_trace": 0}
    for sid, label in truth.items():
        if label == 0:
            keep.add(sid)
        elif sid not in full:
            left["no_trace"] += 1
        elif Counter(sample.get(sid, ())) == full[sid]:
            keep.add(sid)
        else:
            left["cut"] += 1
    return keep, left


def complete_report(truth: dict[str, int], alerted: set[str], sample: dict[str, list[str]],
                    full: dict[str, Counter[str]]) -> dict[str, Any]:
    """P/R/F1 over the sessions whose whole trace is in the sample, with their counts and the reason."""
    keep, left = complete_sessions(truth, sample, full)
    names = sorted(keep)
    m = prf([truth[n] for n in names], [int(n in alerted) for n in names])
    return {"sessions": len(names), "anomalous": sum(truth[n] for n in names),
            "left_out_cut": left["cut"], "left_out_no_trace": left["no_trace"], "reason": COMPLETE_REASON,
            **{k: m[k] for k in ("precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn")}}
