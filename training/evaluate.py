"""`logad evaluate` and `logad score`: honest evaluation of a calibrated model, beside baselines.

Results go to artifacts/metrics/<dataset>/anomaly_detection_results.json (metrics at the calibrated
threshold, PR-AUC, confusion counts, baselines on the same splits, the model's gap to the best
baseline, the percentile table from calibration), anomaly_diagnostics.json (coverage, positional
entropy, recommendations) and two plots (F1 vs threshold, score distributions).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from logad.artifacts import write_json  # noqa: E402
from logad.baselines import RULES, Baselines  # noqa: E402
from logad.detector import Detector, SessionResult  # noqa: E402
from logad.eval_metrics import f1_at_prevalence, pr_auc, prf  # noqa: E402
from logad.sequences import read_sequences  # noqa: E402
from logad.thresholds import Thresholds  # noqa: E402
from training.data import SessionRow, load_split  # noqa: E402
from training.diagnostics import coverage, positional  # noqa: E402
from training.perturb import perturb_rows  # noqa: E402

HDFS_PREVALENCE = 0.0293


def metrics_block(labels: Sequence[int], flags: Sequence[bool], scores: Sequence[float]) -> dict:
    m = prf(labels, flags)
    m["pr_auc"] = pr_auc(labels, scores)
    m["f1_at_hdfs_prevalence"] = f1_at_prevalence(m["recall"], m["fpr"], HDFS_PREVALENCE)
    m["sessions"], m["anomalies"] = len(labels), int(np.sum(labels))
    return m


class FittedBaselines:
    """The baselines fitted once on normal training sessions, with their thresholds: the model's
    percentile of their normal validation sessions' scores for the graded ones, the papers' rules
    for the rest (anything unseen; DeepLog's top-g miss; PCA's Q-statistic; a violated invariant)."""

    def __init__(self, train: list[SessionRow], val: list[SessionRow], vocab_size: int, percentile: float,
                 paper: bool = False) -> None:
        self.b = Baselines([r.ids for r in train if r.label == 0], vocab_size, paper=paper)
        val_scores = self.b.score([r.ids for r in val if r.label == 0])
        self.thresholds = {name: RULES[name] if name in RULES else
                           (float(np.percentile(v, percentile)) if len(v) else 0.0) for name, v in val_scores.items()}

    def metrics(self, test: list[SessionRow]) -> dict:
        test_scores = self.b.score([r.ids for r in test])
        labels = [r.label for r in test]
        return {name: {"threshold": thr, **metrics_block(labels, test_scores[name] > thr, test_scores[name])}
                for name, thr in self.thresholds.items()}


def baseline_metrics(train: list[SessionRow], val: list[SessionRow], test: list[SessionRow],
                     vocab_size: int, percentile: float) -> dict:
    """Graded baselines thresholded at the model's percentile of their normal validation sessions' scores."""
    return FittedBaselines(train, val, vocab_size, percentile).metrics(test)


# The detector's parts, for ablations: which evidence catches what (each with the unseen-template rule).
COMPONENTS = {"sequence_model": ("topk_miss", "max_nll", "mean_nll", "ppl"),
              "counts": ("count_l1", "count_tail", "count_excess"),
              "alignment": ("edit_tail", "block_run")}


def component_metrics(results: Sequence[SessionResult], thresholds: dict) -> dict:
    """Metrics of each part of the detector alone, from the per-session max scores (on whole traces
    "any window over a threshold" equals "the session max over it")."""
    labels = [r.label for r in results]
    out = {}
    for name, methods in COMPONENTS.items():
        used = {m: t for m, t in thresholds["values"].items() if m in methods}
        part = Thresholds(used, thresholds["unseen_rate_max"])
        flags = [bool(r.scores) and part.decide(r.scores)[0] for r in results]
        out[name] = {"methods": sorted(used), **metrics_block(labels, flags, [float(f) for f in flags])}
    return out


def recommendations(diag: dict, results: dict, thresholds: dict) -> list[str]:
    """Rules of thumb turned into sentences an operator can act on."""
    recs = []
    cov = diag["coverage"]["val_normal"]["unseen_template_rate"]
    if cov > 0.01:
        recs.append(f"unseen-template rate on normal validation sessions is {cov:.1%}: revisit masking or the Drain3 "
                    "similarity threshold (templates are splitting), or add training data")
    n_val = thresholds.get("extra", {}).get("normal_val_sessions", 0)
    if n_val and n_val * (1 - thresholds["percentile"] / 100) < 10:
        recs.append(f"only {n_val} normal validation sessions: the {thresholds['percentile']}th percentile rests "
                    f"on fewer than 10 sessions above it, so the threshold is uncertain; add normal validation data")
    long_share = results.get("diagnostics", {}).get("fp_multiwindow_share", 0.0)
    if long_share > 0.5:
        recs.append("most false positives are multi-window (long) sessions: consider a longer window length")
    m, best = results["model"], results["best_baseline"]
    if m["f1"] + 1e-9 < results["baselines"][best]["f1"]:
        recs.append(f"the {best} baseline beats the model on this split (F1 {results['baselines'][best]['f1']:.4f} "
                    f"vs {m['f1']:.4f}): check the enabled score methods and the threshold percentile (thresholds "
                    "calibrated for log instability trade a little clean F1 for robustness: see logad robustness)")
    if m["fpr"] > 0.005:
        recs.append(f"FPR {m['fpr']:.2%} on test normals caps F1 at real prevalence "
                    f"({m['f1_at_hdfs_prevalence']:.3f} at 2.93%): consider a higher percentile")
    if not recs:
        recs.append("no issues found: coverage is complete, thresholds rest on enough windows, and the model "
                    "is at least as good as every baseline on this split")
    return recs


def _symlog(x: np.ndarray) -> np.ndarray:
    """sign(x) * log10(1 + |x|): scores span 1e-2 .. 1e3 on both sides of the threshold (0); this
    shows them all without clipping, and 0 stays 0."""
    return np.sign(x) * np.log10(1.0 + np.abs(x))


def _symlog_ticks(ax, lo: float, hi: float, axis: str = "x") -> None:
    vals = [v for v in (-10000, -1000, -100, -10, -1, 0, 1, 10, 100, 1000, 10000)
            if lo - 1.0 <= _symlog(np.array([v]))[0] <= hi + 1.0]
    pos = _symlog(np.array(vals, dtype=float))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(pos)
    (ax.set_xticklabels if axis == "x" else ax.set_yticklabels)([f"{v:g}" for v in vals])


def _plots(out: Path, results: Sequence[SessionResult], name: str) -> None:
    """F1 against the threshold and the score distributions, readable by someone who did not write
    them: no score is clipped (a symmetric log axis), normal and anomalous sessions get panels of
    their own, and F1 is drawn as the step function it is, with a dot at every distinct score."""
    labels = np.array([r.label for r in results])
    scores = np.array([r.score for r in results])
    finite = np.isfinite(scores)
    labels, scores = labels[finite], scores[finite]
    if not len(scores):
        return
    xs = _symlog(scores)
    lo, hi = float(xs.min()), float(xs.max())
    # F1 if the threshold were at each distinct score (sessions scoring above it are flagged): a step
    # function, constant between scores; no line is drawn across ranges without sessions.
    cuts = np.unique(scores)
    if len(cuts) > 400:
        cuts = np.unique(np.quantile(scores, np.linspace(0, 1, 400)))
    f1s = np.array([prf(labels, scores > t)["f1"] for t in cuts])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(_symlog(cuts), f1s, where="post", color="tab:blue", label="F1 if the threshold were here")
    ax.plot(_symlog(cuts), f1s, ".", color="tab:blue", ms=3)
    ax.axvline(0.0, color="red", ls="--", label=f"calibrated threshold (F1 {prf(labels, scores > 0)['f1']:.3f})")
    _symlog_ticks(ax, lo, hi)
    ax.set(xlabel="combined score threshold (symmetric log scale; > 0 = anomaly)", ylabel="F1 on the test split",
           ylim=(-0.02, 1.02), title=f"{name}: F1 against the threshold ({len(scores):,} sessions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "f1_vs_threshold.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    # 0 (the threshold) is a bin edge: a bar never straddles the red line
    span = max(hi - lo, 1e-3)
    lo_e, hi_e = min(lo, -0.04 * span), max(hi, 0.04 * span)  # room for a visible bar on each side
    n_neg = max(2, int(round(60 * -lo_e / (hi_e - lo_e))))
    # (the edge sits just above 0: a score of exactly 0 is not anomalous and falls left of the line)
    edge = 1e-12
    bins = np.concatenate([np.linspace(lo_e - 1e-9, edge, n_neg + 1)[:-1], np.linspace(edge, hi_e + 1e-9, 62 - n_neg)])
    for ax, lab, color, what in ((axes[0], 0, "tab:blue", "normal"), (axes[1], 1, "tab:orange", "anomalous")):
        sel = xs[labels == lab]
        flagged = int(np.sum(scores[labels == lab] > 0))
        ax.hist(sel, bins=bins, color=color, log=True)
        ax.axvline(0.0, color="red", ls="--", label="threshold")
        ax.set(ylabel="sessions (log)", title=f"{what}: {len(sel):,} sessions, {flagged:,} above the threshold")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _symlog_ticks(axes[1], lo, hi)
    axes[1].set(xlabel="combined score (symmetric log scale; > 0 = anomaly, no score clipped)")
    fig.suptitle(f"{name}: score distribution on the test split")
    fig.tight_layout()
    fig.savefig(out / "score_distribution.png", dpi=100)
    plt.close(fig)


def evaluate(model_dir: str | Path, data_dir: str | Path, name: str, metrics_dir: str | Path | None = None,
             instability: float = 0.0, seed: int = 0, device: str = "auto", write: bool = True,
             baselines: FittedBaselines | None = None, adapt: bool = True) -> dict:
    """`baselines`: fitted once by the caller (robustness); `adapt` False pins the detector at its
    sealed instability (the fixed-tolerance ablation)."""
    det = Detector.load(model_dir, device, adapt=adapt)
    splits = {s: load_split(data_dir, s) for s in ("train", "val", "test")}
    test = splits["test"]
    if instability > 0:
        test = perturb_rows(test, instability, seed)
    res = det.score_id_sessions((r.session_id, r.label, r.ids) for r in test)
    labels = [r.label for r in test]
    model = metrics_block(labels, [r.is_anomaly for r in res], [r.score for r in res])
    th = det.thresholds.to_dict()  # type: ignore[union-attr]
    if baselines is None:
        baselines = FittedBaselines(splits["train"], splits["val"], det.bundle.model.cfg.vocab_size, th["percentile"])
    base = baselines.metrics(test)
    base_or_none = base or {"none": {"f1": 0.0}}  # robustness's fixed-tolerance rows skip the baselines
    best = max(base_or_none, key=lambda k: base_or_none[k]["f1"])
    fps = [r for r in res if r.label == 0 and r.is_anomaly]
    results = {
        "dataset": name, "split": "test", "instability": instability, "seed": seed,
        "model_version": det.version, "thresholds": th["values"], "percentile": th["percentile"],
        "unseen_rate_max": th["unseen_rate_max"], "calibration_instability": th.get("instability", 0.0),
        "model": model, "components": component_metrics(res, th), "baselines": base, "best_baseline": best,
        "instability_estimate": det.instability_state(),
        "gap_to_best_baseline_f1": model["f1"] - base_or_none[best]["f1"],
        "statement": (f"model F1 {model['f1']:.4f} vs best baseline ({best}) {base_or_none[best]['f1']:.4f}: "
                      + ("model >= best baseline" if model["f1"] >= base_or_none[best]["f1"]
                         else "model is below the best baseline")),
        "percentile_table_val": th["extra"].get("percentile_table", []),
        "diagnostics": {"fp_multiwindow_share": (sum(r.n_windows > 1 for r in fps) / len(fps)) if fps else 0.0},
    }
    if not write:
        return results
    out = Path(metrics_dir or Path("artifacts/metrics") / name)
    out.mkdir(parents=True, exist_ok=True)
    cov = {s: coverage(splits["train"], splits[s], det.bundle.vocab.UNK) for s in ("val", "test")}
    cov["val_normal"] = coverage(splits["train"], [r for r in splits["val"] if r.label == 0], det.bundle.vocab.UNK)
    diag = {"coverage": cov,
            "positional": {s: positional(det.bundle.model, splits[s], det.bundle.rule, det.bundle.vocab.BOS,
                                         det.bundle.vocab.PAD, det.device) for s in ("val", "test")}}
    diag["recommendations"] = recommendations(diag, results, th)
    results["recommendations"] = diag["recommendations"]
    write_json(out / "anomaly_detection_results.json", results)
    write_json(out / "anomaly_diagnostics.json", diag)
    _plots(out, res, name)
    return results


def score_file(model_dir: str | Path, sequences: str | Path, label: str | None, out_csv: str | Path | None,
               device: str = "auto", key_prefix: str = "", partial: bool = False) -> list[SessionResult]:
    """`logad score`: one row per session of a sequence file; unknown template keys count as unseen.
    `partial`: the sequences may be cut short (e.g. by the end of a log file), see COMPLETE_REASONS."""
    det = Detector.load(model_dir, device)
    seqs = list(read_sequences(sequences, label=label, key_prefix=key_prefix))
    res = det.score_sessions(((s.session_id, s.label, s.keys) for s in seqs), complete=not partial)
    if out_csv:
        methods = list(res[0].scores) if res and res[0].scores else []
        with open(out_csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["session_id", "label", "score", "is_anomaly", *methods])
            for r in res:
                lab = "" if r.label is None else ("Anomaly" if r.label else "Normal")
                w.writerow([r.session_id, lab, f"{r.score:.6g}", int(r.is_anomaly),
                            *(f"{r.scores.get(m, float('nan')):.6g}" for m in methods)])
    return res


def evaluate_file(model_dir: str | Path, sequences: str | Path, label: str | None, device: str = "auto",
                  key_prefix: str = "", partial: bool = False) -> dict:
    res = score_file(model_dir, sequences, label, None, device, key_prefix, partial)
    known = [r for r in res if r.label is not None]
    return metrics_block([r.label for r in known], [r.is_anomaly for r in known], [r.score for r in known])
