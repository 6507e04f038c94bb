"""The scoring worker: windows/s by batch size and device, and latency from window emitted to score published.

    model:  Detector.score_windows on the windows of the bundled HDFS sample (their real length mix),
            score cache off, by batch size 1/16/64/256, on cpu (1 torch thread, as `logad scorer`
            runs by default, and torch's default) and cuda when present
    stream: streams.scorer on a real local Kafka: --windows windows (from the sample repeated, block
            ids rewritten) pre-filled in the windows topic, then the scorer started; windows/s from
            its first to its last score record, by scorer.max_batch, score cache on (the default)
            and off. Then a steady --rate windows/s: p50/p99 of (score record time - window record
            time), both Kafka CreateTime stamps from the same clock.

Usage: .venv/bin/python bench/scorer.py [--windows 20000] [--rate 1000]
Ends with one line: RESULT scorer_windows_per_s=... (stream, max_batch 1024 = the default, cache on) ...
scorer_p99_ms=...
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MODEL, broker, hdfs_lines, log, percentile, produce, read_topic, settings_for  # noqa: E402
from _scorer_cost import cpu_us, diverse, exhaustive, growth, parts  # noqa: E402


def sample_windows(n_lines: int) -> list:
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


def model_rates(windows: list, devices: list[str]) -> dict[tuple[str, int, int], float]:
    import torch

    from logad.detector import Detector

    out = {}
    default_threads = torch.get_num_threads()
    for device in devices:
        for threads in ([1, default_threads] if device == "cpu" else [default_threads]):
            torch.set_num_threads(threads)
            det = Detector.load(MODEL, device)
            det.dedupe = False  # every window through the model: the cost of distinct windows
            det.score_windows(windows[:64], details=True)  # warm-up
            for b in (1, 16, 64, 256):
                det.batch_size = b
                ws = windows[: 300 if b == 1 else len(windows)]
                best = 0.0
                for _ in range(2):
                    t = time.perf_counter()
                    det.score_windows(ws, details=True)
                    best = max(best, len(ws) / (time.perf_counter() - t))
                out[(device, threads, b)] = best
                log(f"model  {device:>4} threads={threads} batch {b:>3}: {best:10,.0f} windows/s")
    torch.set_num_threads(default_threads)
    return out


def cost(sample: list, sizes: list[int], repeat: int) -> dict:
    """CPU us per window, score cache off, indexed scorer vs the exhaustive baseline, same run:
    the sample's windows as they come (repeats included), their distinct ones, and the sample perturbed
    at 2 % (mostly distinct: what a real stream's cache misses look like); the parts of the cost; its
    growth with the normal reference."""
    import torch

    from logad.detector import Detector

    torch.set_num_threads(1)  # as `logad scorer` runs
    fast, base = Detector.load(MODEL, "cpu", batch_size=64), exhaustive(Detector.load(MODEL, "cpu", batch_size=64))
    distinct = list({(w.ids, w.n_context): w for w in sample}.values())
    sets = {"sample": sample, "distinct": distinct, "diverse": diverse(sample, 0.02)}
    out: dict = {}
    for name, ws in sets.items():
        row = {k: cpu_us(lambda d=d: d.score_windows(ws, details=True), len(ws), repeat)
               for k, d in (("baseline", base), ("indexed", fast))}
        out[name] = row
        log(f"cost  {name:>8} ({len(ws):,} windows, {len({(w.ids, w.n_context) for w in ws}):,} distinct): "
            f"baseline {row['baseline']:6.0f} us/window, indexed {row['indexed']:6.0f} us/window = "
            f"{row['baseline'] / row['indexed']:.1f}x")
    for k, d in (("baseline", base), ("indexed", fast)):
        p = out[f"parts_{k}"] = parts(d.scorer, sets["diverse"], repeat)
        log(f"parts {k:>8} (diverse): model {p['model']:.0f}, count {p['count']:.1f}, alignment {p['alignment']:.1f} "
            f"us/window (score_windows adds decisions and alert details)")
    out["growth"] = growth(fast, sets["diverse"][:512], sizes, repeat)
    for g in out["growth"]:
        i, e = g["indexed"], g["exhaustive"]
        log(f"growth {g['size']:>6,} normal windows ({g['count_vectors']:,} count vectors): count {e['count']:.1f} -> "
            f"{i['count']:.1f} us/window, alignment {e['alignment']:.1f} -> {i['alignment']:.1f} us/window "
            f"(exhaustive -> indexed)")
        n, ei, ii = g["by_distance"], e["by_distance"], i["by_distance"]
        log("       alignment by distance to the nearest normal window: " + ", ".join(
            f"{k if k < 3 else '3+'} ({n[k]} windows) {ei[k]:.1f} -> {ii[k]:.1f}" for k in range(4)) + " us/window")
    return out


async def stream_run(bootstrap: str, values: list[bytes], *, max_batch: int, cache: int, rate: float | None = None,
                     n_rate: int = 0, baseline: bool = False) -> dict:
    """Scorer in this process on fresh topics. Without `rate`: pre-fill, then score everything.
    With `rate`: start the scorer first, then produce n_rate windows at `rate` per second."""
    import torch

    from logad.detector import Detector
    from streams.kafka_clients import ensure_topics
    from streams.scorer_process import serve

    torch.set_num_threads(1)
    prefix = f"s{uuid.uuid4().hex[:8]}"
    env, settings = settings_for(bootstrap, prefix, LOGAD_SCORER_MAX_BATCH=str(max_batch),
                                 LOGAD_SCORER_CACHE_SIZE=str(cache))
    t = settings.topics
    await ensure_topics(settings.kafka, {x: t.partitions for x in (t.windows, t.scores, t.alerts, t.dead_letter)})
    from streams.scorer import FORWARD_BATCH

    det = Detector.load(MODEL, "cpu", batch_size=min(max_batch, FORWARD_BATCH), cache_size=cache)  # as run_scorer
    if baseline:
        det = exhaustive(det)
    n = len(values) if rate is None else n_rate
    if rate is None:
        await produce(bootstrap, t.windows, values, partition=range(t.partitions))
    from prometheus_client import CollectorRegistry

    from streams.prometheus import ScorerMetrics

    metrics = ScorerMetrics(CollectorRegistry())
    cpu0 = time.process_time()  # this process: consumer, scoring, producer (the topic is filled already)
    task = asyncio.create_task(serve(settings, det, f"{prefix}-scorer", metrics))
    if rate is not None:
        await asyncio.sleep(3.0)  # consumer group joined
        from aiokafka import AIOKafkaProducer

        from streams.kafka_clients import producer_kwargs
        producer = AIOKafkaProducer(**producer_kwargs(settings.kafka, linger_ms=0))
        await producer.start()
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(t.windows, value=values[i % len(values)], partition=i % t.partitions)
        await producer.stop()
    while not task.done() and metrics.windows._value.get() < n:  # published and acknowledged
        await asyncio.sleep(0.05)
    cpu_s = time.process_time() - cpu0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    from streams.codec import decode_scores

    scores = [(r.timestamp, s) for r in await read_topic(bootstrap, t.scores) for s in decode_scores(r.value)]
    windows = await read_topic(bootstrap, t.windows)
    ts = sorted(ms for ms, _ in scores) or [0]
    seconds = max(1e-9, (ts[-1] - ts[0]) / 1000.0)
    out = {"max_batch": max_batch, "cache": cache, "scores": len(scores), "windows_per_s": len(scores) / seconds,
           "windows_per_cpu_s": len(scores) / max(1e-9, cpu_s),
           "hits": det.cache_hits, "misses": det.cache_misses}
    if rate is not None:
        # score -> its window: the alert id covers (session, range, first_ts); map via the window record
        from logad.alerts import alert_id
        from streams.codec import decode_windows

        by_id = {}
        for w in windows:
            for win in decode_windows(w.value):
                by_id[alert_id(win.source, win.session_id, win.start, win.end, win.first_ts, det.version)] = w.timestamp
        lat = [(ts - by_id[s["id"]]) for ts, s in scores if s["id"] in by_id]
        out.update(p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), n_latency=len(lat))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20_000, help="windows for the stream throughput runs")
    ap.add_argument("--rate", type=float, default=1000.0, help="windows/s of the latency run")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--sizes", default="100,1000,10000", help="normal reference sizes of the growth measurement")
    ap.add_argument("--repeat", type=int, default=3, help="CPU-time measurements taken, best kept")
    ap.add_argument("--cost-only", action="store_true", help="only the CPU cost per window (no Kafka runs)")
    args = ap.parse_args()
    import torch

    from logad.config import SessionConfig
    from streams.codec import encode_windows, vocab_tag
    from streams.session_processor import load_session_rules

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sample = sample_windows(16_252)
    log(f"{len(sample):,} windows of the HDFS sample (mean {sum(len(w.ids) for w in sample) / len(sample):.1f} ids); "
        f"devices {devices}")
    c = cost(sample, [int(x) for x in args.sizes.split(",")], args.repeat)
    if args.cost_only:
        g = {x["size"]: x for x in c["growth"]}
        print("RESULT " + " ".join(f"{k}_us_per_window_{v}={c[k][v]:.1f}" for k in ("sample", "distinct", "diverse")
                                   for v in ("baseline", "indexed")) + " " + " ".join(
            f"align_us_{n}={g[n]['indexed']['alignment']:.1f} align_exhaustive_us_{n}={g[n]['exhaustive']['alignment']:.1f} "
            + " ".join(f"align_us_{n}_d{k if k < 3 else '3plus'}={g[n]['indexed']['by_distance'][k]:.1f}" for k in range(4))
            for n in g))
        return
    rates = {} if args.no_model else model_rates(sample, devices)
    lines = int(args.windows / len(sample) * 16_252) + 1
    windows = sample_windows(lines)[: args.windows]
    tag = vocab_tag(load_session_rules(MODEL, None, SessionConfig())[0])  # the scorer refuses other vocabs
    values = [v for w in windows for v in encode_windows([w], vocab=tag)]
    distinct = len({(w.ids, w.n_context) for w in windows})
    log(f"stream runs: {len(values):,} windows ({distinct} distinct id sequences)")
    stream = {}
    with broker() as boot:
        for max_batch, cache, base in ((1, 65536, False), (16, 65536, False), (64, 65536, False),
                                       (256, 65536, False), (1024, 65536, False), (1024, 0, True), (1024, 0, False)):
            n = len(values) if (max_batch > 1 or cache) else len(values) // 4
            r = asyncio.run(stream_run(boot, values[:n], max_batch=max_batch, cache=cache, baseline=base))
            stream[(max_batch, cache, base)] = r
            log(f"stream max_batch {max_batch:>4} cache {'on ' if cache else 'off'}{' (exhaustive baseline)' if base else ''}: "
                f"{r['windows_per_s']:10,.0f} windows/s, {r['windows_per_cpu_s']:8,.0f} windows per CPU-second "
                f"({r['scores']:,} scores; cache {r['hits']:,} hits / {r['misses']:,} misses)")
        lat = asyncio.run(stream_run(boot, values, max_batch=1024, cache=65536, rate=args.rate,
                                     n_rate=min(int(args.rate * 10), len(values))))  # each window once: a score maps to one send
        log(f"latency at {args.rate:,.0f} windows/s (window record -> score record): p50 {lat['p50_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms ({lat['n_latency']:,} windows)")
    best = stream[(1024, 65536, False)]["windows_per_s"]
    nocache = stream[(1024, 0, False)]["windows_per_s"]
    nocache_cpu = stream[(1024, 0, False)]["windows_per_cpu_s"]
    base_cpu = stream[(1024, 0, True)]["windows_per_cpu_s"]
    log(f"stream, cache off: {nocache_cpu:,.0f} windows per CPU-second vs {base_cpu:,.0f} for the exhaustive "
        f"baseline = {nocache_cpu / base_cpu:.1f}x")
    model_cpu = rates.get(("cpu", 1, 256), float("nan"))
    log(f"ratios: stream cache on / off {best / nocache:.1f}x; stream (cache off, max_batch 1024) / model alone "
        f"(cpu, 1 thread, batch 256) {nocache / model_cpu:.2f}; batch 256 / batch 1 (model) "
        f"{model_cpu / rates.get(('cpu', 1, 1), float('nan')):.1f}x")
    cuda = f" model_cuda_b256_windows_per_s={rates[('cuda', torch.get_num_threads(), 256)]:.0f}" if "cuda" in devices else ""
    print(f"RESULT scorer_windows_per_s={best:.0f} scorer_nocache_windows_per_s={nocache:.0f} "
          f"scorer_nocache_windows_per_cpu_s={nocache_cpu:.0f} baseline_nocache_windows_per_cpu_s={base_cpu:.0f} "
          f"ratio_nocache_vs_baseline={nocache_cpu / base_cpu:.2f} "
          f"diverse_us_per_window={c['diverse']['indexed']:.0f} diverse_baseline_us_per_window={c['diverse']['baseline']:.0f} "
          f"model_cpu_b1_windows_per_s={rates.get(('cpu', 1, 1), float('nan')):.0f} "
          f"model_cpu_b256_windows_per_s={model_cpu:.0f}{cuda} scorer_p50_ms={lat['p50_ms']:.0f} "
          f"scorer_p99_ms={lat['p99_ms']:.0f}")


if __name__ == "__main__":
    main()
