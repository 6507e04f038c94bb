"""Thresholds: fitted on normal validation windows, one per score; the decision rule.

A window is anomalous when any enabled score exceeds its threshold (count_l1 only for whole traces),
OR when its unseen-template
rate exceeds the hard limit (default 5%). A session is anomalous when any of its windows is.
Thresholds are percentiles of the normal validation windows' scores (99.5th by default), stored in
`thresholds.json` beside the model with the hash of the weights and reference they were fitted for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from logad.errors import ArtifactError


@dataclass(frozen=True)
class Thresholds:
    values: dict[str, float]  # enabled method -> threshold (anomalous when score > threshold)
    unseen_rate_max: float = 0.05  # hard rule: unseen-template rate above this is anomalous
    percentile: float = 99.5  # percentile of normal validation windows the values come from
    topk: int = 9  # DeepLog top-k used by the topk_miss score
    model_sha256: str = ""  # weights these thresholds were fitted for
    reference_sha256: str = ""  # count reference they were fitted with
    extra: dict = field(default_factory=dict)  # calibration facts (n windows, per-percentile table)

    def decide(self, scores: Mapping[str, float], complete: bool = True) -> tuple[bool, tuple[str, ...]]:
        """`complete`: the window's trace is whole (see logad.sessions.COMPLETE_REASONS). For a trace
        that may have been cut, the two-sided count_l1 is not applied (count_excess still is)."""
        reasons = tuple(
            f"{m} {scores[m]:.3g} > {t:.3g}" for m, t in self.values.items()
            if scores[m] > t and (complete or m != "count_l1")
        )
        if scores["unseen_rate"] > self.unseen_rate_max:
            reasons += (f"unseen_rate {scores['unseen_rate']:.3g} > {self.unseen_rate_max:.3g}",)
        return bool(reasons), reasons

    def to_dict(self) -> dict:
        return {"values": self.values, "unseen_rate_max": self.unseen_rate_max,
                "percentile": self.percentile, "topk": self.topk, "model_sha256": self.model_sha256,
                "reference_sha256": self.reference_sha256, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: Mapping) -> Thresholds:
        try:
            values = {str(k): float(v) for k, v in d["values"].items()}
            return cls(values=values, unseen_rate_max=float(d["unseen_rate_max"]),
                       percentile=float(d["percentile"]), topk=int(d["topk"]),
                       model_sha256=str(d["model_sha256"]), reference_sha256=str(d["reference_sha256"]),
                       extra=dict(d.get("extra", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"malformed thresholds ({type(e).__name__}: {e})") from None


def fit_thresholds(normal_scores: Sequence[Mapping[str, float]], methods: Sequence[str],
                   percentile: float = 99.5) -> dict[str, float]:
    """Per-method percentile of the normal windows' scores."""
    if not normal_scores:
        raise ArtifactError("no normal validation windows to calibrate on")
    return {m: float(np.percentile([s[m] for s in normal_scores], percentile)) for m in methods}
