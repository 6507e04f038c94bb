"""The learning curve's report: HDFS-pretrained vs from-scratch rows compared figure by figure
(paired over replicates and perturbation seeds, with tolerances), the verdict sentence, the
Markdown table and the plot. Reads the rows training.learning_curve computes; trains nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INITS = ("hdfs", "scratch")  # row labels; finetune() calls them "finetuned" and "scratch"
# Differences at or below these count as "no meaningful difference": one seed, ~1.2k test sessions.
F1_TOL = 0.01
LOSS_TOL = 0.01  # the same tolerance as finetune()'s transfer verdict


# (label, row -> value, higher is better, tolerance, decimals) of each compared figure
FIGURES = (("next-template val loss", lambda r: r["best_val_loss"], False, LOSS_TOL, 4),
           ("F1 clean", lambda r: r["clean"]["f1"], True, F1_TOL, 3),
           ("F1 at R", lambda r: r["perturbed"]["f1"], True, F1_TOL, 3),
           # at HDFS's real prevalence (2.93%) a few false positives weigh much more than on the test split
           ("F1 at 2.93% clean", lambda r: r["clean"]["f1_at_hdfs_prevalence"], True, F1_TOL, 3),
           ("F1 at 2.93% at R", lambda r: r["perturbed"]["f1_at_hdfs_prevalence"], True, F1_TOL, 3),
           ("sequence model alone F1 clean", lambda r: r.get("sequence_model_f1", {}).get("clean"), True, F1_TOL, 3),
           ("sequence model alone F1 at R", lambda r: r.get("sequence_model_f1", {}).get("perturbed"), True, F1_TOL,
            3))
PER_SEED = {"F1 at R": "f1", "F1 at 2.93% at R": "f1_at_hdfs_prevalence"}  # figures that are seed means
DETECTION = ("F1 clean", "F1 at R", "F1 at 2.93% clean", "F1 at 2.93% at R")  # the detector's figures
SIGN_WORD = {1: "better with HDFS pretraining", -1: "worse with HDFS pretraining", 0: "no meaningful difference",
             "lean+": "no consistent difference (the mean favours HDFS pretraining, the replicates or "
                      "perturbation seeds disagree)",
             "lean-": "no consistent difference (the mean favours scratch, the replicates or perturbation "
                      "seeds disagree)"}


def compare(hdfs: dict, scratch: dict) -> dict:
    """Per figure: the difference oriented so that > 0 favours pretraining, and its sign after the
    tolerance (+1 better, -1 worse, 0 no meaningful difference). Detection outcome from the two F1s:
    helps / hurts / mixed / none from the DETECTION figures (val loss and the sequence model alone are
    not what an operator gets, so they do not enter it)."""
    out: dict = {"diffs": {}, "signs": {}}
    for label, get, higher, tol, _ in FIGURES:
        if get(hdfs) is None or get(scratch) is None:  # an optional figure evaluate() did not report
            continue
        d = (get(hdfs) - get(scratch)) * (1 if higher else -1)
        sign = 1 if d > tol else -1 if d < -tol else 0
        ds = _paired(label, get, higher, hdfs, scratch)
        out.setdefault("paired_diffs", {})[label] = ds
        if sign and not all(x * sign > 0 for x in ds):
            # replicates or perturbation seeds disagree on the direction: nothing to stand behind, but
            # the sentence says which way the mean leans (sign stays 0 for the outcome)
            out.setdefault("leans", {})[label] = "lean+" if sign > 0 else "lean-"
            sign = 0
        out["diffs"][label], out["signs"][label] = d, sign
    det = [out["signs"][k] for k in DETECTION]
    out["detection"] = ("mixed" if 1 in det and -1 in det else "helps" if 1 in det else
                        "hurts" if -1 in det else "none")
    return out


def _paired(label: str, get, higher: bool, hdfs: dict, scratch: dict) -> list[float]:
    """The differences behind a mean, paired: per replicate (same subset, seed and budget for both
    inits) and, for figures at R, per perturbation seed (the same perturbed sessions)."""
    out = []
    for a, b in zip(hdfs.get("replicates", [hdfs]), scratch.get("replicates", [scratch])):
        if label in PER_SEED and "perturbed_by_seed" in a and "perturbed_by_seed" in b:
            key = PER_SEED[label]
            out += [x[key] - y[key] for x, y in zip(a["perturbed_by_seed"], b["perturbed_by_seed"])]
        elif get(a) is not None and get(b) is not None:
            out.append((get(a) - get(b)) * (1 if higher else -1))
    return out


def _pct(fs: Sequence[float]) -> str:
    return ", ".join(f"{f:.0%}" for f in fs)


def verdict(rows: Sequence[dict], instability: float) -> tuple[str, dict]:
    """The verdict sentence, built from the rows (nothing in it is written in advance), and the
    per-fraction comparisons. Each figure is grouped by its sign over the fractions; the bottom line
    is about detection (F1), the only thing an operator gets from pretraining."""
    by = {(r["fraction"], r["init"]): r for r in rows}
    fractions = sorted({r["fraction"] for r in rows})
    comps = {f: compare(by[(f, "hdfs")], by[(f, "scratch")]) for f in fractions}
    clauses = []
    for label, get, _, _, dec in FIGURES:
        groups = []
        def group(f: float, label: str = label):
            c = comps[f]
            return c.get("leans", {}).get(label, c["signs"].get(label, "missing"))

        for sign in (1, -1, "lean+", "lean-", 0):
            fs = [f for f in fractions if group(f) == sign]
            if fs:
                pairs = ", ".join(f"{get(by[(f, 'hdfs')]):.{dec}f} vs {get(by[(f, 'scratch')]):.{dec}f}" for f in fs)
                groups.append(f"{SIGN_WORD[sign]} at {_pct(fs)} ({pairs})")
        if groups:
            clauses.append(f"{label.replace('at R', f'at R={instability:g}')}: " + "; ".join(groups))
    helps = [f for f in fractions if comps[f]["detection"] == "helps"]
    hurts = [f for f in fractions if comps[f]["detection"] == "hurts"]
    mixed = [f for f in fractions if comps[f]["detection"] == "mixed"]
    sessions = {f: by[(f, "hdfs")]["train_sessions"] for f in fractions}
    if helps and not hurts and not mixed:
        bottom = ("HDFS pretraining pays for detection at every fraction" if len(helps) == len(fractions) else
                  f"HDFS pretraining pays for detection at {_pct(helps)} "
                  f"({', '.join(str(sessions[f]) for f in helps)} sessions) and makes no difference elsewhere")
    elif not helps and not mixed:
        leaning = [f for f in fractions if any(comps[f].get("leans", {}).get(k) for k in DETECTION)]
        bottom = f"HDFS pretraining does not pay{' consistently' if leaning else ''} for detection at any fraction"
        if hurts:
            bottom += f" (it is worse at {_pct(hurts)})"
        if leaning:
            bottom += (f" (at {_pct(leaning)} some mean F1 differences exceed the tolerance, but not in every "
                       "replicate and perturbation seed)")
    else:
        said = [f"{w} at {_pct(fs)}" for w, fs in (("pays for detection", helps), ("is worse", hurts),
                                                   ("is mixed (some F1 better, some worse)", mixed)) if fs]
        bottom = "HDFS pretraining " + (", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0])
    loss_better = [f for f in fractions if comps[f]["signs"]["next-template val loss"] == 1]
    # (the sequence-model-alone figures are reported in the clauses but the bottom line is the detector's)
    if loss_better and not helps:
        bottom += (f"; its lower validation loss at {_pct(loss_better)} does not carry over to the "
                   "detector's decisions")
    sentence = (f"{bottom}. HDFS init vs scratch, same budget; differences within {F1_TOL} F1 or {LOSS_TOL} "
                f"val loss, or whose sign the replicates and perturbation seeds do not all share, count as none. "
                + ". ".join(clauses) + ".")
    return sentence, {f"{f:g}": c for f, c in comps.items()}


def markdown(report: dict) -> str:
    r_ = report["config"]["instability"]
    lines = [
        "# OpenStack learning curve: HDFS pretraining vs from scratch",
        "",
        f"Budget {report['config']['budget_samples']:,} training windows per run (the same for all runs, no early "
        f"stopping); means over {report['config']['replicates']} replicates (seeds {report['config']['seed']}.."
        f"{report['config']['seed'] + report['config']['replicates'] - 1}: subset draw, data order, init); "
        f"thresholds calibrated on the full normal validation split "
        f"(percentile {report['config']['calibration']['percentile']:g}, calibration instability "
        f"{report['config']['calibration']['instability']:g}), "
        f"test split clean and perturbed at R = {r_:g} (figures at R: mean over perturbation seeds "
        f"{report['config']['eval_seed']}..{report['config']['eval_seed'] + report['config']['eval_seeds'] - 1}). "
        f"Commit {report['git_commit'][:12]}, {report['seconds']:.0f} s.",
        "",
        f"| fraction | train sessions | init | best val loss | F1 clean | F1 R={r_:g} | F1 @2.93% clean | "
        f"F1 @2.93% R={r_:g} | sequence model alone F1 clean / R={r_:g} | best baseline F1 clean / R={r_:g} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def base(b: dict | None) -> str:
        return f"{b['f1']:.3f} ({b['name']})" if b else "n/a"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in report["rows"]:
        bb, sm = r.get("best_baseline", {}), r.get("sequence_model_f1", {})
        lines.append(f"| {r['fraction']:.0%} | {r['train_sessions']} | {r['init']} | {r['best_val_loss']:.4f} | "
                     f"{r['clean']['f1']:.3f} | {r['perturbed']['f1']:.3f} | "
                     f"{r['clean']['f1_at_hdfs_prevalence']:.3f} | {r['perturbed']['f1_at_hdfs_prevalence']:.3f} | "
                     f"{num(sm.get('clean'))} / {num(sm.get('perturbed'))} | "
                     f"{base(bb.get('clean'))} / {base(bb.get('perturbed'))} |")
    lines += ["", f"**Verdict:** {report['verdict']}", "", "Per replicate:", "",
              f"| fraction | seed | init | best val loss | F1 clean | F1 R={r_:g} | F1 @2.93% R={r_:g} |",
              "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        for x in r.get("replicates", []):
            lines.append(f"| {x['fraction']:.0%} | {x['seed']} | {x['init']} | {x['best_val_loss']:.4f} | "
                         f"{x['clean']['f1']:.3f} | {x['perturbed']['f1']:.3f} | "
                         f"{x['perturbed']['f1_at_hdfs_prevalence']:.3f} |")
    lines += ["", "Few replicates: treat differences near the tolerance as noise. The count-vector reference and "
              "the baselines also see only the subset's normal sessions (a different draw per replicate).", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    rows = report["rows"]
    r_ = report["config"]["instability"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for init, color, marker in zip(INITS, ("tab:blue", "tab:orange"), ("o", "s")):
        pts = sorted((r for r in rows if r["init"] == init), key=lambda r: r["fraction"])
        x = [p["train_sessions"] for p in pts]
        axes[0].plot(x, [p["clean"]["f1"] for p in pts], "-", marker=marker, color=color, label=f"{init}: clean")
        axes[0].plot(x, [p["perturbed"]["f1"] for p in pts], "--", marker=marker, color=color, alpha=0.7,
                     label=f"{init}: R={r_:g}")
        axes[1].plot(x, [p["best_val_loss"] for p in pts], "-", marker=marker, color=color, label=init)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("normal training sessions (log)")
        ax.legend(fontsize=8)
    axes[0].set(ylabel="F1 (test split)", title="OpenStack test F1")
    axes[1].set(ylabel="best validation loss", title="next-template validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
