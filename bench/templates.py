"""Throughput of our parse + template path against plain Drain3 matching, same lines, same run.

    ours:   raw bytes line -> parse_line -> vocab.match(record.content)   (masking + cached matcher)
    drain3: record.content -> TemplateMiner.match(content, full_search_strategy="fallback"), with our
            masking rules given to Drain3 as its MaskingInstructions (its own masker applies them)

Both start cold on every repeat (fresh format, caches and miner state); best of --repeats is kept.
The Drain3 miner is trained on the same contents first (add_log_message) so that it has
templates to match. Usage:
    .venv/bin/python bench/templates.py [--file data/hdfs/HDFS_head20k.log.gz] [--repeats 5]
Ends with one line: RESULT templates_lines_per_s=... drain3_match_lines_per_s=... ratio=...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drain3 import TemplateMiner  # noqa: E402
from drain3.masking import MaskingInstruction  # noqa: E402
from drain3.template_miner_config import TemplateMinerConfig  # noqa: E402

from logad.formats import FORMATS, LogFormat  # noqa: E402
from logad.parse import open_lines, parse_line  # noqa: E402
from logad.records import LogRecord  # noqa: E402
from logad.templates import UNK, TemplateVocab  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "data/loghub_2k/HDFS/HDFS_templates.csv"


def drain3_miner(fmt: LogFormat) -> TemplateMiner:
    cfg = TemplateMinerConfig()
    cfg.drain_sim_th, cfg.drain_depth = fmt.drain_sim_th, fmt.drain_depth
    cfg.masking_instructions = [MaskingInstruction(r.pattern, r.placeholder[1:-1]) for r in fmt.masking]
    return TemplateMiner(persistence_handler=None, config=cfg)


def run_ours(lines: list[bytes], base: LogFormat) -> tuple[float, int]:
    fmt = dataclasses.replace(base)  # fresh masker and token cache: start cold
    vocab = TemplateVocab.from_reference(REFERENCE, fmt)
    unk = 0
    t0 = time.perf_counter()
    for raw in lines:
        rec = parse_line(raw, fmt)
        if type(rec) is LogRecord:
            unk += vocab.match(rec.content) == UNK
    return time.perf_counter() - t0, unk


def run_drain3(contents: list[str], fmt: LogFormat) -> tuple[float, int]:
    miner = drain3_miner(fmt)
    for c in contents:
        miner.add_log_message(c)
    misses = 0
    t0 = time.perf_counter()
    for c in contents:
        misses += miner.match(c, full_search_strategy="fallback") is None
    return time.perf_counter() - t0, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(ROOT / "data/hdfs/HDFS_head20k.log.gz"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    fmt = FORMATS["hdfs"]
    lines = list(open_lines(args.file))
    records = [r for r in (parse_line(x, fmt) for x in lines) if isinstance(r, LogRecord)]
    contents = [r.content for r in records]
    ours, d3 = [], []
    for _ in range(args.repeats):  # interleaved so both see the same machine state
        ours.append(run_ours(lines, fmt))
        d3.append(run_drain3(contents, fmt))
    t_ours, unk = min(ours)
    t_d3, misses = min(d3)
    ours_rate, d3_rate = len(lines) / t_ours, len(contents) / t_d3
    # "same masking": our masker vs Drain3's masker with the same rules, whitespace-normalised
    d3_masker = drain3_miner(fmt).masker
    same = sum(" ".join(d3_masker.mask(c).split()) == fmt.masker.mask(c) for c in contents)
    print(f"lines: {len(lines)} raw, {len(contents)} parsed ({args.file})")
    print(f"masked text identical to Drain3's masker with the same rules: {same}/{len(contents)} "
          "(the rest differ only by our list merge, e.g. '<BLK> <BLK>' -> '<BLK>')")
    print(f"ours   parse_line + vocab.match : {ours_rate:12,.0f} lines/s  (UNK {unk})")
    print(f"drain3 TemplateMiner.match      : {d3_rate:12,.0f} lines/s  (no match {misses})")
    print(f"ratio                           : {ours_rate / d3_rate:12.2f}")
    print(f"RESULT templates_lines_per_s={ours_rate:.0f} drain3_match_lines_per_s={d3_rate:.0f} "
          f"ratio={ours_rate / d3_rate:.2f}")


if __name__ == "__main__":
    main()
