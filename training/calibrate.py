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
                           With an instability R > 0 it also holds `levels`: thresholds fitted on
                           validation sessions perturbed at each rate of LEVELS (the tolerant scores
                           computed at that rate) under the same normal flag budget, each score's
                           threshold chosen by the labelled validation anomalies it catches
                           (recall_thresholds) rather than at one common percentile, with the
                           instability the online estimator (logad.instability) reads there. The
                           detector picks the level from its own estimate at run time; R is only
                           where it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from logad.artifacts import load_bundle, sha256_file
from logad.detector import Detector, save_reference, save_thresholds
from logad.errors import ArtifactError
from logad.eval_metrics import f1_at_prevalence, prf
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
    # A window's scores are a function of its ids and context only, and the validation sessions
    # (their perturbed copies included) repeat: each distinct window is scored once.
    first: dict[tuple, int] = {}  # (ids, n_context) -> index in `distinct`
    distinct, slot = [], []
    for w in windows:
        key = (tuple(w.ids), w.n_context)
        if key not in first:
            first[key] = len(distinct)
            distinct.append(w)
        slot.append(first[key])
    scored = [w.scores for w in detector.score_windows(distinct)]
    return [scored[j] for j in slot], np.asarray(owner, dtype=np.int64)


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


def session_max(scores: Sequence[dict], owner: np.ndarray, n_sessions: int, methods: Sequence[str]) -> np.ndarray:
    """(n_sessions, len(methods)) max window score of each session per method (-inf: no window)."""
    out = np.full((n_sessions, len(methods)), -np.inf)
    if len(scores):
        values = np.array([[s[m] for m in methods] for s in scores], dtype=np.float64)  # (windows, methods)
        for j in range(len(methods)):
            np.maximum.at(out[:, j], owner, values[:, j])
    return out


def recall_thresholds(normal: np.ndarray, anomalous: np.ndarray, methods: Sequence[str], budget: float,
                      normal_base: np.ndarray, anomalous_base: np.ndarray) -> dict[str, float] | None:
    """Per-method thresholds that flag as many labelled anomalous sessions as possible while the
    detector as a whole flags at most `budget` (a share) of the normal ones; None without anomalies.

    normal, anomalous: (sessions, methods) session max scores; *_base: (sessions,) already flagged by
    the unseen-template rule. One common percentile spends the false-positive budget evenly, whatever
    each score buys with it: under instability the score that separates a short truncated trace from
    a perturbed normal one is often not the one the common percentile loosens. Two greedy searches
    (_greedy: by gain per false positive, and by gain alone, which escapes the first's local optima);
    the one with the higher validation recall wins (then the fewer normal sessions flagged).
    Recall is that of whole sessions: a score that adds nothing there (a prefix-safe one, when the
    whole-trace scores already catch everything) stays at the edge of normal, even though it would
    have alerted before the session closed."""
    if not len(anomalous) or not len(normal) or not np.isfinite(normal.max(0)).all():
        return None  # (a score no normal session has a window for has no edge of normal either)
    runs = [_greedy(normal, anomalous, budget, normal_base, anomalous_base, by_ratio) for by_ratio in (True, False)]
    best = max(runs, key=lambda r: (r[1], -r[2]))
    return {m: float(t) for m, t in zip(methods, best[0])}


def _greedy(normal: np.ndarray, anomalous: np.ndarray, budget: float, normal_base: np.ndarray,
            anomalous_base: np.ndarray, by_ratio: bool) -> tuple[list[float], int, int]:
    """(thresholds, anomalies flagged, normal sessions flagged) of one greedy search: from every
    threshold at the largest normal value (nothing normal flagged by the scores) down, each step the
    best move over every candidate cut of every score (lumps: a move that costs one normal session
    may gain nothing until the next) by anomalies gained per normal session newly flagged
    (`by_ratio`) or by anomalies gained; a move that gains no anomaly is never made, so a score that
    does not help stays at the edge of normal."""
    allowed = int(np.floor(budget * len(normal) + 1e-9))
    # ascending candidate thresholds (a session without windows, -inf, is never flagged by a score)
    cuts = [np.unique(normal[:, j][np.isfinite(normal[:, j])]) for j in range(normal.shape[1])]
    th = [c[-1] for c in cuts]
    fn, fa = normal_base.copy(), anomalous_base.copy()
    fn |= (normal > np.array(th)).any(1)
    fa |= (anomalous > np.array(th)).any(1)
    while True:
        best = None  # (ratio, gain, -cost, j, threshold)
        room = allowed - int(fn.sum())
        for j in range(normal.shape[1]):
            c = cuts[j][cuts[j] < th[j]]  # lower candidates, ascending
            if not len(c):
                continue
            # sessions not yet flagged that a threshold t would add: those with score > t
            vn = np.sort(normal[~fn, j])
            va = np.sort(anomalous[~fa, j])
            cost = len(vn) - np.searchsorted(vn, c, side="right")
            gain = len(va) - np.searchsorted(va, c, side="right")
            ok = (cost <= room) & (gain > 0)
            if not ok.any():
                continue
            ratio = gain / np.maximum(cost, 0.5) if by_ratio else gain.astype(np.float64)
            # the best ratio (or gain), then the larger gain, then the cheaper, then the higher threshold
            k = max(np.flatnonzero(ok), key=lambda i: (ratio[i], gain[i], -cost[i], c[i]))
            cand = (float(ratio[k]), int(gain[k]), -int(cost[k]), j, float(c[k]))
            if best is None or cand[:3] > best[:3]:
                best = cand
        if best is None:
            break
        j, t = best[3], best[4]
        th[j] = t
        fn |= normal[:, j] > t
        fa |= anomalous[:, j] > t
    return [float(t) for t in th], int(fa.sum()), int(fn.sum())


def fit_level(scores: Sequence[dict], owner: np.ndarray, labels: np.ndarray, methods: Sequence[str],
              percentile: float, unseen_rate_max: float) -> tuple[dict[str, float], float]:
    """Thresholds for one set of validation sessions and the percentile they stand for: by validation
    recall under the false-positive budget (100 - percentile)% of the normal sessions
    (recall_thresholds), or the joint common percentile when there is no labelled anomaly."""
    S = session_max(scores, owner, len(labels), methods)
    U = session_max(scores, owner, len(labels), ("unseen_rate",))[:, 0] > unseen_rate_max
    normal, anomalous = labels == 0, labels == 1
    values = recall_thresholds(S[normal], S[anomalous], methods, 1.0 - percentile / 100.0, U[normal], U[anomalous])
    if values is None:
        p = joint_percentile(normal_session_max(scores, owner, labels), methods, percentile, unseen_rate_max)
        return fit_thresholds(normal_session_max(scores, owner, labels), methods, p), p
    flagged = (S[normal] > np.array([values[m] for m in methods])).any(1) | U[normal]
    return values, round(100.0 * (1.0 - float(flagged.mean())), 4)


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
    own seeds), the tolerant scores at that rate, thresholds by validation recall under the normal
    flag budget (fit_level; `percentile` in the table: the share of normal sessions left unflagged),
    and the rate the online estimator reads on the same windows (normal and anomalous mixed, as a
    stream would be)."""
    rows = val if rate == 0 else [r for k in range(draws) for r in perturb_rows(val, rate, seed + k)]
    det = Detector(bundle, ref, Thresholds({}, unseen_rate_max, percentile, topk, instability=rate),
                   pick_device(device))
    lengths: list[int] = []
    scores, owner = window_scores(det, rows, lengths)
    labels = np.array([r.label for r in rows])
    values, p = fit_level(scores, owner, labels, methods, percentile, unseen_rate_max)
    m = prf(labels, session_flags(scores, owner, len(rows), Thresholds(values, unseen_rate_max)))
    return {"instability": rate, "rho": estimator_rate(scores, lengths), "values": values, "percentile": p,
            "normal_flag_rate": m["fpr"], "recall": m["recall"],
            "f1_at_prevalence": f1_at_prevalence(m["recall"], m["fpr"], prevalence)}
