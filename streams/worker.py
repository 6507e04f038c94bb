"""`logad worker` (and the process start-up shared with `logad scorer`): check the broker, create the topics, run the Faust worker (ingest + sessions).

Startup order: settings -> banner with redacted(settings) (never a secret, never a credential-bearing
URL) -> model manifest + vocab (ArtifactError exits with one line) -> broker reachable (BrokerError
exits with one line naming the address) -> topics (explicit partition counts) -> Faust worker,
which installs SIGTERM/SIGINT handlers and commits on a clean stop. Every scorer.reload_every_s a
timer looks at the bundle folder: a bundle whose vocab extends the running one is taken without a
restart (streams/live_vocab.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from logad.config import LoggingConfig, Settings, redacted

log = logging.getLogger("logad.worker")


def setup_logging(cfg: LoggingConfig) -> None:
    """Plain or one-JSON-object-per-line logs on stderr, at cfg.level."""
    import orjson

    standard = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

    class JsonFormatter(logging.Formatter):
        """{"time", "level", "logger", "msg", "process", [exc], [any `extra=` fields]} per line."""

        def format(self, record: logging.LogRecord) -> str:
            doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                   "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
                   "process": record.process}
            for k, v in vars(record).items():
                if k not in standard and not k.startswith("_"):
                    doc[k] = v
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return orjson.dumps(doc, default=str).decode()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.json else
                         logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.upper())


def banner(what: str, settings: Settings, **extra: object) -> None:
    import orjson

    log.info("%s starting: %s", what, orjson.dumps({**extra, "settings": redacted(settings)}).decode())


async def prepare(settings: Settings, raw_topics: str | list[str]) -> list[str]:
    """Broker reachable and every topic present with its partition count; returns the topics created."""
    from streams.kafka_clients import check_broker
    from streams.topics import create_topics

    await check_broker(settings.kafka)
    return await create_topics(settings, raw_topics=[raw_topics] if isinstance(raw_topics, str) else raw_topics)


def use_uvloop() -> bool:
    """uvloop's event loop for the process (a dependency; measured ~20% more records/s through a Faust
    agent on this box). Before any loop exists; False where it is not installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


GC_THRESHOLDS = (7000, 10, 10)  # gen0 allocations between collections (CPython's default: 700)


def tune_gc() -> None:
    """Cheaper garbage collection for a long-running stream process, once its startup is done.

    The stream stages allocate containers by the thousand per batch (decoded columns, per-session
    slices, window records) and keep few of them; CPython's default gen0 threshold of 700 then
    runs collections that also traverse everything imported and built at startup (Faust, aiokafka,
    torch, the vocab). Measured in the worker on bench/stream_throughput.py at 100 lines/record
    (10^6 lines): 1.8 s of GC in 7.8 s of CPU with the defaults, 0.5 s after gc.freeze(), 0.33 s
    with the freeze and a 7000 gen0 threshold. Freezing moves the startup objects out of the
    collector's sight (they still go by reference counting); reference cycles made later are
    still collected."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings, *, app_id: str, model_dir: str | Path, raw_topic: str | None = None,
               datadir: str | Path | None = None) -> None:
    from streams.app import build_app

    use_uvloop()
    setup_logging(settings.logging)
    app, ctx = build_app(settings, app_id=app_id, model_dir=model_dir, raw_topic=raw_topic, datadir=datadir)
    if settings.scorer.reload_every_s > 0:  # a bundle whose vocab extends this one is taken live
        from streams.live_vocab import watch

        watch(app, ctx, model_dir, settings)
    banner("worker", settings, app_id=app_id, model=str(model_dir), source=ctx.source, topics=vars(ctx.topics),
           web=f"http://{settings.web.host}:{settings.web.port}/metrics")
    created = asyncio.run(prepare(settings, ctx.topics.raw))
    if created:
        log.info("created topics: %s", ", ".join(created))

    import faust

    from streams.watchdog import start_recovery_watchdog

    tune_gc()
    start_recovery_watchdog(app)
    worker = faust.Worker(app, loglevel=settings.logging.level.lower(), quiet=True,
                          redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
