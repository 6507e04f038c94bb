"""Thresholds: fitted on normal validation windows, one per score; the decision rule.

A window is anomalous when any enabled score exceeds its threshold (two-sided count and alignment
scores only for whole traces), OR when its unseen-template rate exceeds the hard limit (default 5%). A session is anomalous when any of its windows is.
Thresholds are percentiles of the normal validation windows' scores (99.5th by default), stored in
`thresholds.json` beside the model with the hash of the weights and reference they were fitted for,
and a sha256 over the file's own content: an edited threshold (a hand-raised value silences alerts)
is refused on load like a modified vocab, as are values that cannot be thresholds (NaN, infinite,
an unseen-rate limit outside (0, 1], top-k < 1).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from logad.errors import ArtifactError

# Two-sided count scores (logad.scoring) read a missing event as evidence: they apply only to windows
# whose trace is whole (logad.windows.COMPLETE_REASONS); a session cut by an idle timeout or the end
# of input would be flagged for having stopped. count_excess is their cut-safe counterpart.
COMPLETE_ONLY = frozenset({"count_l1", "count_tail", "edit_tail", "block_run", "edit_ops"})


@dataclass(frozen=True)
class Thresholds:
    values: dict[str, float]  # enabled method -> threshold (anomalous when score > threshold)
    unseen_rate_max: float = 0.05  # hard rule: unseen-template rate above this is anomalous
    percentile: float = 99.5  # percentile of normal validation windows the values come from
    topk: int = 9  # DeepLog top-k used by the topk_miss score
    model_sha256: str = ""  # weights these thresholds were fitted for
    reference_sha256: str = ""  # count reference they were fitted with
    instability: float = 0.0  # per-event drop/duplicate/swap rate R that count_tail tolerates (0: exact counts)
    extra: dict = field(default_factory=dict)  # calibration facts (n windows, per-percentile table)
    # Adaptive tolerance (logad.instability): per instability level {"instability": R, "rho": what the
    # online estimator reads at R on perturbed validation sessions, "values": thresholds fitted at R},
    # sorted by R. Empty: one fixed tolerance (`instability`, `values`), as before.
    levels: tuple = ()

    def start_level(self) -> int:
        """The level of the sealed `instability` (used until the estimator has enough evidence)."""
        return min(range(len(self.levels)), key=lambda i: abs(self.levels[i]["instability"] - self.instability))

    def at_level(self, i: int) -> Thresholds:
        """These thresholds with the tolerance and values of level i."""
        lv = self.levels[i]
        return replace(self, values=dict(lv["values"]), instability=float(lv["instability"]))

    def decide(self, scores: Mapping[str, float], complete: bool = True) -> tuple[bool, tuple[str, ...]]:
        """`complete`: the window's trace is whole (see logad.windows.COMPLETE_REASONS). For a trace
        that may have been cut, the two-sided count scores are not applied (count_excess still is)."""
        reasons = tuple(
            f"{m} {scores[m]:.3g} > {t:.3g}" for m, t in self.values.items()
            if scores[m] > t and (complete or m not in COMPLETE_ONLY)
        )
        if scores["unseen_rate"] > self.unseen_rate_max:
            reasons += (f"unseen_rate {scores['unseen_rate']:.3g} > {self.unseen_rate_max:.3g}",)
        return bool(reasons), reasons

    def to_dict(self) -> dict:
        """The thresholds.json content, sealed with its sha256 (see `content_sha256`)."""
        doc = {"values": self.values, "unseen_rate_max": self.unseen_rate_max,
               "percentile": self.percentile, "topk": self.topk, "model_sha256": self.model_sha256,
               "reference_sha256": self.reference_sha256, "instability": self.instability, "extra": self.extra}
        if self.levels:  # absent when empty: fixed-tolerance files keep their content (and sha256)
            doc["levels"] = list(self.levels)
        doc = orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))  # plain JSON values
        return {**doc, "sha256": content_sha256(doc)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Thresholds:
        """Parse thresholds.json content; ArtifactError if it is malformed, modified or not usable."""
        if not isinstance(d, Mapping):
            raise ArtifactError(f"malformed thresholds (a JSON object expected, got {type(d).__name__})")
        claimed = d.get("sha256")
        if claimed is None:
            raise ArtifactError("thresholds have no sha256 (written by an older logad): run `logad calibrate` again")
        if claimed != content_sha256({k: v for k, v in d.items() if k != "sha256"}):
            raise ArtifactError("thresholds sha256 mismatch: the thresholds file was modified or corrupted")
        try:
            values = {str(k): float(v) for k, v in d["values"].items()}
            th = cls(values=values, unseen_rate_max=float(d["unseen_rate_max"]),
                     percentile=float(d["percentile"]), topk=int(d["topk"]),
                     model_sha256=str(d["model_sha256"]), reference_sha256=str(d["reference_sha256"]),
                     instability=float(d.get("instability", 0.0)), extra=dict(d.get("extra", {})),
                     levels=tuple({"instability": float(lv["instability"]), "rho": float(lv["rho"]),
                                   "values": {str(k): float(v) for k, v in lv["values"].items()}}
                                  for lv in d.get("levels", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"malformed thresholds ({type(e).__name__}: {e})") from None
        bad = [f"{m}={v}" for m, v in th.values.items() if not math.isfinite(v)]
        for lv in th.levels:
            bad += [f"level {lv['instability']}: {m}={v}" for m, v in lv["values"].items() if not math.isfinite(v)]
            if not (0.0 <= lv["instability"] < 1.0 and math.isfinite(lv["rho"]) and lv["rho"] >= 0.0):
                bad.append(f"level instability {lv['instability']} rho {lv['rho']}")
        if [lv["instability"] for lv in th.levels] != sorted(lv["instability"] for lv in th.levels):
            bad.append("levels not sorted by instability")
        if (bad or not 0.0 < th.unseen_rate_max <= 1.0 or th.topk < 1 or not 0.0 < th.percentile <= 100.0
                or not 0.0 <= th.instability < 1.0):
            raise ArtifactError(f"unusable thresholds (values {bad or 'ok'}, unseen_rate_max {th.unseen_rate_max}, "
                                f"topk {th.topk}, percentile {th.percentile}, instability {th.instability})")
        return th


def content_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of thresholds content (without its "sha256" key), over canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)).hexdigest()


def fit_thresholds(normal_scores: Sequence[Mapping[str, float]], methods: Sequence[str],
                   percentile: float = 99.5) -> dict[str, float]:
    """Per-method percentile of the normal windows' scores."""
    if not normal_scores:
        raise ArtifactError("no normal validation windows to calibrate on")
    return {m: float(np.percentile([s[m] for s in normal_scores], percentile)) for m in methods}
