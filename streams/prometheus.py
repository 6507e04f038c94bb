"""Prometheus metrics of the worker (ingest + sessions) and of the scorer, and a tiny scraper.

The worker's metrics are served by Faust's web server at http://<web.host>:<web.port>/metrics (with
Faust's own stream/table metrics); the scorer serves its own at <web.host>:<web.scorer_port>.
Both bind to 127.0.0.1 by default. Names are prefixed `logad_`; WORKER_METRICS / SCORER_METRICS
list them (tests check that the endpoints serve them; deploy/grafana-dashboard.json and the PromQL
in README.md use them).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 262144)

WORKER_METRICS = (
    "logad_ingest_raw_records", "logad_ingest_lines", "logad_ingest_events", "logad_ingest_unk_lines",
    "logad_parse_failures", "logad_dead_letters", "logad_ingest_batch_seconds", "logad_ingest_batch_lines",
    "logad_unk_line_ratio", "logad_drift_templates", "logad_open_sessions", "logad_session_records",
    "logad_session_closes", "logad_evictions", "logad_windows", "logad_duplicate_events",
    "logad_backfilled_events_records", "logad_caught_up", "logad_consumer_lag", "logad_input_clock_lag_seconds",
    "logad_input_mismatch", "logad_input_unparsed_rate", "logad_input_unknown_rate", "logad_model_info",
    "logad_model_reloads", "logad_model_reload_failures",
)
SCORER_METRICS = (
    "logad_scorer_windows", "logad_scorer_alerts", "logad_scorer_batch_size", "logad_scorer_batch_seconds",
    "logad_scoring_latency_seconds", "logad_scorer_queue", "logad_scorer_dead_letters", "logad_scorer_retries",
    "logad_scorer_cache_hits", "logad_scorer_cache_misses", "logad_consumer_lag",
    "logad_scorer_vocab_mismatch", "logad_alerts_held", "logad_model_info", "logad_model_reloads",
    "logad_model_reload_failures",
)
GUARD_PROBLEMS = ("unparsed", "unknown")  # logad.guard.Verdict.problem values


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.raw_records = Counter("logad_ingest_raw_records", "raw records consumed", registry=r)
        self.lines = Counter("logad_ingest_lines", "raw lines read, per source (log format) and raw topic",
                             ["source", "topic"], registry=r)
        self.parse_failures = Counter("logad_parse_failures", "raw lines that could not be parsed, by reason",
                                      ["reason"], registry=r)
        self.events = Counter("logad_ingest_events", "templated events produced (per session key)", registry=r)
        self.unk = Counter("logad_ingest_unk_lines", "lines no template of the vocab matched", registry=r)
        self.dead = Counter("logad_dead_letters", "records or lines sent to the dead-letter topic",
                            ["stage", "reason"], registry=r)
        self.batch_seconds = Histogram("logad_ingest_batch_seconds", "parse+produce+commit time per raw batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_lines = Histogram("logad_ingest_batch_lines", "raw lines per ingest batch", buckets=SIZE_BUCKETS,
                                     registry=r)
        self.unk_ratio = Gauge("logad_unk_line_ratio", "share of the last ingest batch's lines with an unseen "
                               "template (UNK)", registry=r)
        self.drift_templates = Gauge("logad_drift_templates", "templates the drift miner found among UNK lines",
                                     registry=r)
        self.open_sessions = Gauge("logad_open_sessions", "sessions open in this worker's table", registry=r)
        self.session_records = Counter("logad_session_records", "events records handled by the session agent",
                                       registry=r)
        self.closes = Counter("logad_session_closes", "sessions closed, by reason (idle, gap, terminal, evicted, ...)",
                              ["reason"], registry=r)
        self.evictions = Counter("logad_evictions", "sessions closed early because the open-session cap was reached",
                                 registry=r)
        self.windows = Counter("logad_windows", "closed windows sent to the scorer", ["reason"], registry=r)
        self.duplicates = Counter("logad_duplicate_events", "re-delivered events dropped by raw position",
                                  registry=r)
        self.backfilled = Counter("logad_backfilled_events_records",
                                  "events records Faust skipped that the worker read directly", registry=r)
        self.caught_up = Gauge("logad_caught_up", "1 when ingest and sessions have no lag (idle sweeps run)",
                               registry=r)
        self.lag = lag_gauge(r)
        self.clock_lag = Gauge("logad_input_clock_lag_seconds", "wall time - the input clock idle sessions are "
                               "closed on (0 when caught up): how far behind the worker's decisions are", registry=r)
        self.input_mismatch = Gauge(
            "logad_input_mismatch", "1 while the input guard finds the raw input does not fit the deployed "
            "bundle, by problem: unparsed = more than guard.max_unparsed_rate of the last guard.window_lines "
            "lines do not parse (wrong log format?), unknown = more than guard.max_unknown_rate of the parsed "
            "lines match no template (wrong model?). Meanwhile windows are marked held and the scorer publishes "
            "their scores but no alerts (logad_alerts_held_total); alerts flow again once the input fits",
            ["source", "topic", "problem"], registry=r)
        self.unparsed_rate = Gauge("logad_input_unparsed_rate", "share of the last guard.window_lines raw lines "
                                   "that did not parse (input guard)", ["source", "topic"], registry=r)
        self.unknown_rate = Gauge("logad_input_unknown_rate", "share of the last guard.window_lines parsed lines "
                                  "that match no template of the model (input guard)", ["source", "topic"], registry=r)
        self.model_info = model_info_gauge(r)
        self.reloads, self.reload_failures = reload_counters(r)  # (streams/live_vocab.py)
        self._seen: dict[str, int] = {}
        self._closes: dict[str, int] = {}
        self._rejected: dict[str, int] = {}

    def ingest_batch(self, n_records: int, out: Any, seconds: float, ingestor: Any) -> None:
        self.raw_records.inc(n_records)
        source = getattr(out, "source", "") or ingestor.fmt.name
        for topic, n in getattr(out, "lines_by_topic", {}).items():
            self.lines.labels(source, topic).inc(n)
        self.batch_seconds.observe(seconds)
        self.batch_lines.observe(out.lines)
        unk_before = self._seen.get("unk", 0)
        for reason, n in list(ingestor.stats.rejected.items()):
            delta = n - self._rejected.get(reason, 0)
            if delta:
                self._rejected[reason] = n
                self.parse_failures.labels(reason).inc(delta)
        if out.lines:
            self.unk_ratio.set((ingestor.counters.get("unk", 0) - unk_before) / out.lines)
        guard = getattr(ingestor, "guard", None)
        for topic in getattr(out, "health", {}):
            v = guard.verdicts.get(topic) if guard is not None else None
            if v is not None:
                self.guard(source, topic, v)
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

    def guard(self, source: str, topic: str, verdict: Any) -> None:
        """The input guard's verdict on a raw topic (logad.guard.Verdict) as gauges."""
        for problem in GUARD_PROBLEMS:
            self.input_mismatch.labels(source, topic, problem).set(1 if verdict.problem == problem else 0)
        self.unparsed_rate.labels(source, topic).set(verdict.unparsed_rate)
        self.unknown_rate.labels(source, topic).set(verdict.unknown_rate)

    def drift(self, summary: dict) -> None:
        self.drift_templates.set(summary.get("templates", 0))

    def sessions(self, counters: Any) -> None:
        """Export the Sessionizer's running totals (closed_<reason>, evicted) as counters."""
        for name, value in list(counters.items()):
            delta = value - self._closes.get(name, 0)
            if not delta:
                continue
            self._closes[name] = value
            if name.startswith("closed_"):
                self.closes.labels(name[7:]).inc(delta)
            elif name == "evicted":
                self.evictions.inc(delta)


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
        # one observation per windows record per batch (a bundle's windows share its timestamp; per
        # window it cost ~1 us each and weighted the quantiles by bundle size)
        self.latency = Histogram("logad_scoring_latency_seconds", "windows record produced by the worker -> "
                                 "its windows' scores published and acknowledged (one observation per "
                                 "windows record per scoring batch)", buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("logad_scorer_cache_hits", "windows answered from the score cache", registry=r)
        self.cache_misses = Counter("logad_scorer_cache_misses", "windows run through the model", registry=r)
        self.vocab_mismatch = Counter(
            "logad_scorer_vocab_mismatch", "windows records refused because their vocab fingerprint is not the "
            "scorer's bundle's (worker and scorer run different bundles: template ids would mean other "
            "templates); dead-lettered with reason vocab_mismatch, never scored", registry=r)
        self.held = Counter(
            "logad_alerts_held", "anomalous windows scored (score record published) but not alerted because "
            "the worker's input guard marked them held, by reason: unparsed (the raw lines do not fit the log "
            "format) | unknown (the parsed lines match no template of the model); see logad_input_mismatch",
            ["reason"], registry=r)
        self.lag = lag_gauge(r)
        self.model_info = model_info_gauge(r)
        self.reloads, self.reload_failures = reload_counters(r)


def reload_counters(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """Changes picked up without a restart, and those refused, by what changed."""
    return (Counter("logad_model_reloads", "changes picked up without a restart, by what: bundle (a new model "
                    "bundle swapped in), feedback (new verdicts of `logad feedback` applied), vocab (the worker: "
                    "a bundle whose vocab extends the running one)", ["what"], registry=registry),
            Counter("logad_model_reload_failures", "changes NOT picked up (the running bundle or feedback stays; "
                    "see the ERROR log), by what: bundle (does not load or verify: retried when the folder "
                    "changes), feedback (a bad file), vocab (the worker: not an extension of the running vocab, "
                    "a restart is needed)", ["what"], registry=registry))


def lag_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge("logad_consumer_lag", "records behind the partition's end (high-water mark), per stage",
                 ["stage", "topic", "partition"], registry=registry)


def model_info_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge("logad_model_info", "the model bundle this process runs (value 1): version (as in every "
                 "score and alert), source (log format), vocab (fingerprint: worker and scorer must agree), "
                 "weights (first 12 hex of the weights' sha256)", ["version", "source", "vocab", "weights"],
                 registry=registry)


def set_model_info(gauge: Gauge, model_dir: str | Path, source: str, vocab: Any,
                   version: str | None = None, weights: str | None = None) -> dict[str, str]:
    """Set the info gauge from a bundle's manifest (the worker does not load the weights: their hash
    is the manifest's, which load_bundle checks against the file), or from `weights` (the sha256 of
    the weights loaded); returns the labels."""
    from logad.artifacts import MANIFEST, read_json
    from streams.codec import vocab_tag

    p = Path(model_dir)
    sha = weights or str(read_json(p / MANIFEST, "model manifest").get("weights", {}).get("sha256", ""))
    labels = {"version": version or f"{p.name}-{sha[:12]}", "source": source, "vocab": vocab_tag(vocab), "weights": sha[:12]}
    gauge.clear()  # one series: the bundle running now
    gauge.labels(**labels).set(1)
    return labels


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
