"""Detection metrics, guarded against empty classes (no division by zero, ever)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def confusion(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, int]:
    t, p = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()),
            "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum())}


def prf(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float | int]:
    """Precision, recall, F1, FPR and the confusion counts. Empty classes give 0.0, not NaN."""
    c = confusion(y_true, y_pred)
    precision = _div(c["tp"], c["tp"] + c["fp"])
    recall = _div(c["tp"], c["tp"] + c["fn"])
    f1 = _div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1,
            "fpr": _div(c["fp"], c["fp"] + c["tn"]), **c}


def f1_at_prevalence(recall: float, fpr: float, prevalence: float) -> float:
    """F1 the same detector would get where anomalies are `prevalence` of sessions (e.g. HDFS 2.93%).

    Precision is re-weighted: tp ~ recall * p, fp ~ fpr * (1 - p).
    """
    tp, fp = recall * prevalence, fpr * (1.0 - prevalence)
    precision = _div(tp, tp + fp)
    return _div(2 * precision * recall, precision + recall)


def pr_auc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """Average precision (area under the precision-recall curve); 0.0 when there is no positive."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.sum() == 0 or y.size == 0:
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # Group ties: precision/recall are taken at the last index of each distinct score.
    last = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))
