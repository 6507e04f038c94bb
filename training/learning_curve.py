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

Writes <out>/learning_curve.{json,md,png} (training.curve_report reads the rows); run folders (subset datasets, checkpoints, calibrated
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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from logad.artifacts import git_commit, load_bundle, read_json, sha256_file, write_json
from logad.errors import ArtifactError, ConfigError
from training.calibrate import calibrate
from training.curve_report import F1_TOL, INITS, LOSS_TOL, markdown, plot, verdict
from training.data import SessionRow, load_split
from training.evaluate import evaluate
from training.loop import TrainConfig
from training.pretrain import finetune, publish

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
