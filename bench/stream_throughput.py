"""End-to-end throughput of the streaming detector on a real local Kafka, with same-run ceilings.

    lines: the bundled HDFS sample repeated to --lines (block ids rewritten per copy: new sessions,
           real traces) as 1 line per record, and to --lines-100lpr (default 10^6) as 100 lines per
           record. At 100 lines/record 200k lines are only 2,000 records and ~4-6 s, of which the
           tail (the last sessions' idle timeout, their sweep, scoring their windows) is a third;
           10^6 lines (10,000 records, ~20 s) measure the steady state the bar is about.
    e2e:   one `logad worker` process (+ one `logad scorer`, CPU) on fresh topics, started and idle
           (caught up) first; then every raw record is published in ONE Kafka transaction, so all
           of them become readable at the same instant t0 (the worker reads read_committed), and
           the clock stops at the last score record the scorer publishes (its Kafka timestamp)
           once every window is scored. lines / (t_last_score - t0). The time includes the final
           idle close: sessions.idle_timeout_s (--idle) after the last line, all sessions close.
    ceilings, same topic (1 line per record), same run: a bare aiokafka consumer (getmany) and a
           no-op Faust agent (bench/_faust_noop.py), records/s
    diverse: the 100 lines/record run again on lines perturbed at --diverse (each line dropped,
           duplicated or swapped with the next with that probability, seeded), so that windows differ
           between copies of the sample and the scorer's cache answers what a real stream would let
           it answer (printed beside the figure: cache_hit_rate)
    2, 3 workers: the same at 1 line per record with 2 and 3 worker processes (raw topic with one
           partition per worker, one per "host": copy k of the sample goes to partition k % workers);
           reported as ratios to the 1-worker run of the same invocation (same broker, same lines)

Usage: .venv/bin/python bench/stream_throughput.py [--lines 200000] [--lines-100lpr 1000000] [--idle 0.5]
       [--no-two-workers] [--no-three-workers] [--no-ceilings] [--per-record 1,100]
Ends with one line: RESULT e2e_lines_per_s_1lpr=... e2e_lines_per_s_100lpr=... faust_noop_records_per_s=...
aiokafka_records_per_s=... (+ the 2- and 3-worker figures, their ratios to 1 worker, ratios, and the 100 lines/record run's CPU per line of
worker, scorer and broker with the lines/s they would allow on 2 cores of their own). Bars on the 2-core dev box:
>= 20,000 lines/s at 1 line/record and >= 100,000 lines/s at 100 lines/record, per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from types import SimpleNamespace
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (MODEL, ROOT, Pipeline, broker, group, hdfs_lines, log, produce,  # noqa: E402
                     read_topic)

BAR_1LPR, BAR_100LPR = 20_000, 100_000


def perturb_lines(lines: list[bytes], rate: float, seed: int = 7) -> list[bytes]:
    """Each line dropped, duplicated or swapped with the next with probability `rate` (a third each):
    the instability of real logs, at the line level, so every copy of the sample differs."""
    import random

    rng = random.Random(seed)
    out: list[bytes] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0:  # dropped
                i += 1
                continue
            if op == 1:  # duplicated
                out += [line, line]
                i += 1
                continue
            if i + 1 < len(lines):  # swapped with the next
                out += [lines[i + 1], line]
                i += 2
                continue
        out.append(line)
        i += 1
    return out


def expected_windows(lines: list[bytes]) -> int:
    """Windows the stream must score: the offline pipeline's, on the same lines and rules."""
    from types import SimpleNamespace

    from logad.config import SessionConfig
    from logad.detect_files import windows_from_lines
    from logad.parse import ParseStats
    from logad.session_rules import Sessionizer
    from streams.session_processor import load_session_rules

    vocab, fmt, rules = load_session_rules(MODEL, None, SessionConfig())
    det = SimpleNamespace(bundle=SimpleNamespace(vocab=vocab, rule=rules.rule))
    return sum(1 for _ in windows_from_lines(lines, fmt, det, Sessionizer(fmt.name, rules), ParseStats()))


async def make_topic(bootstrap: str, topic: str) -> None:
    from logad.config import KafkaConfig
    from streams.kafka_clients import ensure_topics

    await ensure_topics(KafkaConfig(bootstrap_servers=bootstrap), {topic: 1})


def aiokafka_rate(bootstrap: str, topic: str, n: int) -> float:
    async def once() -> float:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from logad.config import KafkaConfig
        from streams.kafka_clients import consumer_kwargs

        c = AIOKafkaConsumer(**consumer_kwargs(KafkaConfig(bootstrap_servers=bootstrap), group_id=None))
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            got, t0 = 0, None
            while got < n:
                batch = await c.getmany(tp, timeout_ms=1000, max_records=2000)
                if t0 is None and batch:
                    t0 = time.perf_counter()
                got += sum(len(v) for v in batch.values())
            return n / (time.perf_counter() - t0)
        finally:
            await c.stop()

    return max(asyncio.run(once()) for _ in range(2))


def faust_noop_rate(bootstrap: str, topic: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}, "NOOP_BOOTSTRAP": bootstrap,
               "NOOP_TOPIC": topic, "NOOP_RECORDS": str(n), "NOOP_OUT": str(out), "NOOP_DATADIR": tmp}
        p = subprocess.run([sys.executable, str(ROOT / "bench/_faust_noop.py"), "worker", "-l", "warn"], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        if not out.exists():
            raise SystemExit(f"no-op Faust agent failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        records, seconds = out.read_text().split()
        return int(records) / float(seconds)


def run_e2e(bootstrap: str, lines: list[bytes], per_record: int, n_windows: int, idle: float,
            workers: int = 1) -> dict:
    """Start the pipeline, let it settle, publish everything in one transaction, wait until every
    window is scored; timings from the Kafka timestamps of what it wrote."""
    env = {"LOGAD_SESSIONS_IDLE_TIMEOUT_S": str(idle), "LOGAD_SESSIONS_SWEEP_EVERY_S": "0.1",
           **{k: v for k, v in os.environ.items() if k.startswith("LOGAD_") and k != "LOGAD_CONFIG"}}
    p = Pipeline(bootstrap, workers=workers, raw_partitions=workers, **env)
    try:
        ready = p.wait_ready()
        if workers == 1:
            values, parts = group(lines, per_record), 0
        else:  # copy k of the sample (16,252 lines) to partition k % workers, in order
            values, parts = [], []
            for k, i in enumerate(range(0, len(lines), 16_252)):
                chunk = group(lines[i:i + 16_252], per_record)
                values += chunk
                parts += [k % workers] * len(chunk)
        cpu0 = cpu_seconds(p)
        t_prod, t0 = asyncio.run(produce(bootstrap, p.raw, values, partition=parts, transactional=True))
        p.wait_scored(n_windows)
        cpu1 = cpu_seconds(p)
        from streams.codec import decode_scores, decode_windows

        scores = asyncio.run(read_topic(bootstrap, p.settings.topics.scores))  # bundles of scores
        events = asyncio.run(read_topic(bootstrap, p.settings.topics.events))
        windows = asyncio.run(read_topic(bootstrap, p.settings.topics.windows))  # bundles of windows
        from streams.topics import changelog_topic

        changelog = asyncio.run(read_topic(bootstrap, changelog_topic(p.id)))  # session state writes
        n_scores = sum(len(decode_scores(r.value)) for r in scores)
        n_windows_out = sum(len(decode_windows(r.value)) for r in windows)
        sm = p.scorer_metrics()
        if os.environ.get("BENCH_DEBUG"):
            import collections

            tl = collections.Counter((w.reason, round(r.timestamp / 1000.0 - t0, 1))
                                     for r in windows for w in decode_windows(r.value))
            log("windows by (reason, +s): " + ", ".join(f"{k[0]}@{k[1]}:{v}" for k, v in sorted(tl.items(), key=lambda kv: kv[0][1])))
            ts = collections.Counter(round(r.timestamp / 1000.0 - t0, 1) for r in scores)
            log("scores by +s: " + ", ".join(f"{k}:{v}" for k, v in sorted(ts.items())))
            ev = collections.Counter(round(r.timestamp / 1000.0 - t0, 1) for r in events)
            log("events records by +s: " + ", ".join(f"{k}:{v}" for k, v in sorted(ev.items())))
        t_end = max(r.timestamp for r in scores) / 1000.0
        t_ingested = max(r.timestamp for r in events) / 1000.0
        t_first_window = min(r.timestamp for r in windows) / 1000.0
        t_last_window = max(r.timestamp for r in windows) / 1000.0
        t_first_score = min(r.timestamp for r in scores) / 1000.0
        seconds = t_end - t0
        return {
            "lines": len(lines), "records": len(values), "per_record": per_record, "workers": workers,
            "windows": n_windows_out, "scores": n_scores, "expected_windows": n_windows,
            "window_records": len(windows), "score_records": len(scores), "changelog_records": len(changelog),
            "seconds": seconds, "lines_per_s": len(lines) / seconds, "ready_s": ready, "produce_s": t_prod,
            "ingested_s": t_ingested - t0, "first_window_s": t_first_window - t0,
            "last_window_s": t_last_window - t0, "first_score_s": t_first_score - t0,
            "events_records": len(events),
            "worker_cpu_s": cpu1["workers"] - cpu0["workers"], "scorer_cpu_s": cpu1["scorer"] - cpu0["scorer"],
            "broker_cpu_s": cpu1["broker"] - cpu0["broker"],
            "cache_hits": sm.get("logad_scorer_cache_hits_total", 0.0),
            "cache_misses": sm.get("logad_scorer_cache_misses_total", 0.0),
        }
    finally:
        p.stop()


def cpu_seconds(p: Pipeline) -> dict[str, float]:
    """CPU time (user + system) used so far by the worker processes and by the scorer: on a shared
    machine, lines per CPU-second is the figure to compare between runs."""
    import psutil

    def cpu(proc) -> float:
        try:
            t = psutil.Process(proc.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    from _common import BROKER

    broker = cpu(SimpleNamespace(proc=SimpleNamespace(pid=BROKER["pid"]))) if BROKER["pid"] else float("nan")
    return {"workers": sum(cpu(w) for w in p.workers), "scorer": cpu(p.scorer), "broker": broker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--idle", type=float, default=0.5, help="sessions.idle_timeout_s of the worker")
    ap.add_argument("--no-two-workers", action="store_true")
    ap.add_argument("--no-three-workers", action="store_true")
    ap.add_argument("--no-ceilings", action="store_true", help="(while profiling) skip the aiokafka / no-op Faust runs")
    ap.add_argument("--lines-100lpr", type=int, default=1_000_000, help="lines of the 100 lines/record run")
    ap.add_argument("--per-record", default="1,100", help="lines per record of the 1-worker runs")
    ap.add_argument("--diverse", type=float, default=0.02,
                    help="instability rate of the diverse 100 lines/record run (0: no such run)")
    args = ap.parse_args()
    inputs: dict[int, tuple[list[bytes], int]] = {}  # lines count -> (lines, windows offline)
    for n in sorted({args.lines, args.lines_100lpr}):
        t = time.perf_counter()
        lines = hdfs_lines(n)
        inputs[n] = (lines, expected_windows(lines))
        log(f"{len(lines):,} lines ({len(lines) / 16_252:.1f} copies of the HDFS sample), {inputs[n][1]:,} windows "
            f"offline ({time.perf_counter() - t:.1f} s)")
    lines, n_windows = inputs[args.lines]
    with broker() as boot:
        ceiling_topic = "bench.ceiling"
        aio = noop = float("nan")
        if not args.no_ceilings:
            asyncio.run(make_topic(boot, ceiling_topic))
            asyncio.run(produce(boot, ceiling_topic, lines))
            aio = aiokafka_rate(boot, ceiling_topic, len(lines))
            log(f"ceiling: bare aiokafka consumer     {aio:12,.0f} records/s")
            noop = faust_noop_rate(boot, ceiling_topic, len(lines))
            log(f"ceiling: no-op Faust agent          {noop:12,.0f} records/s")
        runs = {}
        for per_record in [int(x) for x in args.per_record.split(",")]:
            run_lines, run_windows = inputs[args.lines_100lpr if per_record >= 100 else args.lines]
            r = run_e2e(boot, run_lines, per_record, run_windows, args.idle)
            runs[per_record] = r
            log(f"e2e, 1 worker, {per_record:>3} line(s)/record: {r['lines_per_s']:10,.0f} lines/s "
                f"({r['lines']:,} lines, {r['records']:,} records in {r['seconds']:.2f} s; ingested at "
                f"+{r['ingested_s']:.2f} s, windows +{r['first_window_s']:.2f}..+{r['last_window_s']:.2f} s, first score "
                f"+{r['first_score_s']:.2f} s, {r['windows']:,} windows, "
                f"{r['events_records']:,} events / {r['window_records']:,} windows / {r['score_records']:,} scores / {r['changelog_records']:,} changelog records, score cache {r['cache_hits']:.0f} hits / "
                f"{r['cache_misses']:.0f} misses)")
            log(f"   CPU: worker {r['worker_cpu_s']:.1f} s ({r['lines'] / r['worker_cpu_s']:,.0f} lines per worker "
                f"CPU-second), scorer {r['scorer_cpu_s']:.1f} s ({r['windows'] / r['scorer_cpu_s']:,.0f} windows per "
                f"scorer CPU-second), broker {r['broker_cpu_s']:.1f} s; wall {r['seconds']:.1f} s on 2 cores")
            if r["windows"] != r["expected_windows"] or r["scores"] < r["expected_windows"]:
                log(f"  WARNING: {r['windows']} windows / {r['scores']} scores, expected {r['expected_windows']}")
        diverse = None
        if args.diverse > 0:
            d_lines = perturb_lines(inputs[args.lines_100lpr][0], args.diverse)
            diverse = run_e2e(boot, d_lines, 100, expected_windows(d_lines), args.idle)
            hits, misses = diverse["cache_hits"], diverse["cache_misses"]
            diverse["cache_hit_rate"] = hits / max(1.0, hits + misses)
            log(f"e2e, 1 worker, 100 lines/record, lines perturbed at r={args.diverse:g}: "
                f"{diverse['lines_per_s']:10,.0f} lines/s ({diverse['lines']:,} lines, {diverse['windows']:,} windows, "
                f"score cache hit rate {diverse['cache_hit_rate']:.3f}; scorer {diverse['scorer_cpu_s']:.1f} s CPU = "
                f"{diverse['windows'] / max(1e-9, diverse['scorer_cpu_s']):,.0f} windows per scorer CPU-second)")
            if diverse["windows"] != diverse["expected_windows"] or diverse["scores"] < diverse["expected_windows"]:
                log(f"  WARNING: {diverse['windows']} windows / {diverse['scores']} scores, expected "
                    f"{diverse['expected_windows']}")
        two = three = None
        if not args.no_two_workers:
            two = run_e2e(boot, lines, 1, n_windows, args.idle, workers=2)
            log(f"e2e, 2 workers,   1 line/record:  {two['lines_per_s']:10,.0f} lines/s ({two['seconds']:.2f} s; "
                f"ingested at +{two['ingested_s']:.2f} s)")
        if not args.no_three_workers:
            three = run_e2e(boot, lines, 1, n_windows, args.idle, workers=3)
            log(f"e2e, 3 workers,   1 line/record:  {three['lines_per_s']:10,.0f} lines/s ({three['seconds']:.2f} s; "
                f"ingested at +{three['ingested_s']:.2f} s)")
        if 1 in runs:
            base = runs[1]["lines_per_s"]
            scale = [(n, r) for n, r in ((1, runs[1]), (2, two), (3, three)) if r is not None]
            log("workers (1 line/record, same lines and broker; ratio to 1 worker): " + ", ".join(
                f"{n}: {r['lines_per_s']:,.0f} lines/s = {r['lines_per_s'] / base:.2f}x" for n, r in scale))
            for n, r in scale:
                if r["windows"] != r["expected_windows"] or r["scores"] < r["expected_windows"]:
                    log(f"  WARNING ({n} workers): {r['windows']} windows / {r['scores']} scores, "
                        f"expected {r['expected_windows']}")
    if 1 not in runs or 100 not in runs:
        return
    e1, e100 = runs[1]["lines_per_s"], runs[100]["lines_per_s"]
    log(f"ratios: e2e 1 line/record vs no-op Faust agent {e1 / noop:.2f}x, vs bare aiokafka {e1 / aio:.2f}x; "
        f"100 lines/record vs 1: {e100 / e1:.2f}x" + (f"; 2 workers vs 1: {two['lines_per_s'] / e1:.2f}x" if two else "")
        + (f"; 3 workers vs 1: {three['lines_per_s'] / e1:.2f}x" if three else ""))
    log(f"bars: 1 line/record >= {BAR_1LPR:,}: {e1:,.0f} -> {'met' if e1 >= BAR_1LPR else 'NOT met'}; "
        f"100 lines/record >= {BAR_100LPR:,}: {e100:,.0f} -> {'met' if e100 >= BAR_100LPR else 'NOT met'}")
    # CPU per line of each process at 100 lines/record, and what 2 cores of their own would allow
    # (the box is shared: the wall-clock figure moves with the other jobs, this one much less).
    r = runs[100]
    us = {k: r[f"{k}_cpu_s"] / r["lines"] * 1e6 for k in ("worker", "scorer", "broker")}
    cpu_bound = 2e6 / sum(us.values())
    log(f"100 lines/record, CPU per line: worker {us['worker']:.1f} us + scorer {us['scorer']:.1f} us + broker "
        f"{us['broker']:.1f} us = {sum(us.values()):.1f} us -> {cpu_bound:,.0f} lines/s with 2 cores to themselves")
    extra = f" e2e_lines_per_s_1lpr_2workers={two['lines_per_s']:.0f}" if two else ""
    extra += f" e2e_lines_per_s_1lpr_3workers={three['lines_per_s']:.0f}" if three else ""
    extra += f" ratio_2workers_vs_1={two['lines_per_s'] / e1:.2f}" if two else ""
    extra += f" ratio_3workers_vs_1={three['lines_per_s'] / e1:.2f}" if three else ""
    hit100 = r["cache_hits"] / max(1.0, r["cache_hits"] + r["cache_misses"])
    extra += f" cache_hit_rate_100lpr={hit100:.3f}"
    if diverse is not None:
        extra += (f" e2e_lines_per_s_100lpr_diverse={diverse['lines_per_s']:.0f} cache_hit_rate="
                  f"{diverse['cache_hit_rate']:.3f} scorer_windows_per_cpu_s_diverse="
                  f"{diverse['windows'] / max(1e-9, diverse['scorer_cpu_s']):.0f}")
    extra += (f" lines_100lpr={r['lines']} worker_us_per_line_100lpr={us['worker']:.1f} "
              f"scorer_us_per_line_100lpr={us['scorer']:.1f} broker_us_per_line_100lpr={us['broker']:.1f} "
              f"cpu_bound_lines_per_s_100lpr={cpu_bound:.0f}")
    print(f"RESULT e2e_lines_per_s_1lpr={e1:.0f} e2e_lines_per_s_100lpr={e100:.0f} faust_noop_records_per_s={noop:.0f} "
          f"aiokafka_records_per_s={aio:.0f}{extra} ratio_e2e_1lpr_vs_faust_noop={e1 / noop:.2f} "
          f"ratio_e2e_1lpr_vs_aiokafka={e1 / aio:.3f}")


if __name__ == "__main__":
    main()
