"""`logad robustness`: the instability benchmark (LogRobust-style) for one model, in one command.

For each R in the grid every test session is perturbed (each event with probability R dropped,
duplicated or swapped with its successor; labels kept; several seeds), then the model and the
baselines are scored with the same shipped thresholds at every R (the detector is never told R).
Also reports the cost of scoring a window. Reports P/R/F1 and F1 at HDFS's real prevalence (2.93%) as
JSON, a table and a plot under artifacts/metrics/<name>/.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from logad.artifacts import write_json  # noqa: E402
from logad.detector import Detector  # noqa: E402
from training.data import load_split  # noqa: E402
from training.evaluate import FittedBaselines, evaluate  # noqa: E402


class _NoBaselines:
    """Stands in for the baselines where only the model's row is wanted."""

    def metrics(self, test) -> dict:
        return {}


RATES = (0.0, 0.02, 0.05, 0.10)
SEEDS = 3  # perturbation seeds per rate (seed, seed + 1, ...): test seeds, never used for choices
KEYS = ("precision", "recall", "f1", "fpr", "f1_at_hdfs_prevalence", "pr_auc")


def _cost_per_window(model_dir: str | Path, data_dir: str | Path, device: str, n: int = 2000) -> dict:
    """Scoring cost of the shipped detector: microseconds per window on the test split's first n
    sessions (clean; no cache), in this process's torch threads."""
    det = Detector.load(model_dir, device)
    rows = load_split(data_dir, "test")[:n]
    windows = [w for r in rows for w in det.session_windows(r.session_id, r.ids)]
    det.score_windows(windows[:64])  # warm-up
    t = time.perf_counter()
    det.score_windows(windows)
    dt = time.perf_counter() - t
    return {"windows": len(windows), "us_per_window": 1e6 * dt / max(1, len(windows)),
            "torch_threads": torch.get_num_threads()}


def robustness(model_dir: str | Path, data_dir: str | Path, name: str, seed: int = 0,
               rates: tuple[float, ...] = RATES, metrics_dir: str | Path | None = None, device: str = "auto",
               seeds: int = SEEDS) -> dict:
    """Rows: the shipped (adaptive) detector; "fixed tolerance": the same thresholds pinned at the
    sealed R (no online estimate); its parts alone; the baselines (DeepLog, PCA and Invariants Mining
    with their papers' rules beside the trivial ones). Each metric is the mean over `seeds`
    perturbation seeds, with its min and max."""
    splits = {s: load_split(data_dir, s) for s in ("train", "val")}
    det = Detector.load(model_dir, device)
    th = det.thresholds.to_dict()  # type: ignore[union-attr]
    fitted = FittedBaselines(splits["train"], splits["val"], det.bundle.model.cfg.vocab_size, th["percentile"],
                             paper=True)
    per: dict[tuple[float, str], list[dict]] = {}
    estimates = []
    for r in rates:
        for sd in range(seed, seed + (seeds if r > 0 else 1)):  # R = 0 perturbs nothing: one run
            res = evaluate(model_dir, data_dir, name, instability=r, seed=sd, device=device, write=False,
                           baselines=fitted)
            fixed = evaluate(model_dir, data_dir, name, instability=r, seed=sd, device=device, write=False,
                             baselines=_NoBaselines(), adapt=False)["model"]
            estimates.append({"R": r, "seed": sd, **{src: e["instability"] for src, e in res["instability_estimate"].items()}})
            parts = [(f"model: {k} only", m) for k, m in res["components"].items()]
            for d, m in [("model", res["model"]), ("model: fixed tolerance", fixed)] + parts + list(res["baselines"].items()):
                per.setdefault((r, d), []).append(m)
    rows = []
    for (r, d), ms in per.items():
        row = {"R": r, "detector": d, "seeds": len(ms)}
        for k in KEYS:
            v = [m[k] for m in ms]
            row.update({k: float(np.mean(v)), f"{k}_min": float(np.min(v)), f"{k}_max": float(np.max(v))})
        rows.append(row)
    out = Path(metrics_dir or Path("artifacts/metrics") / name)
    out.mkdir(parents=True, exist_ok=True)
    cal = res["calibration_instability"]
    report = {"dataset": name, "seed": seed, "seeds": list(range(seed, seed + seeds)), "rates": list(rates),
              "rows": rows, "calibration_instability": cal, "instability_estimates": estimates,
              "cost": _cost_per_window(model_dir, data_dir, device),
              "note": ("perturbed test sessions (seeds above; calibration never uses test seeds or sessions); "
                       "metrics are means over the seeds (_min/_max beside them); "
                       "'model' estimates the instability online and moves between the calibrated levels; "
                       f"'model: fixed tolerance' pins it at the sealed R={cal}; "
                       "'model: X only' rows are the detector's parts alone, each with the unseen-template rule; "
                       "deeplog / pca / invariants use their papers' decision rules")}
    write_json(out / "instability.json", report)
    plot_instability(out / "instability.png", name, rows)
    return report


def plot_instability(path: Path, name: str, rows: list[dict]) -> None:
    """F1 against the instability rate: the detector bold black, its variants and parts dashed,
    the baselines dotted, each line its own colour and marker (a legend outside the axes)."""
    dets = list(dict.fromkeys(r["detector"] for r in rows))
    cmap = plt.get_cmap("tab20")
    markers = "osD^vP*Xhp<>"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    for k, det in enumerate(dets):
        pts = sorted((r for r in rows if r["detector"] == det), key=lambda r: r["R"])
        if det == "model":
            style = {"color": "black", "lw": 2.6, "ls": "-", "marker": "o", "zorder": 5, "label": "logad detector"}
        else:
            style = {"color": cmap(k % 20), "lw": 1.4, "ls": "--" if det.startswith("model") else ":",
                     "marker": markers[k % len(markers)], "label": det.replace("model: ", "detector: ")}
        for ax, key in ((axes[0], "f1"), (axes[1], "f1_at_hdfs_prevalence")):
            ax.plot([p["R"] for p in pts], [p[key] for p in pts], ms=5, **style)
    axes[0].set(xlabel="instability r (share of lines dropped, duplicated or swapped)", ylabel="F1 on the test split",
                title=f"{name}: F1 as the logs get less stable")
    axes[1].set(xlabel="instability r", ylabel="F1 at 2.93% anomalies (HDFS's share)",
                title="the same, re-weighted to 2.93% anomalies")
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
