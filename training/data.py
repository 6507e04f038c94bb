"""Prepared datasets -> model examples, with the window rule of logad.windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from logad.errors import ArtifactError
from logad.scoring import window_example
from logad.windows import WindowRule, plan_windows


Example = tuple[list[int], list[int]]  # (x, y) of one window, see logad.scoring.window_example


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    ids: tuple[int, ...]  # template ids in the dataset vocab
    label: int  # 0 normal, 1 anomaly


def load_split(dataset_dir: str | Path, split: str) -> list[SessionRow]:
    p = Path(dataset_dir) / f"{split}.parquet"
    if not p.is_file():
        raise ArtifactError(f"{p} is missing: run `logad prepare` first")
    t = pq.read_table(p, columns=["session_id", "template_ids", "label"]).to_pydict()
    return [SessionRow(s, tuple(i), int(lab)) for s, i, lab in zip(t["session_id"], t["template_ids"], t["label"])]


def session_windows(ids: tuple[int, ...], rule: WindowRule) -> list[tuple[tuple[int, ...], int]]:
    """(window ids, n_context) of every window of one session."""
    return [(ids[a:b], ctx) for a, b, ctx in plan_windows(len(ids), rule)]


def examples(rows: list[SessionRow], rule: WindowRule, bos: int, label: int | None = 0) -> list[Example]:
    """(x, y) of every window of the sessions with this label (None: all)."""
    out = []
    for r in rows:
        if label is None or r.label == label:
            out += [window_example(w, ctx, bos) for w, ctx in session_windows(r.ids, rule)]
    return out
