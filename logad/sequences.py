"""Labelled template-sequence files: the pre-parsed input of `prepare`, `score` and `evaluate`.

Two shapes are read (gzipped or not):
* a CSV with a session-id column (`BlockId`, `SessionId`, `session_id`, `InstanceId`), `Label`
  (`Normal`/`Anomaly`, or 0/1) and `EventSequence` (space-separated template keys);
* a plain file of one space-separated sequence per line; the label comes from the caller and the
  session id is the 1-based line number.
Plain files of numbers (DeepLog's `5 5 22 ...`) may need a key prefix (`E` for Loghub HDFS ids).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logad.errors import ParseError

SESSION_COLUMNS = ("BlockId", "SessionId", "session_id", "InstanceId", "instance_id")
LABELS = {"normal": 0, "anomaly": 1, "abnormal": 1, "0": 0, "1": 1, "false": 0, "true": 1}
csv.field_size_limit(1 << 26)


@dataclass(frozen=True, slots=True)
class Sequence:
    session_id: str
    label: int | None  # 1 anomaly, 0 normal, None unknown
    keys: tuple[str, ...]  # template keys in session order


def parse_label(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return LABELS[text.strip().lower()]
    except KeyError:
        raise ParseError(f"unknown label {text!r} (use Normal or Anomaly)") from None


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise ParseError(f"sequence file {path} does not exist")
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def read_sequences(
    path: str | Path, label: str | int | None = None, key_prefix: str = "", id_prefix: str = ""
) -> Iterator[Sequence]:
    """Yield the sessions of a sequence CSV or plain sequence file (see module doc)."""
    path = Path(path)
    default = parse_label(str(label)) if label is not None else None
    with _open_text(path) as fh:
        first = fh.readline()
        header = next(csv.reader([first]), [])
        if "EventSequence" in header:
            id_col = next((c for c in SESSION_COLUMNS if c in header), None)
            if id_col is None:
                raise ParseError(f"{path}: no session-id column (one of {', '.join(SESSION_COLUMNS)})")
            reader = csv.DictReader(fh, fieldnames=header)
            for n, row in enumerate(reader, start=2):
                if row.get("EventSequence") is None or row.get(id_col) is None:
                    raise ParseError(f"{path}:{n}: row has fewer columns than the header")
                lab = parse_label(row["Label"]) if row.get("Label") else default
                keys = tuple(key_prefix + k for k in row["EventSequence"].split())
                yield Sequence(id_prefix + row[id_col], lab, keys)
            return
        for n, line in enumerate(itertools.chain([first], fh), start=1):
            if not line.strip():
                continue
            if "," in line:
                raise ParseError(f"{path}:{n}: looks like a CSV but has no EventSequence column")
            keys = tuple(key_prefix + k for k in line.split())
            yield Sequence(f"{id_prefix}{n}", default, keys)
