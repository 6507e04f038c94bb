"""`logad train` end to end: raw lines -> calibrated bundle, wall time per step, with a same-run baseline.

Default input: 100,000 lines of the bundled HDFS sample repeated with new block ids per copy
(bench/_common.hdfs_lines; copy k's blocks are the sample's with k prefixed, so the copies' labels
are the sample's labels), trained from scratch with `logad train`'s defaults. `--logs/--format/--labels`
run it on any logs instead. Baseline, same run: plain Drain3 mining of the same messages (what any
template-based tool pays before it learns anything), so the figure can be read on another machine.

    python bench/train_bundle.py [--lines 100000] [--logs PATH --format F.toml [--labels CSV]]
Ends with `RESULT train_bundle_s=... lines=... bar_s=600 met=... drain3_mining_s=... ratio_vs_drain3=...`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import hdfs_lines, log  # noqa: E402

BAR_S = 600.0  # 100k lines -> bundle within 10 minutes on 2 CPU cores


def hdfs_input(n: int, d: Path) -> tuple[list[Path], Path]:
    """n lines of the repeated sample as one gzip file, and the labels of every copy's blocks."""
    lines = hdfs_lines(n)
    logs = d / "hdfs_repeated.log.gz"
    with gzip.open(logs, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    base = {}
    with open(ROOT / "data/hdfs/HDFS_head20k_anomaly_label.csv", newline="") as f:
        for r in csv.DictReader(f):
            base[r["BlockId"]] = r["Label"]
    labels = d / "labels.csv"
    copies = n // 16252 + 1
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["BlockId", "Label"])
        for blk, lab in base.items():
            w.writerow([blk, lab])
            sign, digits = ("-", blk[5:]) if blk.startswith("blk_-") else ("", blk[4:])
            for k in range(1, copies):
                w.writerow([f"blk_{sign}{k:04d}{digits}", lab])
    return [logs], labels


def drain3_baseline(paths: list[Path], fmt_path: Path) -> float:
    """Seconds for plain Drain3 (default settings) to mine the messages of the same input."""
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    from logad.format_files import load_format
    from logad.readers import iter_file_records
    from logad.records import LogRecord

    fmt = load_format(fmt_path)
    t0 = time.perf_counter()
    cfg = TemplateMinerConfig()
    cfg.masking_instructions = []
    miner = TemplateMiner(persistence_handler=None, config=cfg)
    for _, _, rec in iter_file_records(paths, fmt):
        if isinstance(rec, LogRecord):
            miner.add_log_message(rec.content)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100_000, help="lines of the repeated HDFS sample")
    ap.add_argument("--logs", type=Path, nargs="*", help="run on these logs instead (files or folders)")
    ap.add_argument("--format", type=Path, default=ROOT / "formats/examples/hdfs.toml")
    ap.add_argument("--labels", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    from logad.format_files import load_format
    from logad.parse import ParseStats
    from logad.readers import iter_file_records
    from training.train import train_bundle

    work = Path(tempfile.mkdtemp(prefix="logad-bench-train."))
    try:
        if args.logs:
            paths, labels = list(args.logs), args.labels
        else:
            paths, labels = hdfs_input(args.lines, work)
        stats = ParseStats()
        for _ in iter_file_records(paths, load_format(args.format), stats):
            pass
        log(f"input: {stats.lines:,} lines ({', '.join(str(p) for p in paths)})")
        base = drain3_baseline(paths, args.format)
        log(f"baseline: plain Drain3 mining of the same messages {base:.1f} s")
        t0 = time.perf_counter()
        report = train_bundle(args.format, paths, work / "model", labels=labels, progress=False)
        total = time.perf_counter() - t0
        for k, v in report["seconds"].items():
            log(f"  {k:<12} {v:>7.1f} s")
        m = report["test"]["model"]
        log(f"test split: precision {m['precision']:.3f} recall {m['recall']:.3f} F1 {m['f1']:.3f} "
            f"({report['test']['sessions']} sessions, {report['test']['anomaly']} anomalous); "
            f"{report['training']['samples']:,} training windows")
        print(f"RESULT train_bundle_s={total:.1f} lines={stats.lines} bar_s={BAR_S:.0f} "
              f"met={int(total <= BAR_S)} drain3_mining_s={base:.1f} "
              f"ratio_vs_drain3={total / max(base, 1e-9):.1f} train_s={report['seconds']['train_s']} "
              f"calibrate_s={report['seconds']['calibrate_s']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
