"""Prometheus metrics of the worker (ingest + sessions) and of the scorer, and a tiny scraper.

The worker's metrics are served by Faust's web server at http://<web.host>:<web.port>/metrics (with
Faust's own stream/table metrics); the scorer serves its own at <web.host>:<web.scorer_port>.
Both bind to 127.0.0.1 by default. Names are prefixed `logad_`.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.raw_records = Counter("logad_ingest_raw_records", "raw records consumed", registry=r)
        self.lines = Counter("logad_ingest_lines", "raw lines parsed", registry=r)
        self.events = Counter("logad_ingest_events", "templated events produced (per session key)", registry=r)
        self.unk = Counter("logad_ingest_unk_lines", "lines no template of the vocab matched", registry=r)
        self.dead = Counter("logad_dead_letters", "records or lines sent to the dead-letter topic",
                            ["stage", "reason"], registry=r)
        self.batch_seconds = Histogram("logad_ingest_batch_seconds", "parse+produce+commit time per raw batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.drift_templates = Gauge("logad_drift_templates", "templates the drift miner found among UNK lines",
                                     registry=r)
        self.open_sessions = Gauge("logad_open_sessions", "sessions open in this worker's table", registry=r)
        self.session_records = Counter("logad_session_records", "events records handled by the session agent",
                                       registry=r)
        self.windows = Counter("logad_windows", "closed windows sent to the scorer", ["reason"], registry=r)
        self.duplicates = Counter("logad_duplicate_events", "re-delivered events dropped by raw position",
                                  registry=r)
        self.backfilled = Counter("logad_backfilled_events_records",
                                  "events records Faust skipped that the worker read directly", registry=r)
        self.caught_up = Gauge("logad_caught_up", "1 when ingest and sessions have no lag (idle sweeps run)",
                               registry=r)
        self._seen: dict[str, int] = {}

    def ingest_batch(self, n_records: int, out: Any, seconds: float, ingestor: Any) -> None:
        self.raw_records.inc(n_records)
        self.lines.inc(out.lines)
        self.batch_seconds.observe(seconds)
        # The ingestor keeps running totals; export what changed since the last batch.
        for name, value in list(ingestor.counters.items()):
            delta = value - self._seen.get(name, 0)
            if not delta:
                continue
            self._seen[name] = value
            if name.startswith("dead_"):
                self.dead.labels("ingest", name[5:]).inc(delta)
            elif name == "events":
                self.events.inc(delta)
            elif name == "unk":
                self.unk.inc(delta)

    def drift(self, summary: dict) -> None:
        self.drift_templates.set(summary.get("templates", 0))


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.windows = Counter("logad_scorer_windows", "windows scored", registry=r)
        self.alerts = Counter("logad_scorer_alerts", "anomalous windows (alerts sent)", registry=r)
        self.batch_size = Histogram("logad_scorer_batch_size", "windows per forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.batch_seconds = Histogram("logad_scorer_batch_seconds", "score+produce+commit time per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("logad_scorer_queue", "windows waiting for the model", registry=r)
        self.dead = Counter("logad_scorer_dead_letters", "windows sent to the dead-letter topic", ["reason"],
                            registry=r)
        self.retries = Counter("logad_scorer_retries", "batches re-scored window by window after a failure",
                               registry=r)


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Sample name (with labels) -> value from a Prometheus text endpoint; {} when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback URL we build)
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out
