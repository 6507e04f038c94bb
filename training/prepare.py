"""`logad prepare`: sessions -> train/val/test parquet + template vocab (+ split rule and counts).

Sources (the shared data formats):
* labelled sequence files (`BlockId,Label,EventSequence` CSVs, gzipped or not) and plain sequence
  files with a label given on the command line (see logad.sequences);
* raw log files, parsed and templated with the dataset's format and a vocab seeded from a reference
  template table, grouped into sessions by the format's session keys, labelled from a
  `BlockId,Label`-style CSV.

Split rule: train holds normal sessions only (semi-supervised); val holds normal sessions for
calibration plus labelled anomalies; test holds both. Chronological by session start when every
session has a timestamp, else a seeded hash of the session id. No session id is in two splits.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from logad.errors import ParseError
from logad.sequences import parse_label, read_sequences

SPLITS = ("train", "val", "test")
SCHEMA = pa.schema([
    ("session_id", pa.string()),
    ("origin", pa.string()),  # which input file the session came from
    ("template_ids", pa.list_(pa.int32())),  # (n,) ids in the dataset's vocab
    ("first_ts", pa.float64()),  # session start (epoch s) or null
    ("last_ts", pa.float64()),
    ("label", pa.int8()),  # 0 normal, 1 anomaly
])


@dataclass
class Session:
    session_id: str
    origin: str
    keys: list[str]
    label: int
    first_ts: float | None = None
    last_ts: float | None = None
    train_only: bool = False  # e.g. DeepLog's id-less normal set: never used for evaluation


@dataclass(frozen=True)
class SplitRule:
    val_normal: float = 0.2  # share of (non-train-only) normal sessions in val
    test_normal: float = 0.2  # share in test; the rest is train
    val_anomaly: float = 0.3  # share of anomalous sessions in val (the rest is test)
    seed: int = 1234  # salt of the session-id hash


@dataclass
class SplitResult:
    rule: str
    splits: dict[str, list[Session]] = field(default_factory=dict)


def hash_unit(session_id: str, seed: int) -> float:
    """Deterministic uniform number in [0, 1) for a session id."""
    h = hashlib.sha256(f"{seed}:{session_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_sessions(sessions: list[Session], rule: SplitRule, chronological: bool | None = None) -> SplitResult:
    """Split by session start time when every session has one (or `chronological=True`, which
    then requires it), else by a seeded hash of the session id (or `chronological=False`)."""
    ids = Counter(s.session_id for s in sessions)
    dup = [k for k, c in ids.items() if c > 1]
    if dup:
        raise ParseError(f"session id {dup[0]!r} occurs {ids[dup[0]]} times in the inputs; ids must be unique")
    out = SplitResult(rule="", splits={k: [] for k in SPLITS})
    evaluable = [s for s in sessions if not s.train_only]
    timed = bool(evaluable) and all(s.first_ts is not None for s in evaluable)
    if chronological and not timed:
        raise ParseError("a chronological split needs a timestamp on every session")
    chrono = timed if chronological is None else chronological
    if chrono:
        # Chronological: oldest normal sessions train, then val, then test (random splits inflate
        # results, Le & Zhang ICSE'22); anomalies by start time too, val before test.
        out.rule = (f"chronological by session start: normal sessions train/val/test = "
                    f"{1 - rule.val_normal - rule.test_normal:.2f}/{rule.val_normal}/{rule.test_normal}; "
                    f"anomalies val/test = {rule.val_anomaly}/{1 - rule.val_anomaly:.2f}")
        normals = sorted((s for s in evaluable if s.label == 0), key=lambda s: (s.first_ts, s.session_id))
        anomalies = sorted((s for s in evaluable if s.label == 1), key=lambda s: (s.first_ts, s.session_id))
        n_tr = round(len(normals) * (1 - rule.val_normal - rule.test_normal))
        n_va = round(len(normals) * rule.val_normal)
        out.splits["train"] += normals[:n_tr]
        out.splits["val"] += normals[n_tr:n_tr + n_va]
        out.splits["test"] += normals[n_tr + n_va:]
        a_va = round(len(anomalies) * rule.val_anomaly)
        out.splits["val"] += anomalies[:a_va]
        out.splits["test"] += anomalies[a_va:]
    else:
        out.rule = (f"sha256(seed={rule.seed}:session_id) -> u in [0,1); normal: u < "
                    f"{1 - rule.val_normal - rule.test_normal:.2f} train, < {1 - rule.test_normal:.2f} val, "
                    f"else test; anomaly: u < {rule.val_anomaly} val, else test")
        for s in evaluable:
            u = hash_unit(s.session_id, rule.seed)
            if s.label == 1:
                out.splits["val" if u < rule.val_anomaly else "test"].append(s)
            elif u < 1 - rule.val_normal - rule.test_normal:
                out.splits["train"].append(s)
            elif u < 1 - rule.test_normal:
                out.splits["val"].append(s)
            else:
                out.splits["test"].append(s)
    out.splits["train"] += [s for s in sessions if s.train_only and s.label == 0]
    return out


def sessions_from_sequences(
    path: str | Path, label: str | None = None, key_prefix: str = "", id_prefix: str = "",
    train_only: bool = False,
) -> list[Session]:
    origin = Path(path).name
    out = []
    for seq in read_sequences(path, label=label, key_prefix=key_prefix, id_prefix=id_prefix):
        if seq.label is None:
            raise ParseError(f"{path}: session {seq.session_id} has no label (pass --label Normal|Anomaly)")
        out.append(Session(seq.session_id, origin, list(seq.keys), seq.label, train_only=train_only))
    return out


def read_labels(path: str | Path) -> dict[str, int]:
    """`<SessionId>,Label` CSV (e.g. Loghub's anomaly_label.csv) or a file of anomalous ids, one per line."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(f"label file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if text and "," in text[0]:
        rows = list(csv.reader(text))
        return {r[0]: parse_label(r[1]) or 0 for r in rows[1:] if len(r) >= 2}
    # Loghub OpenStack style: a sentence, then anomalous instance ids one per line.
    return {line.strip(): 1 for line in text if line.strip() and " " not in line.strip()}


def prefer_full(sessions: Iterable[Session]) -> list[Session]:
    """Keep one session per id: the longest trace (full traces supersede cut ones of the same block)."""
    best: dict[str, Session] = {}
    for s in sessions:
        if s.session_id not in best or len(s.keys) > len(best[s.session_id].keys):
            best[s.session_id] = s
    return list(best.values())


def write_dataset(out_dir: str | Path, result: SplitResult, vocab, meta: dict) -> dict:
    """Write {train,val,test}.parquet, template_vocab.json and split.json; return the counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict] = {}
    all_ids = {name: [[vocab.id_of(k) for k in s.keys] for s in result.splits[name]] for name in SPLITS}
    # "Unseen" = UNK or a vocab template that no training session contains (what the model never saw).
    seen = {i for x in all_ids["train"] for i in x} - {vocab.UNK}
    for name in SPLITS:
        rows = result.splits[name]
        ids = all_ids[name]
        table = pa.table({
            "session_id": [s.session_id for s in rows],
            "origin": [s.origin for s in rows],
            "template_ids": ids,
            "first_ts": [s.first_ts for s in rows],
            "last_ts": [s.last_ts for s in rows],
            "label": [s.label for s in rows],
        }, schema=SCHEMA)
        pq.write_table(table, out / f"{name}.parquet")
        n_events = sum(len(x) for x in ids)
        n_unseen = sum(1 for x in ids for i in x if i not in seen)
        counts[name] = {
            "sessions": len(rows),
            "normal": sum(s.label == 0 for s in rows),
            "anomaly": sum(s.label == 1 for s in rows),
            "events": n_events,
            "unseen_template_rate": n_unseen / n_events if n_events else 0.0,
            "by_origin": dict(Counter(s.origin for s in rows)),
        }
    vocab.save(out / "template_vocab.json")
    info = {"split_rule": result.rule, "counts": counts, "n_templates": len(vocab), **meta}
    (out / "split.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    return info
