"""One short run of the scoring path on the accelerator when there is one, on the CPU otherwise.

    windows of the bundled HDFS sample --Detector.score_windows (score cache off)--> windows/s by
    batch size on the device `auto` picks (CUDA with bf16 autocast when present), then the same
    windows on the CPU in fp32: decisions must agree, and the scores within bf16's precision.

It exercises what a GPU scorer runs (`logad scorer` with scorer.device=auto|cuda) whenever a GPU is
there, and falls back to the CPU so the script itself is tested without one
(tests/test_gpu_check.py). Never a test dependency on a GPU.

    python bench/gpu_check.py [--lines 16252] [--batches 1,64,256,1024]
Ends with `RESULT device=... windows_per_s_b<B>=... decisions_agree=... max_rel_score_diff=...`.
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


def windows_of(n_lines: int) -> list:
    from logad.config import SessionConfig
    from logad.detect_files import session_rules, windows_from_lines
    from logad.detector import Detector
    from logad.formats import load_format
    from logad.parse import ParseStats
    from logad.session_rules import Sessionizer

    det = Detector.load(MODEL, "cpu")
    fmt = load_format("hdfs")
    return list(windows_from_lines(hdfs_lines(n_lines), fmt, det,
                                   Sessionizer(fmt.name, session_rules(det, fmt, SessionConfig())), ParseStats()))


def run(n_lines: int, batches: list[int], device: str = "auto", model: Path = MODEL) -> dict:
    import torch

    from logad.detector import Detector
    from logad.model import pick_device

    dev = pick_device(device)
    windows = windows_of(n_lines)
    out: dict = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
                 "bf16": dev.type == "cuda", "windows": len(windows)}
    det = Detector.load(model, str(dev))
    det.score_windows(windows[:64])  # warm-up (CUDA context, kernels)
    for b in batches:
        det.batch_size = b
        ws = windows[: min(len(windows), max(64, 30 * b))]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        det.score_windows(ws)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rate = len(ws) / (time.perf_counter() - t)
        out[f"windows_per_s_b{b}"] = round(rate)
        log(f"{dev.type:>4} batch {b:>5}: {rate:12,.0f} windows/s ({len(ws)} windows)")
    det.batch_size = 256
    here = det.score_windows(windows)
    ref = Detector.load(model, "cpu").score_windows(windows) if dev.type != "cpu" else here
    agree = sum(a.is_anomaly == b.is_anomaly for a, b in zip(here, ref)) / max(1, len(ref))
    worst = 0.0
    for a, b in zip(here, ref):
        for k, v in b.scores.items():
            w = a.scores.get(k)
            if w is not None and abs(v) > 1e-6 and abs(v) != float("inf"):
                worst = max(worst, abs(w - v) / abs(v))
    out["decisions_agree"] = round(agree, 4)
    out["max_rel_score_diff"] = round(worst, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=16252)
    ap.add_argument("--batches", default="1,64,256,1024")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = ap.parse_args()
    res = run(args.lines, [int(b) for b in args.batches.split(",")], args.device)
    if not res["gpu"]:
        log("no CUDA device: measured on the CPU (fp32)")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items() if k != "gpu"), flush=True)


if __name__ == "__main__":
    main()
