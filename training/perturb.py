"""Log instability (LogRobust-style): each event, with probability R, is dropped, duplicated or swapped
with its successor. Labels are kept: perturbed normal sessions stay normal, anomalous stay anomalous."""

from __future__ import annotations

import random
from collections.abc import Sequence

from training.data import SessionRow


def perturb(ids: Sequence[int], rate: float, rng: random.Random) -> list[int]:
    out = list(ids)
    i = 0
    while i < len(out):
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0 and len(out) > 1:  # drop (never empty a session)
                del out[i]
                continue
            if op == 1:  # duplicate
                out.insert(i, out[i])
                i += 2
                continue
            if op == 2 and i + 1 < len(out):  # swap with the successor
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2
                continue
        i += 1
    return out


def perturb_rows(rows: Sequence[SessionRow], rate: float, seed: int) -> list[SessionRow]:
    """Deterministic in (seed, session id), whatever the row order."""
    return [SessionRow(r.session_id, tuple(perturb(r.ids, rate, random.Random(f"{seed}:{r.session_id}"))), r.label)
            for r in rows]
