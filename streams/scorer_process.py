"""`logad scorer` as a process: load the bundle, serve metrics, run streams.scorer.Scorer on Kafka
until SIGTERM/SIGINT, with the bundle folder and the feedback file watched (streams/rollout.py).

    run_scorer: settings -> banner -> Detector.load (ArtifactError: one line, exit 2, via the CLI)
      + feedback applied -> metrics server -> serve
    serve: topics -> consumer (group on the windows topic) + producer -> Scorer (+ Quoter when
      alerts quote raw lines) -> tasks: consume, score, watch (scorer.reload_every_s > 0)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from logad.config import Settings
from logad.pending import attach
from logad.template_decisions import decisions_path
from streams.scorer import FORWARD_BATCH, Scorer

log = logging.getLogger("logad.scorer")


def loader(settings: Settings, device: str) -> Any:
    """model_dir -> Detector, as the scorer loads every bundle it runs."""
    from logad.detector import Detector

    # Forward passes of FORWARD_BATCH length-sorted windows: on CPU (1 thread) 64 scores ~1.5x more
    # windows/s than 256 (less padding per pass; bench/scorer.py); a scoring batch is max_batch.
    def load(model_dir: str | Path) -> Any:
        det = Detector.load(model_dir, device, batch_size=min(settings.scorer.max_batch, FORWARD_BATCH),
                            cache_size=settings.scorer.cache_size)
        if settings.drift.enabled:  # the worker gives lines no template fits pending ids (logad.pending)
            attach(det, model_dir, settings.drift)
        return det

    return load


async def serve(settings: Settings, detector: Any, group: str, metrics: Any = None, identity: str = "",
                load: Any = None, applied: str = "") -> None:
    """Score until SIGTERM/SIGINT. `identity`: streams.rollout.bundle_state of the folder `detector`
    was loaded from; `load`: model_dir -> Detector for new bundles (None: no watching); `applied`:
    the digest of the feedback `detector` runs with."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from logad.feedback import feedback_path
    from streams.kafka_clients import check_broker, consumer_kwargs, producer_kwargs
    from streams.rollout import Watcher
    from streams.topics import create_topics

    await check_broker(settings.kafka)
    await create_topics(settings, raw_topics=[])
    consumer = AIOKafkaConsumer(settings.topics.windows, **consumer_kwargs(
        settings.kafka, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=1000,
        max_poll_interval_ms=600_000))
    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka, linger_ms=5))
    await producer.start()
    await consumer.start()
    scorer = Scorer(detector, consumer, producer, settings, metrics, identity=identity)
    reader = None
    if settings.scorer.evidence_lines > 0:
        from logad.artifacts import bundle_format
        from streams.evidence import Quoter, RawReader

        reader = RawReader(settings.kafka)
        fmt = bundle_format(detector.bundle.path, detector.bundle.vocab.format_name)
        scorer.quoter = Quoter(reader, fmt, settings.scorer.evidence_lines)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(scorer.consume(), name="consume"), asyncio.create_task(scorer.run(), name="score")]
    if load is not None and settings.scorer.reload_every_s > 0:
        scorer.watcher = Watcher(scorer, detector.bundle.path, feedback_path(detector.bundle.path,
                                 settings.scorer.feedback_file), load, settings.scorer.reload_every_s, metrics,
                                 decisions=decisions_path(detector.bundle.path, settings.drift.decisions_file))
        scorer.watcher.applied = applied
        tasks.append(asyncio.create_task(scorer.watcher.run(), name="watch"))
    log.info("scorer ready: group %s, model %s on %s", group, detector.version, detector.device)
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if reader is not None:
            await reader.stop()
        await consumer.stop()
        await producer.stop()
        log.info("scorer stopped: %d windows scored, %d alerts, %d held, %d windows records of another vocab",
                 scorer.scored, scorer.alerts, scorer.held, scorer.mismatches)


def run_scorer(settings: Settings, *, model_dir: str | Path, group: str, device: str) -> None:
    """Load the model (ArtifactError: one line, exit 2, via the CLI), then serve until SIGTERM/SIGINT."""
    from prometheus_client import start_http_server

    from logad.feedback import apply_feedback, feedback_path
    from streams.prometheus import ScorerMetrics, set_model_info
    from streams.rollout import bundle_state
    from streams.worker import banner, setup_logging, tune_gc, use_uvloop

    use_uvloop()
    setup_logging(settings.logging)
    banner("scorer", settings, model=str(model_dir), group=group, device=device)
    if settings.scorer.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.scorer.torch_threads)
    load = loader(settings, device)
    identity = bundle_state(model_dir)[0]  # before the load: a bundle replaced meanwhile is loaded again
    detector = load(model_dir)
    applied = apply_feedback(detector, feedback_path(model_dir, settings.scorer.feedback_file)).digest
    metrics = ScorerMetrics()
    b = detector.bundle
    set_model_info(metrics.model_info, model_dir, b.vocab.format_name or "", b.vocab, detector.version,
                   weights=b.weights_sha256)
    try:
        start_http_server(settings.web.scorer_port, addr=settings.web.host)
    except OSError as e:
        log.warning("metrics server not started on %s:%d: %s", settings.web.host, settings.web.scorer_port, e)
    # (a burst of bundles allocates several containers per window, a decoded dict, its Window, its
    # score, its envelope: with the default gen0 threshold, collections kept traversing torch and
    # the model loaded above)
    tune_gc()
    asyncio.run(serve(settings, detector, group, metrics, identity, load, applied))
