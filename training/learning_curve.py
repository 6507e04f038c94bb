"""`logad learning-curve`: does HDFS pretraining pay when the target system has little data?

For each fraction of the OpenStack normal training sessions (1%, 10%, 100% by default) one model is
fine-tuned from the HDFS checkpoint and one is trained from scratch (same architecture, same seed,
same budget in samples, `training.pretrain.finetune`). Each is calibrated on the full normal
validation sessions (validation is not training data, so it is never subset) the way the shipped
OpenStack model was (`calibration_like`: its percentile, calibration instability, methods), and
evaluated on the test split, clean and at instability R = 0.02 with a fixed seed.

Subsetting is by session id: each normal training session gets the rank of sha256("<seed>:<id>"),
and a fraction keeps the lowest-ranked ones. It does not depend on row order, and the subsets are
nested (1% within 10% within 100%), so the curve measures the amount of data, not which sessions
were drawn. Every fraction keeps at least `min_sessions` sessions (10 by default; on the shipped
split 1% is ceil(0.01 * 2,895) = 29 sessions anyway).

The count-vector reference that calibration builds, and the baselines of `evaluate`, read the
subset's train split too: the detector as a whole only knows that much normal data.

Writes <out>/learning_curve.{json,md,png}; run folders (subset datasets, checkpoints, calibrated
models) go under <work>/ (artifacts/checkpoints/learning_curve/, not committed).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from logad.artifacts import git_commit, load_bundle, read_json, sha256_file, write_json  # noqa: E402
from logad.errors import ArtifactError, ConfigError  # noqa: E402
from training.calibrate import calibrate  # noqa: E402
from training.data import SessionRow, load_split  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from training.loop import TrainConfig  # noqa: E402
from training.pretrain import finetune, publish  # noqa: E402

INITS = ("hdfs", "scratch")  # row labels; finetune() calls them "finetuned" and "scratch"
# Differences at or below these count as "no meaningful difference": one seed, ~1.2k test sessions.
F1_TOL = 0.01
LOSS_TOL = 0.01  # the same tolerance as finetune()'s transfer verdict
METRICS = ("precision", "recall", "f1", "fpr", "f1_at_hdfs_prevalence")


@dataclass(frozen=True)
class Calibration:
    """The calibrate() settings every run of the curve gets; `calibration_like` copies them from the
    shipped OpenStack model, so the curve measures the detector as shipped, whatever it is then."""
    percentile: float = 99.5
    instability: float = 0.02  # perturbs validation sessions only (calibrate's own seeds), never test ones
    methods: tuple[str, ...] | None = None  # None: calibrate()'s default for the instability
    unseen_rate_max: float = 0.05
    topk: int = 9


def calibration_like(model_dir: str | Path) -> Calibration:
    """The settings a calibrated model was calibrated with (its thresholds.json)."""
    th = read_json(Path(model_dir) / "thresholds.json", "thresholds of the model to calibrate like")
    extra = th.get("extra", {})
    methods = extra.get("methods")
    # calibrate() may fit a stricter percentile than it was asked for (so the detector as a whole meets
    # the flag rate) and keeps the request as target_percentile: the request is the setting to copy.
    try:
        return Calibration(percentile=float(extra.get("target_percentile", th["percentile"])), instability=float(th.get("instability", 0.0)),
                           methods=tuple(methods) if methods else None,
                           unseen_rate_max=float(th["unseen_rate_max"]), topk=int(th["topk"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{model_dir}/thresholds.json lacks calibration settings ({e!r})") from None


@dataclass(frozen=True)
class CurveConfig:
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # of the normal training sessions, each in (0, 1]
    budget_samples: int = 18_000  # training windows per run, the same for all runs (~50 s each on 1 core)
    seed: int = 1337  # subset draw, data order, init of new rows and of scratch models
    instability: float = 0.02  # R of the perturbed test evaluation
    eval_seed: int = 0  # first perturbation seed of the test split (fixed, never tuned on)
    # Perturbed evaluation is repeated with seeds eval_seed, eval_seed + 1, ...: the figures at R are
    # means, and a difference only counts when every seed agrees on its sign (one draw is noisy).
    eval_seeds: int = 3
    # Replicates: the whole curve again with seed + 1, ... (another subset draw, data order and init).
    # Figures are means over replicates, and a difference only counts when every replicate agrees:
    # on one replicate the sign of the F1 differences flipped between fractions and between seeds.
    replicates: int = 2
    calibration: Calibration = Calibration()  # the CLI copies the shipped OpenStack model's
    min_sessions: int = 10  # floor of a subset: fewer windows than a batch make a meaningless run
    batch_size: int = 64
    lr: float = 3e-4  # as `logad finetune`
    warmup_share: float = 0.1  # warmup = this share of the budget
    evals: int = 10  # validation evaluations per run (best checkpoint by val loss)
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.fractions:
            raise ConfigError("learning curve needs at least one fraction")
        for f in self.fractions:
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"fraction {f} is outside (0, 1]")
        if len(set(self.fractions)) != len(self.fractions):
            raise ConfigError(f"fractions repeat: {self.fractions}")
        if self.budget_samples < self.batch_size:
            raise ConfigError(f"budget_samples {self.budget_samples} is below one batch ({self.batch_size})")
        if min(self.min_sessions, self.evals, self.eval_seeds, self.replicates) < 1:
            raise ConfigError("min_sessions, evals, eval_seeds and replicates must be >= 1")
        for name, v in (("instability", self.instability), ("calibration instability", self.calibration.instability)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{name} {v} is outside [0, 1)")

    def train_config(self) -> TrainConfig:
        # No early stopping: every run spends the whole budget, so budgets are equal by construction;
        # the best-by-val-loss checkpoint is what gets calibrated.
        return TrainConfig(max_samples=self.budget_samples, batch_size=self.batch_size, lr=self.lr,
                           betas=(0.9, 0.98), warmup_samples=max(1, int(self.warmup_share * self.budget_samples)),
                           eval_every=max(1, self.budget_samples // self.evals),
                           checkpoint_every=self.budget_samples, early_stop_patience=0, seed=self.seed,
                           device=self.device)


def subset_size(n: int, fraction: float, min_sessions: int) -> int:
    return min(n, max(min_sessions, math.ceil(fraction * n)))


def _rank(seed: int, session_id: str) -> str:
    return hashlib.sha256(f"{seed}:{session_id}".encode()).hexdigest()


def subset_sessions(rows: Sequence[SessionRow], fraction: float, seed: int, min_sessions: int = 10) -> list[SessionRow]:
    """The normal sessions of a fraction, chosen by hashed session id (order-free, nested in fraction)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction {fraction} is outside (0, 1]")
    normal = [r for r in rows if r.label == 0]
    if not normal:
        raise ConfigError("no normal training sessions to subset")
    ranked = sorted(normal, key=lambda r: (_rank(seed, r.session_id), r.session_id))
    return ranked[:subset_size(len(normal), fraction, min_sessions)]


def write_subset(data_dir: Path, out: Path, keep: set[str]) -> None:
    """A dataset folder whose train split holds only `keep`; val, test and the vocab are the originals
    (calibrate() checks the vocab hash, so it is copied byte for byte)."""
    out.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(data_dir / "train.parquet")
    mask = pc.is_in(table["session_id"], value_set=pa.array(sorted(keep)))
    pq.write_table(table.filter(mask), out / "train.parquet")
    for f in ("val.parquet", "test.parquet", "template_vocab.json"):
        shutil.copy2(data_dir / f, out / f)


def _tag(fraction: float) -> str:
    return f"frac_{fraction:g}".replace(".", "p")


def _metrics(res: dict) -> dict:
    return {k: float(res["model"][k]) for k in METRICS}


def _mean(xs: Sequence[float | None]) -> float | None:
    return None if not xs or any(x is None for x in xs) else float(sum(xs)) / len(xs)  # type: ignore[arg-type]


def _best_baseline(results: Sequence[dict]) -> dict | None:
    """The best baseline (of the first evaluation) on the same subset and test split, its F1 averaged
    over the evaluations: says whether the model adds anything. Optional: the row does not depend on
    evaluate() keeping this key."""
    name = results[0].get("best_baseline")
    if name is None or any(name not in r.get("baselines", {}) for r in results):
        return None
    return {"name": name, "f1": _mean([float(r["baselines"][name]["f1"]) for r in results])}


def _sequence_part(results: Sequence[dict]) -> float | None:
    """F1 of the sequence-model part alone (with the unseen rule), averaged over the evaluations: the
    only part whose weights the init changes. Optional like _best_baseline."""
    parts = [r.get("components", {}).get("sequence_model") for r in results]
    return _mean([float(p["f1"]) if p else None for p in parts])


def run_fraction(data_dir: Path, init: Path, work: Path, fraction: float, cfg: CurveConfig) -> list[dict]:
    """Both runs (HDFS init, scratch) of one fraction: train, calibrate, evaluate clean and perturbed."""
    run_dir = work / _tag(fraction)
    shutil.rmtree(run_dir, ignore_errors=True)  # a stale `best` of an earlier budget must not survive
    train_rows = load_split(data_dir, "train")
    keep = subset_sessions(train_rows, fraction, cfg.seed, cfg.min_sessions)
    sub = run_dir / "data"
    write_subset(data_dir, sub, {r.session_id for r in keep})
    models = {"hdfs": run_dir / "models" / "hdfs", "scratch": run_dir / "models" / "scratch"}
    t0 = time.time()
    # One finetune() call trains both: the scratch model copies the init's architecture and rule.
    res = finetune(sub, init, models["hdfs"], run_dir / "runs", cfg.train_config(),
                   metrics_dir=run_dir / "diagnostics", name="openstack", compare_scratch=True)
    publish(run_dir / "runs" / "scratch" / "best", models["scratch"])
    train_s = time.time() - t0
    rows = []
    for init_name, key in zip(INITS, ("finetuned", "scratch")):
        c = cfg.calibration
        calibrate(models[init_name], sub, percentile=c.percentile, methods=c.methods,
                  unseen_rate_max=c.unseen_rate_max, topk=c.topk, device=cfg.device, instability=c.instability)
        clean = evaluate(models[init_name], sub, "learning_curve", instability=0.0, seed=cfg.eval_seed,
                         device=cfg.device, write=False)
        perts = [evaluate(models[init_name], sub, "learning_curve", instability=cfg.instability,
                          seed=cfg.eval_seed + k, device=cfg.device, write=False) for k in range(cfg.eval_seeds)]
        by_seed = [_metrics(p) for p in perts]
        rows.append({
            "fraction": fraction, "init": init_name, "seed": cfg.seed, "train_sessions": len(keep),
            "train_windows": load_bundle(models[init_name]).manifest["train_windows"],
            "best_val_loss": float(res[key]["best_val_loss"]), "samples": int(res[key]["samples"]),
            "train_seconds": float(res[key]["seconds"]), "clean": _metrics(clean),
            "perturbed": {k: _mean([m[k] for m in by_seed]) for k in METRICS}, "perturbed_by_seed": by_seed,
            "best_baseline": {"clean": _best_baseline([clean]), "perturbed": _best_baseline(perts)},
            "sequence_model_f1": {"clean": _sequence_part([clean]), "perturbed": _sequence_part(perts)},
            "model_version": clean["model_version"],
        })
    rows[0]["fraction_seconds"] = rows[1]["fraction_seconds"] = time.time() - t0
    rows[0]["both_train_seconds"] = rows[1]["both_train_seconds"] = train_s
    return rows


def aggregate(reps: Sequence[dict]) -> dict:
    """One row from the replicates of a (fraction, init): means of every figure; the replicates kept."""
    def mean_block(key: str) -> dict:
        return {k: _mean([r[key][k] for r in reps]) for k in reps[0][key]}

    def baseline(block: str) -> dict | None:
        bs = [r["best_baseline"][block] for r in reps]
        if any(b is None for b in bs):
            return None
        return {"name": "/".join(sorted({b["name"] for b in bs})), "f1": _mean([b["f1"] for b in bs])}

    first = reps[0]
    return {"fraction": first["fraction"], "init": first["init"], "seeds": [r["seed"] for r in reps],
            "train_sessions": first["train_sessions"], "samples": first["samples"],
            "best_val_loss": _mean([r["best_val_loss"] for r in reps]), "clean": mean_block("clean"),
            "perturbed": mean_block("perturbed"), "sequence_model_f1": mean_block("sequence_model_f1"),
            "best_baseline": {"clean": baseline("clean"), "perturbed": baseline("perturbed")},
            "train_seconds": sum(r["train_seconds"] for r in reps), "replicates": list(reps)}


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


def learning_curve(data_dir: str | Path, init: str | Path, out: str | Path, work: str | Path,
                   cfg: CurveConfig = CurveConfig()) -> dict:
    data_dir, init, out, work = Path(data_dir), Path(init), Path(out), Path(work)
    t0 = time.time()
    reps: list[dict] = []
    for k in range(cfg.replicates):
        rcfg = replace(cfg, seed=cfg.seed + k)
        for f in sorted(cfg.fractions):
            reps += run_fraction(data_dir, init, work / f"seed_{rcfg.seed}", f, rcfg)
    rows = [aggregate([r for r in reps if (r["fraction"], r["init"]) == (f, i)])
            for f in sorted(cfg.fractions) for i in INITS]
    sentence, comps = verdict(rows, cfg.instability)
    report = {"dataset": "openstack", "config": asdict(cfg), "init": str(init),
              "init_sha256": load_bundle(init).weights_sha256, "train_sha256": sha256_file(data_dir / "train.parquet"),
              "git_commit": git_commit(), "rows": rows, "comparisons": comps, "verdict": sentence,
              "tolerances": {"f1": F1_TOL, "val_loss": LOSS_TOL}, "seconds": time.time() - t0}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "learning_curve.json", report)
    (out / "learning_curve.md").write_text(markdown(report))
    plot(report, out / "learning_curve.png")
    return report
