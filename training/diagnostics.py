"""Training diagnostics: loss curves, template coverage, positional entropy, top-k accuracy.

Written as JSON plus PNG plots under artifacts/metrics/<dataset>/.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from logad.artifacts import write_json  # noqa: E402
from logad.model import IGNORE, NextTokenTransformer, autocast  # noqa: E402
from logad.scoring import collate  # noqa: E402
from training.data import SessionRow, examples  # noqa: E402
from training.loop import RunResult  # noqa: E402

TOPK = (1, 3, 5, 10)


def coverage(train: list[SessionRow], other: list[SessionRow], unk: int) -> dict:
    """Share of events (and sessions) in `other` whose template never occurs in train (or is UNK)."""
    seen = {i for r in train for i in r.ids} - {unk}
    events = [i for r in other for i in r.ids]
    unseen = sum(1 for i in events if i not in seen)
    return {"events": len(events), "unseen_events": unseen,
            "unseen_template_rate": unseen / len(events) if events else 0.0,
            "sessions_with_unseen": sum(any(i not in seen for i in r.ids) for r in other),
            "sessions": len(other)}


@torch.no_grad()
def positional(model: NextTokenTransformer, rows: list[SessionRow], rule, bos: int, pad: int,
               device: torch.device, batch_size: int = 256) -> dict:
    """Top-k accuracy and loss / perplexity / predictive entropy by position in the window."""
    model.eval()
    exs = examples(rows, rule, bos, label=0)
    T = rule.length
    nll_sum, ent_sum, cnt = torch.zeros(T), torch.zeros(T), torch.zeros(T)
    hits = {k: 0 for k in TOPK}
    total = 0
    for i in range(0, len(exs), batch_size):
        x, y = collate(exs[i:i + batch_size], pad)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            logits, _ = model(x)
        logp = F.log_softmax(logits.float(), -1)  # (B, T, V)
        mask = y != IGNORE  # (B, T)
        tgt = y.clamp(min=0)
        tl = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T)
        rank = (logp > tl.unsqueeze(-1)).sum(-1)  # (B, T)
        ent = -(logp.exp() * logp).sum(-1)  # (B, T)
        t = x.size(1)
        nll_sum[:t] += ((-tl) * mask).sum(0).cpu()
        ent_sum[:t] += (ent * mask).sum(0).cpu()
        cnt[:t] += mask.sum(0).cpu()
        total += int(mask.sum())
        for k in TOPK:
            hits[k] += int(((rank < k) & mask).sum())
    pos = [{"position": p, "n": int(cnt[p]), "loss": float(nll_sum[p] / cnt[p]),
            "perplexity": math.exp(float(nll_sum[p] / cnt[p])), "entropy": float(ent_sum[p] / cnt[p])}
           for p in range(T) if cnt[p] > 0]
    return {"windows": len(exs), "events": total,
            "topk_accuracy": {f"top{k}": hits[k] / total if total else 0.0 for k in TOPK},
            "loss": float(nll_sum.sum() / max(1, total)), "by_position": pos}


def write_diagnostics(out_dir: str | Path, name: str, model: NextTokenTransformer, splits: dict,
                      rule, vocab, device: torch.device, run: RunResult | None = None,
                      extra: dict | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"coverage": {s: coverage(splits["train"], splits[s], vocab.UNK) for s in ("val", "test")}}
    for s in ("val", "test"):
        report[s] = positional(model, splits[s], rule, vocab.BOS, vocab.PAD, device)
    if run is not None:
        report["history"] = run.history
        report["train_curve"] = run.train_curve
        report["samples"], report["seconds"], report["stopped_early"] = run.samples, run.seconds, run.stopped_early
        plot_loss(out / f"{name}_loss.png", name, run)
    plot_positional(out / f"{name}_positional.png", name, report)
    report.update(extra or {})
    write_json(out / f"{name}_diagnostics.json", report)
    return report


MIN_POSITION_EVENTS = 20  # a position's mean loss over fewer events is noise: drawn faint, not as a line


def _thousands(x: float, _pos: int) -> str:
    return f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def plot_loss(path: Path, name: str, run: RunResult) -> None:
    """Training (EMA) and validation loss against samples seen; ticks as 50k, 100k (no run-together digits)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["samples"] for r in run.train_curve], [r["loss"] for r in run.train_curve], label="train (moving average)")
    ax.plot([r["samples"] for r in run.history], [r["val_loss"] for r in run.history], "o-",
            label="validation (normal sessions)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set(xlabel="training windows seen", ylabel="next-template loss (nats, log scale)",
           title=f"{name}: loss while training")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_positional(path: Path, name: str, report: dict) -> None:
    """Loss and entropy by position in the window, over the number of events behind each point.

    Most sessions are shorter than a window, so late positions hold few events: the lower panel
    shows how many, and points over fewer than MIN_POSITION_EVENTS events are drawn as faint dots
    rather than joined into a line that would look like a trend."""
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    colors = {"val": "tab:blue", "test": "tab:green"}
    for s in ("val", "test"):
        bp = report[s]["by_position"]
        ok = [r for r in bp if r["n"] >= MIN_POSITION_EVENTS]
        few = [r for r in bp if r["n"] < MIN_POSITION_EVENTS]
        ax.plot([r["position"] for r in ok], [r["loss"] for r in ok], "-", color=colors[s], label=f"{s}: loss")
        ax.plot([r["position"] for r in ok], [r["entropy"] for r in ok], "--", color=colors[s],
                label=f"{s}: predictive entropy")
        if few:
            ax.plot([r["position"] for r in few], [r["loss"] for r in few], ".", color=colors[s], alpha=0.35)
        axn.bar([r["position"] + (0.2 if s == "test" else -0.2) for r in bp], [r["n"] for r in bp], width=0.4,
                color=colors[s], label=s)
    ax.set(ylabel="nats", title=f"{name}: loss and entropy by position in the window\n"
                                f"(faint dots: fewer than {MIN_POSITION_EVENTS} events at that position)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    axn.set(xlabel="position in window", ylabel="events", yscale="log")
    axn.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
