"""`logad calibrate`: normal reference + thresholds from normal validation windows.

Writes into the model folder:
    reference.safetensors  seen-template mask, unique count vectors and distinct traces of normal
                           training windows
    thresholds.json        per-method thresholds: percentiles of the normal validation sessions' max
                           window scores, at the lowest common percentile at which the detector as a
                           whole flags at most (100 - `percentile`)% of those sessions (99.5 -> 0.5%),
                           scales,
                           the weights and reference hashes, and a percentile table (FPR / precision /
                           recall / F1 on the labelled validation sessions for each percentile), so
                           the choice is informed: at ~3% anomalies a 0.5% FPR alone caps F1 near 0.92.
                           With an instability R > 0 it also holds `levels`: the same fit repeated on
                           validation sessions perturbed at each rate of LEVELS (the tolerant scores
                           computed at that rate), with the instability the online estimator
                           (logad.instability) reads there. The detector picks the level from its
                           own estimate at run time; R is only where it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from logad.artifacts import load_bundle, sha256_file
from logad.detector import Detector, save_reference, save_thresholds
from logad.errors import ArtifactError
from logad.metrics import f1_at_prevalence, prf
from logad.model import pick_device
from logad.instability import fit_rate, observable
from logad.scoring import build_reference
from logad.thresholds import Thresholds, fit_thresholds
from training.data import SessionRow, load_split, session_windows
from training.perturb import perturb_rows

# max_nll is reported, opt-in: it fires on rare-but-normal orderings. With an instability R > 0 the
# exact count lookup (count_l1) gives way to its instability-tolerant form (count_tail).
DEFAULT_METHODS = ("topk_miss", "count_l1", "count_excess")
TOLERANT_METHODS = ("topk_miss", "count_tail", "count_excess", "edit_tail", "block_run")
INSTABILITY_DRAWS = 5  # perturbed copies of the validation split: 5 x ~1k normal sessions puts ~25 above the 99.5th
PERCENTILES = (90.0, 95.0, 97.5, 99.0, 99.5, 99.8, 99.9, 100.0)
# Instability levels the adaptive detector can move between (denser at the low end: a tolerance far
# above the real rate costs recall, one far below it floods alerts). 0 is the exact lookup.
LEVELS = (0.0, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15)


def window_scores(detector: Detector, rows: Sequence[SessionRow],
                  lengths: list[int] | None = None) -> tuple[list[dict], np.ndarray]:
    """Raw scores of every window of the sessions, and the index of each window's session
    (`lengths`, if given, receives each window's number of events)."""
    windows, owner = [], []
    for k, r in enumerate(rows):
        ws = detector.session_windows(r.session_id, r.ids)
        windows += ws
        owner += [k] * len(ws)
    if lengths is not None:
        lengths += [len(w.ids) for w in windows]
    return [w.scores for w in detector.score_windows(windows)], np.asarray(owner, dtype=np.int64)


def estimator_rate(scores: Sequence[dict], lengths: Sequence[int]) -> float:
    """What the online estimator (logad.instability) reads on these windows (all of them, not the
    last WINDOW: a steadier figure for the level's anchor)."""
    keep = [(s["edit_ops"], n) for s, n in zip(scores, lengths) if observable(s)]
    if not keep:
        return 0.0
    d, n = np.asarray(keep, dtype=np.float64).T
    return fit_rate(d, n)


def normal_session_max(scores: Sequence[dict], owner: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One value per normal session (its max window score): a single long normal session cut into
    many windows must not own the tail of the distribution, and the decision (and FPR) is per session."""
    per_session: dict[int, dict[str, float]] = {}
    for s, k in zip(scores, owner):
        if labels[k] == 0:
            cur = per_session.setdefault(int(k), dict(s))
            for m, v in s.items():
                cur[m] = max(cur[m], v)
    return list(per_session.values())


def session_flags(scores: list[dict], owner: np.ndarray, n_sessions: int, th: Thresholds) -> np.ndarray:
    """Session decision (any window anomalous) for a threshold set, without re-running the model."""
    flags = np.zeros(n_sessions, dtype=bool)
    for s, k in zip(scores, owner):
        if not flags[k] and th.decide(s)[0]:
            flags[k] = True
    return flags


def _flag_rate(normal_scores: list[dict], values: dict[str, float], unseen_rate_max: float) -> float:
    """Share of sessions (per-method max scores, whole traces) the decision rule flags with `values`."""
    th = Thresholds(values, unseen_rate_max)
    flags = [th.decide(s)[0] for s in normal_scores]
    return float(np.mean(flags)) if flags else 0.0


def joint_percentile(normal_scores: list[dict], methods: Sequence[str], percentile: float,
                     unseen_rate_max: float, step: float = 0.05) -> float:
    """The smallest per-method percentile (>= `percentile`) at which the detector as a whole — any
    method over its threshold, or the unseen rule — flags at most (100 - percentile)% of the normal
    calibration sessions. Each method at the 99.5th alone would let five methods flag up to 2.5%."""
    target = 1.0 - percentile / 100.0
    p = percentile
    while p < 100.0:
        if _flag_rate(normal_scores, fit_thresholds(normal_scores, methods, p), unseen_rate_max) <= target + 1e-12:
            return round(p, 4)
        p += step
    return 100.0


def calibrate(model_dir: str | Path, data_dir: str | Path, percentile: float = 99.5,
              methods: Sequence[str] | None = None, unseen_rate_max: float = 0.05, topk: int = 9,
              device: str = "auto", prevalence: float = 0.0293, instability: float = 0.0,
              instability_seed: int = 20240, instability_draws: int = INSTABILITY_DRAWS) -> dict:
    """`instability` R > 0 makes the detector tolerate that much log drift: count_tail expects drops and
    duplicates at rate R, and the thresholds are fitted on the clean validation sessions plus
    `instability_draws` perturbed copies of them (drop/duplicate/swap at rate R, seeded from
    `instability_seed`, never a test seed). `methods` None: TOLERANT_METHODS if R > 0 else DEFAULT_METHODS."""
    if not 0.0 <= instability < 1.0:
        raise ArtifactError(f"instability must be in [0, 1), got {instability}")
    methods = tuple(methods or (TOLERANT_METHODS if instability > 0 else DEFAULT_METHODS))
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    bundle = load_bundle(model_dir, pick_device(device))
    ds_vocab = data_dir / "template_vocab.json"
    if sha256_file(ds_vocab) != bundle.manifest["vocab"]["sha256"]:
        raise ArtifactError(f"{ds_vocab} differs from the model's vocab: calibrate on the dataset the model was trained on")
    train, clean_val = load_split(data_dir, "train"), load_split(data_dir, "val")
    val = clean_val
    if instability > 0:
        val = val + [r for k in range(instability_draws) for r in perturb_rows(val, instability, instability_seed + k)]
    normal_val = [r for r in val if r.label == 0]
    if not normal_val:
        raise ArtifactError(f"{data_dir}/val.parquet has no normal sessions to calibrate on")
    train_windows = [w for r in train if r.label == 0 for w, _ in session_windows(r.ids, bundle.rule)]
    ref = build_reference(train_windows, bundle.model.cfg.vocab_size, bundle.vocab.UNK)
    ref_sha = save_reference(model_dir, ref)
    det = Detector(bundle, ref, Thresholds({}, unseen_rate_max, percentile, topk, instability=instability),
                   pick_device(device))
    scores, owner = window_scores(det, val)
    labels = np.array([r.label for r in val])
    normal_scores = normal_session_max(scores, owner, labels)
    scales = {m: float(np.std([s[m] for s in normal_scores]) or 1.0) for m in methods}

    def at(p: float) -> Thresholds:
        return Thresholds(fit_thresholds(normal_scores, methods, p), unseen_rate_max, p, topk,
                          bundle.weights_sha256, ref_sha, instability, {"scales": scales})

    joint = joint_percentile(normal_scores, methods, percentile, unseen_rate_max)
    table = []
    for p in sorted(set(PERCENTILES) | {percentile, joint}):
        flags = session_flags(scores, owner, len(val), at(p))
        m = prf(labels, flags)
        table.append({"percentile": p, **{k: m[k] for k in ("fpr", "precision", "recall", "f1")},
                      "f1_at_prevalence": f1_at_prevalence(m["recall"], m["fpr"], prevalence)})
    chosen = at(joint)
    levels = ()
    if instability > 0:
        levels = tuple(_level(bundle, ref, clean_val, r, methods, percentile, unseen_rate_max, topk, device,
                              instability_seed, instability_draws, prevalence) for r in sorted(set(LEVELS) | {instability}))
    th = Thresholds(chosen.values, unseen_rate_max, joint, topk, bundle.weights_sha256, ref_sha, instability, {
        "target_percentile": percentile,
        "joint_normal_flag_rate": _flag_rate(normal_scores, chosen.values, unseen_rate_max),
        "scales": scales, "normal_val_windows": int(np.sum(labels[owner] == 0)),
        "normal_val_sessions": len(normal_val), "calibrated_on": "max window score of each normal val session",
        "percentile_table": table, "methods": list(methods), "calibration_instability": instability,
        "calibration_draws": instability_draws if instability > 0 else 0,
        "level_table": [{k: lv[k] for k in ("instability", "rho", "percentile", "normal_flag_rate", "recall",
                                            "f1_at_prevalence")} for lv in levels],
        "note": "percentile table measured on the labelled validation sessions; "
                f"f1_at_prevalence re-weights precision to {prevalence:.2%} anomalies",
    }, tuple({k: lv[k] for k in ("instability", "rho", "values")} for lv in levels))
    save_thresholds(model_dir, th)
    return th.to_dict()


def _level(bundle, ref, val: list[SessionRow], rate: float, methods: Sequence[str], percentile: float,
           unseen_rate_max: float, topk: int, device: str, seed: int, draws: int, prevalence: float) -> dict:
    """One instability level: validation sessions perturbed at `rate` (clean at 0; the calibration's
    own seeds), the tolerant scores at that rate, thresholds at the joint percentile of the normal
    sessions, and the rate the online estimator reads on the same windows (normal and anomalous
    mixed, as a stream would be)."""
    rows = val if rate == 0 else [r for k in range(draws) for r in perturb_rows(val, rate, seed + k)]
    det = Detector(bundle, ref, Thresholds({}, unseen_rate_max, percentile, topk, instability=rate),
                   pick_device(device))
    lengths: list[int] = []
    scores, owner = window_scores(det, rows, lengths)
    labels = np.array([r.label for r in rows])
    normal = normal_session_max(scores, owner, labels)
    p = joint_percentile(normal, methods, percentile, unseen_rate_max)
    values = fit_thresholds(normal, methods, p)
    m = prf(labels, session_flags(scores, owner, len(rows), Thresholds(values, unseen_rate_max)))
    return {"instability": rate, "rho": estimator_rate(scores, lengths), "values": values, "percentile": p,
            "normal_flag_rate": m["fpr"], "recall": m["recall"],
            "f1_at_prevalence": f1_at_prevalence(m["recall"], m["fpr"], prevalence)}
