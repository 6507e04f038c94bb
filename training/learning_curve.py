"""`logad learning-curve`: does HDFS pretraining pay when the target system has little data?

For each fraction of the OpenStack normal training sessions (1%, 10%, 100% by default) one model is
fine-tuned from the HDFS checkpoint and one is trained from scratch (same architecture, same seed,
same budget in samples, `training.pretrain.finetune`). Each is calibrated on the full normal
validation sessions (validation is not training data, so it is never subset) and evaluated on the
test split, clean and at instability R = 0.02 with a fixed seed.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from logad.artifacts import git_commit, load_bundle, sha256_file, write_json  # noqa: E402
from logad.errors import ConfigError  # noqa: E402
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
class CurveConfig:
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # of the normal training sessions, each in (0, 1]
    budget_samples: int = 25_000  # training windows per run, the same for all runs (~1 min each on 1 core)
    seed: int = 1337  # subset draw, data order, init of new rows and of scratch models
    instability: float = 0.02  # R of the perturbed test evaluation
    eval_seed: int = 0  # perturbation seed of the test split (fixed, never tuned on)
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
        if self.min_sessions < 1 or self.evals < 1:
            raise ConfigError("min_sessions and evals must be >= 1")
        if not 0.0 <= self.instability < 1.0:
            raise ConfigError(f"instability {self.instability} is outside [0, 1)")

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
        calibrate(models[init_name], sub, device=cfg.device)
        clean = evaluate(models[init_name], sub, "learning_curve", instability=0.0, seed=cfg.eval_seed,
                         device=cfg.device, write=False)
        pert = evaluate(models[init_name], sub, "learning_curve", instability=cfg.instability, seed=cfg.eval_seed,
                        device=cfg.device, write=False)
        rows.append({
            "fraction": fraction, "init": init_name, "train_sessions": len(keep),
            "train_windows": load_bundle(models[init_name]).manifest["train_windows"],
            "best_val_loss": float(res[key]["best_val_loss"]), "samples": int(res[key]["samples"]),
            "train_seconds": float(res[key]["seconds"]), "clean": _metrics(clean), "perturbed": _metrics(pert),
            "model_version": clean["model_version"],
        })
    rows[0]["fraction_seconds"] = rows[1]["fraction_seconds"] = time.time() - t0
    rows[0]["both_train_seconds"] = rows[1]["both_train_seconds"] = train_s
    return rows


def compare(hdfs: dict, scratch: dict) -> dict:
    """Per-metric differences (HDFS init minus scratch, sign so that > 0 favours pretraining) and the
    outcome: helps / hurts / mixed / none, by the tolerances above."""
    diffs = {"f1_clean": hdfs["clean"]["f1"] - scratch["clean"]["f1"],
             "f1_perturbed": hdfs["perturbed"]["f1"] - scratch["perturbed"]["f1"],
             "val_loss": scratch["best_val_loss"] - hdfs["best_val_loss"]}
    tol = {"f1_clean": F1_TOL, "f1_perturbed": F1_TOL, "val_loss": LOSS_TOL}
    better = [k for k, d in diffs.items() if d > tol[k]]
    worse = [k for k, d in diffs.items() if d < -tol[k]]
    outcome = "mixed" if better and worse else "helps" if better else "hurts" if worse else "none"
    return {"diffs": diffs, "better": better, "worse": worse, "outcome": outcome}


PHRASE = {"helps": "pretraining on HDFS pays", "hurts": "pretraining on HDFS hurts",
          "mixed": "the evidence is mixed", "none": "pretraining makes no meaningful difference"}


def verdict(rows: Sequence[dict], instability: float) -> tuple[str, dict]:
    """One sentence from the rows (not written in advance), and the per-fraction comparisons."""
    by = {(r["fraction"], r["init"]): r for r in rows}
    fractions = sorted({r["fraction"] for r in rows})
    comps, parts = {}, []
    for f in fractions:
        h, s = by[(f, "hdfs")], by[(f, "scratch")]
        c = compare(h, s)
        comps[f"{f:g}"] = c
        detail = (f"F1 at R={instability:g} {h['perturbed']['f1']:.3f} vs {s['perturbed']['f1']:.3f}, "
                  f"clean {h['clean']['f1']:.3f} vs {s['clean']['f1']:.3f}, "
                  f"val loss {h['best_val_loss']:.4f} vs {s['best_val_loss']:.4f}")
        if c["outcome"] == "mixed":
            detail += f"; better: {', '.join(c['better'])}, worse: {', '.join(c['worse'])}"
        parts.append(f"at {f:.0%} ({h['train_sessions']} sessions) {PHRASE[c['outcome']]} ({detail})")
    outcomes = {c["outcome"] for c in comps.values()}
    head = ("Pretraining on HDFS pays at every fraction" if outcomes == {"helps"} else
            "Pretraining on HDFS makes no meaningful difference at any fraction" if outcomes == {"none"} else
            "Pretraining on HDFS hurts at every fraction" if outcomes == {"hurts"} else
            "Whether pretraining on HDFS pays depends on the amount of target data")
    sentence = (f"{head} (HDFS init vs scratch, same budget; differences within {F1_TOL} F1 and "
                f"{LOSS_TOL} val loss count as none): " + "; ".join(parts) + ".")
    return sentence, comps


def markdown(report: dict) -> str:
    r_ = report["config"]["instability"]
    lines = [
        "# OpenStack learning curve: HDFS pretraining vs from scratch",
        "",
        f"Budget {report['config']['budget_samples']:,} training windows per run (the same for all runs, no early "
        f"stopping), seed {report['config']['seed']}, thresholds calibrated on the full normal validation split, "
        f"test split clean and perturbed at R = {r_:g} (seed {report['config']['eval_seed']}). "
        f"Commit {report['git_commit'][:12]}, {report['seconds']:.0f} s.",
        "",
        f"| fraction | train sessions | init | best val loss | F1 clean | F1 R={r_:g} | F1 @2.93% clean | "
        f"F1 @2.93% R={r_:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['fraction']:.0%} | {r['train_sessions']} | {r['init']} | {r['best_val_loss']:.4f} | "
                     f"{r['clean']['f1']:.3f} | {r['perturbed']['f1']:.3f} | "
                     f"{r['clean']['f1_at_hdfs_prevalence']:.3f} | {r['perturbed']['f1_at_hdfs_prevalence']:.3f} |")
    lines += ["", f"**Verdict:** {report['verdict']}", "",
              "One seed per run: treat differences near the tolerance as noise. The count-vector reference and "
              "the baselines also see only the subset's normal sessions.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    rows = report["rows"]
    r_ = report["config"]["instability"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for init, style in zip(INITS, ("o-", "s--")):
        pts = sorted((r for r in rows if r["init"] == init), key=lambda r: r["fraction"])
        x = [p["train_sessions"] for p in pts]
        axes[0].plot(x, [p["clean"]["f1"] for p in pts], style, label=f"{init}: clean")
        axes[0].plot(x, [p["perturbed"]["f1"] for p in pts], style, alpha=0.6, label=f"{init}: R={r_:g}")
        axes[1].plot(x, [p["best_val_loss"] for p in pts], style, label=init)
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
    rows: list[dict] = []
    for f in sorted(cfg.fractions):
        rows += run_fraction(data_dir, init, work, f, cfg)
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
