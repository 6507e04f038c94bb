"""Guard rails: a wrong format or a wrong model must fail loudly, not alert on every session.

With the wrong format most lines do not parse; with the wrong model (or a system the model never
saw) most parsed lines match no template. Either way every session would look anomalous, so:
offline commands stop before scoring (InputMismatch, exit code 2, with the rates), and the stream
holds its alerts and raises a metric and an error log (streams/ingest.py, streams/scorer.py).
`judge` is the one place that decides, for both.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from logad.config import GuardConfig
from logad.errors import LogadError
from logad.parse import ParseStats


class InputMismatch(LogadError):
    """The input does not fit the log format or the model (rates in the message)."""


@dataclass(frozen=True)
class Verdict:
    lines: int  # raw lines judged
    unparsed_rate: float  # share of lines that gave no record
    unknown_rate: float  # share of parsed records whose template is unknown to the model
    problem: str  # "" when healthy, else "unparsed" | "unknown"

    def as_dict(self) -> dict[str, object]:
        return {"lines": self.lines, "unparsed_rate": round(self.unparsed_rate, 4),
                "unknown_rate": round(self.unknown_rate, 4), "problem": self.problem}


def judge(lines: int, unparsed: int, records: int, unknown: int, cfg: GuardConfig) -> Verdict:
    """The verdict on counts: too few lines are never judged (a short file is not a wrong format)."""
    up = unparsed / lines if lines else 0.0
    uk = unknown / records if records else 0.0
    problem = ""
    if lines >= cfg.min_lines:
        if up > cfg.max_unparsed_rate:
            problem = "unparsed"
        elif records >= cfg.min_lines // 2 and uk > cfg.max_unknown_rate:
            problem = "unknown"
    return Verdict(lines, up, uk, problem)


def check_input(stats: ParseStats, unknown: int, cfg: GuardConfig, what: str) -> dict[str, object]:
    """Raise InputMismatch when the parsed input does not fit; else its rates (for the summary)."""
    v = judge(stats.lines, stats.unparsed, stats.records, unknown, cfg)
    if v.problem == "unparsed":
        top = ", ".join(f"{k} {n}" for k, n in stats.rejected.most_common(3))
        raise InputMismatch(f"{what}: {v.unparsed_rate:.1%} of {v.lines} lines did not parse ({top}; limit "
                            f"guard.max_unparsed_rate={cfg.max_unparsed_rate}): is this the right log format?")
    if v.problem == "unknown":
        raise InputMismatch(f"{what}: {v.unknown_rate:.1%} of {stats.records} parsed lines match no template of "
                            f"the model (limit guard.max_unknown_rate={cfg.max_unknown_rate}): is this the model "
                            "of this system? Train one with `logad train`")
    return v.as_dict()


class RollingHealth:
    """The stream's view: counts over the most recent `cfg.window_lines` lines of one source, in
    chunks (a batch adds one chunk), so a burst of bad lines trips it and recovery clears it."""

    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self._chunks: deque[tuple[int, int, int, int]] = deque()  # (lines, unparsed, records, unknown)
        self._sum = [0, 0, 0, 0]

    def add(self, lines: int, unparsed: int, records: int, unknown: int) -> Verdict:
        if lines:
            self._chunks.append((lines, unparsed, records, unknown))
            for i, v in enumerate((lines, unparsed, records, unknown)):
                self._sum[i] += v
            while len(self._chunks) > 1 and self._sum[0] - self._chunks[0][0] >= self.cfg.window_lines:
                old = self._chunks.popleft()
                for i, v in enumerate(old):
                    self._sum[i] -= v
        return self.verdict()

    def verdict(self) -> Verdict:
        return judge(*self._sum, self.cfg)  # type: ignore[arg-type]
