"""Online estimate of a source's log instability, and the tolerance level it selects.

Real instability (lines dropped, duplicated or reordered by shippers, rotation, sampling) is unknown,
differs per source and drifts. A detector whose tolerance is fixed at one rate R flags most normal
sessions once the real rate is several times R, and misses small anomalies when it is far below.
So the detector measures it: each whole window that has no unseen template gives one observation

    d  insert/delete operations to its nearest normal training window (the `edit_ops` score)
    n  its number of events

Under instability at rate R a normal window has d ~ Poisson(rho * n), rho ~ 4R/3 (a drop or a
duplicate is one operation, a swap two). The stream mixes normal and anomalous windows in unknown
proportion, and a burst of failures (thousands of identical truncated sessions in a row) must not
read as instability. Two guards:
  * only windows whose alignment has no run of 2+ consecutive inserted or deleted events
    (block_run <= 1) are observed: instability touches lines independently, failures add or drop
    whole sub-procedures; during a burst of such failures the estimate keeps its last normal evidence;
  * rho is the normal component of a two-component Poisson mixture fitted by EM on the most recent
    observations (what anomalies remain fall in the other component):

    d_i ~ pi * Poisson(rho * n_i) + (1 - pi) * Poisson(theta * n_i),  rho <= theta

Calibration (training/calibrate.py) fits thresholds at a grid of instability levels and records for
each the rho this estimator reads on perturbed validation sessions; at run time the level whose
recorded rho is nearest to the current estimate is used. The user never states a rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

WINDOW = 1000  # observations kept per source (the most recent whole windows)
MIN_OBS = 50  # below this the sealed level applies (too little evidence to move)
REFIT_EVERY = 32  # new observations between two fits (a fit is ~30 vectorised EM steps on <= WINDOW)
EM_STEPS = 30
_RHO_FLOOR = 1e-5  # keeps log(rho) finite; far below any rate the levels distinguish


def observable(scores: dict[str, float]) -> bool:
    """The window may feed the estimate: no unseen template, edits isolated (see above)."""
    return scores["unseen_rate"] <= 0 and scores["block_run"] <= 1


def fit_rate(d: np.ndarray, n: np.ndarray, steps: int = EM_STEPS) -> float:
    """rho of the normal component of the Poisson mixture above. d, n: (K,) operations and events."""
    d = np.asarray(d, dtype=np.float64)
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    if d.size == 0:
        return 0.0
    rho, theta, pi = 0.01, max(float(d.sum() / n.sum()), 0.05) * 2.0, 0.8
    for _ in range(steps):
        # (K,) log-likelihoods of each observation under both components (the d! terms cancel)
        l0 = np.log(pi) + d * np.log(rho) - rho * n
        l1 = np.log1p(-pi) + d * np.log(theta) - theta * n
        r = 1.0 / (1.0 + np.exp(np.clip(l1 - l0, -50.0, 50.0)))  # (K,) responsibility of the normal part
        w0 = r.sum()
        pi = float(np.clip(w0 / d.size, 1e-3, 1 - 1e-3))
        rho = max(float((r * d).sum() / max((r * n).sum(), 1e-9)), _RHO_FLOOR)
        theta = max(float(((1 - r) * d).sum() / max(((1 - r) * n).sum(), 1e-9)), rho)
    return rho if rho > 10 * _RHO_FLOOR else 0.0


def nearest_level(rho: float, level_rhos: Sequence[float]) -> int:
    """Index of the calibrated level whose recorded rho is nearest (levels sorted by instability)."""
    return int(np.argmin([abs(rho - x) for x in level_rhos]))


class InstabilityTracker:
    """Per source: the recent (d, n) observations, the current rho estimate and its level."""

    def __init__(self, level_rhos: Sequence[float], start_level: int) -> None:
        self.level_rhos = list(level_rhos)
        self.start_level = start_level
        self.level = start_level
        self.rho: float | None = None  # None until MIN_OBS observations
        self._d: deque[float] = deque(maxlen=WINDOW)
        self._n: deque[float] = deque(maxlen=WINDOW)
        self._new = 0

    def observe(self, d: float, n: int) -> None:
        self._d.append(min(float(d), float(n) * 2.0))  # a window is at most n ops from a much shorter one
        self._n.append(float(n))
        self._new += 1

    def update(self) -> int:
        """Refit when enough new observations arrived; returns the level to use next."""
        if len(self._d) >= MIN_OBS and (self.rho is None or self._new >= REFIT_EVERY):
            self.rho = fit_rate(np.fromiter(self._d, float), np.fromiter(self._n, float))
            self.level = nearest_level(self.rho, self.level_rhos)
            self._new = 0
        return self.level

    def state(self) -> dict:
        return {"rho": self.rho, "level": self.level, "observations": len(self._d)}
