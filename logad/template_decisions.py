"""Template decisions: what people (and promotions by votes) decided about pending statements
(logad.pending), as a JSON-lines file beside the bundle, `template_decisions.jsonl`.

One line per decision: accept / reject / promote / forget, who, when, why. The last decision per
statement holds; "forget" returns it to pending. Lines are appended with one write each, so the
scorer's promotions and a person's `logad templates accept` never interleave within a line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from logad.errors import ConfigError

DECISIONS_FILE = "template_decisions.jsonl"
ACTIONS = ("accept", "reject", "promote", "forget")


@dataclass(frozen=True)
class Decision:
    """One line of template_decisions.jsonl."""

    key: str  # the pending statement ("alias:..." / "new:...")
    action: str  # accept | reject | promote (votes) | forget (back to pending)
    target: str | None = None  # the template key it counts as (None: an alias its statement, a new one left out)
    by: str = ""  # who ("logad scorer" / "logad detect" for promotions)
    at: float = 0.0  # when (epoch seconds, UTC)
    why: str = ""
    sessions: int = 0  # votes behind a promotion


def read_decisions(path: str | Path) -> dict[str, Decision]:
    """The decisions in force (last per statement; "forget" removes one); {} when the file is missing.
    A malformed line is an error naming the file and line: decisions are edited by people."""
    p = Path(path)
    if not p.exists():
        return {}
    out: dict[str, Decision] = {}
    for n, raw in enumerate(p.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
            d = Decision(**doc)
        except (orjson.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"{p}:{n}: not a template decision ({e})") from e
        if d.action not in ACTIONS:
            raise ConfigError(f"{p}:{n}: action {d.action!r} is not one of {', '.join(ACTIONS)}")
        if d.action == "forget":
            out.pop(d.key, None)
        else:
            out[d.key] = d
    return out


def append_decision(path: str | Path, d: Decision) -> None:
    """Append one decision (one write of one line: concurrent writers do not interleave lines)."""
    line = orjson.dumps({k: v for k, v in d.__dict__.items() if v not in (None, "", 0)} | {"key": d.key,
                                                                                        "action": d.action})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)


def decisions_path(model_dir: str | Path, configured: str = "") -> Path:
    """Where a bundle's decisions live: `configured` (drift.decisions_file) or <bundle>/template_decisions.jsonl."""
    return Path(configured) if configured else Path(model_dir) / DECISIONS_FILE
