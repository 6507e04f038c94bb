"""One short run of the scoring path on the accelerator when there is one, on the CPU otherwise.

    distinct windows: the bundled HDFS sample's, then perturbed copies of them (r = 0.05)
    --Detector.score_windows (score cache off)--> windows/s by batch size on the device `auto` picks
    (CUDA with bf16 autocast when present), the whole scoring path and the transformer alone (after a
    warm-up pass per batch size, best of --repeat), then the same windows on the CPU in fp32:
    decisions must agree, the model's scores within bf16's precision and the model-free scores equal.

It exercises what a GPU scorer runs (`logad scorer` with scorer.device=auto|cuda) whenever a GPU is
there, and falls back to the CPU so the script itself is tested without one
(tests/test_gpu_check.py). Never a test dependency on a GPU.

    python bench/gpu_check.py [--lines 16252] [--batches 1,64,256,1024] [--windows 8192] [--repeat 3]
Ends with `RESULT device=... windows=... windows_per_s_b<B>=... model_windows_per_s_b<B>=...
decisions_agree=... max_rel_score_diff=... topk_miss_differ=... model_free_equal=...`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import MODEL, hdfs_lines, log  # noqa: E402


MODEL_FREE = ("unseen_rate", "count_l1", "count_excess", "count_tail", "edit_tail", "block_run", "edit_ops")


def windows_of(n_lines: int) -> list:
    from logad.config import SessionConfig
    from logad.detect_files import session_rules, windows_from_lines
    from logad.detector import Detector
    from logad.format_files import load_format
    from logad.parse import ParseStats
    from logad.session_rules import Sessionizer

    det = Detector.load(MODEL, "cpu")
    fmt = load_format("hdfs")
    return list(windows_from_lines(hdfs_lines(n_lines), fmt, det,
                                   Sessionizer(fmt.name, session_rules(det, fmt, SessionConfig())), ParseStats()))


def distinct_windows(base: list, n: int, rate: float = 0.05, max_copies: int = 1000) -> list:
    """Up to n windows, no two alike: the sample's distinct windows, then perturbed copies of them
    (each event dropped, duplicated or swapped at `rate`) that are new. Distinct, so the in-call
    de-duplication cannot stand in for the model."""
    from _scorer_cost import diverse

    out: dict[tuple, object] = {}
    for c in range(-1, max_copies):
        for w in base if c < 0 else diverse(base, rate, seed=c):
            out.setdefault((w.ids, w.n_context), w)
            if len(out) >= n:
                return list(out.values())
    return list(out.values())


def run(n_lines: int, batches: list[int], device: str = "auto", model: Path = MODEL, n_windows: int = 8192,
        repeat: int = 3) -> dict:
    import torch

    from logad.detector import Detector
    from logad.model import pick_device

    dev = pick_device(device)
    windows = distinct_windows(windows_of(n_lines), n_windows)
    out: dict = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
                 "bf16": dev.type == "cuda", "windows": len(windows)}
    det = Detector.load(model, str(dev))

    def timed(fn) -> float:
        """Best of `repeat` wall times of fn() after one untimed call (CUDA context, kernels and
        cuBLAS plans for these shapes), with the device synchronised."""
        fn()
        best = float("inf")
        for _ in range(repeat):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    for b in batches:
        det.batch_size = b
        ws = windows[: min(len(windows), max(4 * b, 256))]
        pairs = [[(w.ids, w.n_context) for w in ws[a:a + b]] for a in range(0, len(ws), b)]

        def model_only() -> None:  # the transformer alone (what the device accelerates)
            with torch.inference_mode():
                for p in pairs:
                    det.scorer._log_probs(p)

        rate = len(ws) / timed(lambda: det.score_windows(ws))
        model_rate = len(ws) / timed(model_only)
        out[f"windows_per_s_b{b}"] = round(rate)
        out[f"model_windows_per_s_b{b}"] = round(model_rate)
        log(f"{dev.type:>4} batch {b:>5}: {rate:12,.0f} windows/s scored, {model_rate:12,.0f} through the model "
            f"({len(ws)} windows)")
    det.batch_size = 256
    here = det.score_windows(windows)
    ref = Detector.load(model, "cpu").score_windows(windows) if dev.type != "cpu" else here
    agree = sum(a.is_anomaly == b.is_anomaly for a, b in zip(here, ref)) / max(1, len(ref))
    # The model's continuous scores differ by bf16's rounding: relative, over values that are not
    # rounding noise themselves (a mean NLL of 1e-4 nats is 100 % off at 1e-4). The top-k misses are
    # counts of ranks, which a rounding can move across k. The count and alignment scores do not go
    # through the model and must be equal.
    worst, moved, equal = 0.0, 0, True
    for a, b in zip(here, ref):
        for k in ("mean_nll", "max_nll", "ppl"):
            v, w = b.scores[k], a.scores[k]
            if abs(v) >= 0.01 and abs(v) != float("inf"):
                worst = max(worst, abs(w - v) / abs(v))
        moved += a.scores["topk_miss"] != b.scores["topk_miss"]
        equal &= all(a.scores[k] == b.scores[k] for k in MODEL_FREE)
    out["decisions_agree"] = round(agree, 4)
    out["max_rel_score_diff"] = round(worst, 4)
    out["topk_miss_differ"] = round(moved / max(1, len(ref)), 4)
    out["model_free_equal"] = equal
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=16252)
    ap.add_argument("--batches", default="1,64,256,1024")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--windows", type=int, default=8192, help="distinct windows scored (the sample's, then "
                    "perturbed copies)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per batch size, best kept")
    args = ap.parse_args()
    res = run(args.lines, [int(b) for b in args.batches.split(",")], args.device, n_windows=args.windows,
              repeat=args.repeat)
    if not res["gpu"]:
        log("no CUDA device: measured on the CPU (fp32)")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items() if k != "gpu"), flush=True)


if __name__ == "__main__":
    main()
