"""`logad robustness`: the instability benchmark (LogRobust-style) for one model, in one command.

For each R in the grid every test session is perturbed (each event with probability R dropped,
duplicated or swapped with its successor; labels kept), then the model and the baselines are scored
with their clean-validation thresholds. Reports P/R/F1 and F1 at HDFS's real prevalence (2.93%) as
JSON, a table and a plot under artifacts/metrics/<name>/.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from logad.artifacts import write_json  # noqa: E402
from training.evaluate import evaluate  # noqa: E402

RATES = (0.0, 0.01, 0.02, 0.05, 0.10)


def robustness(model_dir: str | Path, data_dir: str | Path, name: str, seed: int = 0,
               rates: tuple[float, ...] = RATES, metrics_dir: str | Path | None = None, device: str = "auto") -> dict:
    rows = []
    for r in rates:
        res = evaluate(model_dir, data_dir, name, instability=r, seed=seed, device=device, write=False)
        parts = [(f"model: {k} only", m) for k, m in res["components"].items()]
        for det, m in [("model", res["model"])] + parts + list(res["baselines"].items()):
            rows.append({"R": r, "detector": det, **{k: m[k] for k in ("precision", "recall", "f1", "fpr",
                                                                       "f1_at_hdfs_prevalence", "pr_auc")}})
    out = Path(metrics_dir or Path("artifacts/metrics") / name)
    out.mkdir(parents=True, exist_ok=True)
    cal = res["calibration_instability"]
    report = {"dataset": name, "seed": seed, "rates": list(rates), "rows": rows,
              "calibration_instability": cal,
              "note": ("perturbed test sessions (seed above; calibration never uses test seeds or sessions); "
                       + (f"thresholds calibrated on clean + perturbed (R={cal}) normal validation sessions" if cal
                          else "thresholds calibrated on clean normal validation sessions")
                       + "; 'model: X only' rows are the detector's parts alone, each with the unseen-template rule")}
    write_json(out / "instability.json", report)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for det in dict.fromkeys(r["detector"] for r in rows):
        pts = [r for r in rows if r["detector"] == det]
        axes[0].plot([p["R"] for p in pts], [p["f1"] for p in pts], "o-", label=det)
        axes[1].plot([p["R"] for p in pts], [p["f1_at_hdfs_prevalence"] for p in pts], "o-", label=det)
    axes[0].set(xlabel="instability R", ylabel="F1 (test split prevalence)", title=f"{name}: F1 under instability")
    axes[1].set(xlabel="instability R", ylabel="F1 at 2.93% anomalies", title="F1 at HDFS prevalence")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "instability.png", dpi=100)
    plt.close(fig)
    return report
