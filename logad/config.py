"""Settings: one frozen dataclass per component; precedence CLI > environment > TOML file > defaults.

Keys are `section.field` (e.g. `kafka.bootstrap_servers`). In a TOML file they are tables
(`[kafka]` / `bootstrap_servers = "..."`); in the environment `LOGAD_KAFKA_BOOTSTRAP_SERVERS`; on the
command line `--set kafka.bootstrap_servers=...`. Unknown keys and values of the wrong type fail with
a ConfigError naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logad.errors import ConfigError
from logad.notify import NotifyConfig  # defined beside the payloads it configures

ENV_PREFIX = "LOGAD_"
# Environment variables with this prefix that are not settings keys.
ENV_RESERVED = frozenset({"LOGAD_CONFIG", "LOGAD_KAFKA_HOME", "LOGAD_TEST_BOOTSTRAP", "LOGAD_TEST_MODEL",
                          "LOGAD_DEMO_MODEL", "LOGAD_DEMO_KEEP"})


def _check(section: str, obj: Any, choices: dict[str, tuple] | None = None,
           ranges: dict[str, tuple[float | None, float | None]] | None = None) -> None:
    """Validate enum and range fields of a settings section when it is built (loading a file, an
    environment variable or --set builds it), naming the key and what is allowed."""
    for name, allowed in (choices or {}).items():
        v = getattr(obj, name)
        if v not in allowed:
            raise ConfigError(f"{section}.{name} must be one of {', '.join(repr(a) for a in allowed)}, got {v!r}")
    for name, (lo, hi) in (ranges or {}).items():
        v = getattr(obj, name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{section}.{name} must be {bound}, got {v!r}")


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What logad passes to aiokafka (user + password); "" = PLAIN when the protocol is SASL_*.
SASL_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEVICES = ("auto", "cpu", "cuda")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"  # comma-separated host:port list of brokers
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512; empty = no SASL
    sasl_username: str = ""  # SASL user (from env in production, never logged)
    sasl_password: str = field(default="", repr=False)  # SASL secret; repr=False keeps it out of logs
    ssl_cafile: str = ""  # CA bundle used to verify the brokers' certificates
    ssl_certfile: str = ""  # client certificate for mutual TLS
    ssl_keyfile: str = ""  # private key of the client certificate
    client_id: str = "logad"  # client id shown in broker logs and quotas

    def __post_init__(self) -> None:
        _check("kafka", self, {"security_protocol": SECURITY_PROTOCOLS, "sasl_mechanism": SASL_MECHANISMS})
        if not self.bootstrap_servers.strip():
            raise ConfigError("kafka.bootstrap_servers must name at least one host:port")


@dataclass(frozen=True)
class TopicsConfig:
    # raw topic of a source (a log format's name, e.g. hdfs): a template, {source} = that name. One
    # line, newline-joined lines or (multi-line formats) whole entries per record; JSON input: one
    # JSON object per line
    raw: str = "logs.{source}"
    # per-source raw topic, overriding `raw` (TOML [topics.raw_by_source], env/--set "myapp=logs.x,hdfs=logs.h")
    raw_by_source: dict[str, str] = field(default_factory=dict)
    events: str = "logad.events"  # templated events, keyed by session id
    windows: str = "logad.windows"  # closed session windows, input of the scorer
    scores: str = "logad.scores"  # every window score
    alerts: str = "logad.alerts"  # anomalous windows (JSON alerts with a stable id)
    dead_letter: str = "logad.dead-letter"  # records we could not process, with the reason
    partitions: int = 4  # partitions of every topic we create (tables are co-partitioned)
    replication: int = 1  # replication factor of the topics we create

    def __post_init__(self) -> None:
        _check("topics", self, ranges={"partitions": (1, 10_000), "replication": (1, 32)})


@dataclass(frozen=True)
class IngestConfig:
    max_line_bytes: int = 65536  # longer lines are truncated to this many bytes (and counted)
    max_record_bytes: int = 1_048_576  # records larger than this go to the dead-letter topic
    batch_size: int = 2000  # raw records taken per batch from the raw topics
    batch_within_s: float = 0.2  # ... or whatever arrived within this many seconds
    drift_report_every_s: float = 60.0  # how often the drift miner's summary is logged

    def __post_init__(self) -> None:
        _check("ingest", self, ranges={"max_line_bytes": (64, None), "max_record_bytes": (64, None),
                                       "batch_size": (1, None), "batch_within_s": (0.001, None),
                                       "drift_report_every_s": (0.1, None)})


@dataclass(frozen=True)
class SessionConfig:
    gap_s: float = 300.0  # event-time gap that closes a session
    idle_timeout_s: float = 30.0  # wall-clock idle time that closes a session on a silent stream
    max_open_sessions: int = 1_000_000  # cap on open sessions per worker; oldest evicted (closed) first
    max_events_per_session: int = 100_000  # cap on events kept per session; later events counted and dropped
    sweep_every_s: float = 1.0  # how often the idle timer runs

    def __post_init__(self) -> None:
        _check("sessions", self, ranges={"gap_s": (0.001, None), "idle_timeout_s": (0.001, None),
                                         "max_open_sessions": (1, None), "max_events_per_session": (1, None),
                                         "sweep_every_s": (0.01, None)})


@dataclass(frozen=True)
class GuardConfig:
    max_unparsed_rate: float = 0.5  # more lines than this share not parsed -> wrong format: fail / hold alerts
    max_unknown_rate: float = 0.5  # more parsed lines than this share matching no template -> wrong model
    min_lines: int = 50  # judge only after this many lines (offline: per run; stream: per window of lines)
    window_lines: int = 10_000  # stream: the rates are judged over this many most recent lines per source

    def __post_init__(self) -> None:
        for name in ("max_unparsed_rate", "max_unknown_rate"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"guard.{name} must be in (0, 1], got {v}")
        if self.min_lines < 1 or self.window_lines < self.min_lines:
            raise ConfigError(f"guard: need 1 <= min_lines <= window_lines, got {self.min_lines}, {self.window_lines}")


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool = True  # reworded statements count as the known statement they are closest to (logad.drift)
    min_similarity: float = 0.7  # words shared with the closest template (Indel similarity) to count as drift
    margin: int = 1  # ... and this many word edits closer than any other template (else: ambiguous, unseen)
    cache_size: int = 50_000  # masked lines remembered
    alias_similarity: float = 0.5  # a pending line this close to exactly one known statement is tried as it (logad.pending)
    promote_after: int = 5  # sessions normal apart from a pending statement that promote it (0: only people accept)
    decisions_file: str = ""  # accepted / rejected / promoted statements (JSONL); "" = template_decisions.jsonl in the bundle

    def __post_init__(self) -> None:
        _check("drift", self, ranges={"min_similarity": (0.01, 1.0), "margin": (1, None), "cache_size": (1, None),
                                      "alias_similarity": (0.0, 1.0), "promote_after": (0, None)})


@dataclass(frozen=True)
class ScorerConfig:
    model_dir: str = "artifacts/models/hdfs"  # model bundle used by the scoring worker
    device: str = "auto"  # auto | cpu | cuda
    max_batch: int = 1024  # windows per scoring batch (model forward passes are length-sorted chunks of it)
    max_wait_ms: float = 20.0  # longest a window waits for its batch to fill
    queue_size: int = 4096  # windows waiting between the consumer and the model (a decoded record enters whole)
    early_alerts: bool = False  # score open sessions incrementally and send `early: true` alerts
    cache_size: int = 65536  # scores kept per distinct window (ids, n_context); repeats skip the model; 0 = off
    score_details: bool = False  # also attach the surprising events to score records of normal windows (alerts always have them)
    torch_threads: int = 1  # CPU threads of the model (0 = torch's default); scale out with scorer processes
    evidence_lines: int = 5  # raw lines an alert quotes (read back from the raw topic; windows carry positions); 0 = off
    # seconds between looks at model_dir (scorer and worker) and the feedback file (scorer): a new
    # bundle (manifest or thresholds changed, every hash verifies; the worker: a vocab that extends
    # its own) or new feedback is picked up without a restart; 0 = never
    reload_every_s: float = 5.0
    feedback_file: str = ""  # verdicts of `logad feedback` (append-only JSONL); "" = feedback.jsonl in the bundle

    def __post_init__(self) -> None:
        _check("scorer", self, {"device": DEVICES},
               {"max_batch": (1, None), "max_wait_ms": (0, None), "queue_size": (1, None), "cache_size": (0, None),
                "torch_threads": (0, None), "evidence_lines": (0, None), "reload_every_s": (0, None)})


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"  # web/metrics server bind address (loopback by default)
    port: int = 6066  # worker web + Prometheus metrics port
    scorer_port: int = 6067  # scorer Prometheus metrics port

    def __post_init__(self) -> None:
        _check("web", self, ranges={"port": (1, 65535), "scorer_port": (1, 65535)})


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR | CRITICAL
    json: bool = False  # one JSON object per log line (for log shippers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", self.level.upper())
        _check("logging", self, {"level": LOG_LEVELS})


@dataclass(frozen=True)
class Settings:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)  # broker connection
    topics: TopicsConfig = field(default_factory=TopicsConfig)  # topic names and sizes
    ingest: IngestConfig = field(default_factory=IngestConfig)  # raw-line ingest
    sessions: SessionConfig = field(default_factory=SessionConfig)  # session/window state
    guard: GuardConfig = field(default_factory=GuardConfig)  # wrong-format / wrong-model detection
    drift: DriftConfig = field(default_factory=DriftConfig)  # reworded log statements (template drift)
    notify: NotifyConfig = field(default_factory=NotifyConfig)  # alert delivery (logad notify)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)  # scoring worker
    web: WebConfig = field(default_factory=WebConfig)  # web and metrics servers
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # process logs


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, typ: Any, key: str, origin: str) -> Any:
    """Convert `value` (a TOML value or a string from env/CLI) to `typ`, or raise ConfigError."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"", "none", "null"}):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if typing.get_origin(typ) is dict:
            return _coerce_mapping(value, typ, key, origin)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key} (from {origin}): expected {getattr(typ, '__name__', typ)}, got {value!r}"
        ) from None
    raise ConfigError(f"{key}: unsupported setting type {typ!r}")


def _coerce_mapping(value: Any, typ: Any, key: str, origin: str) -> dict[str, Any]:
    """A TOML table, or "name=value,name=value" from env/CLI ("" = empty), -> {name: value}."""
    ktyp, vtyp = typing.get_args(typ) or (str, str)
    if isinstance(value, str):
        pairs: list[tuple[str, str]] = []
        for item in value.split(","):
            if not item.strip():
                continue
            name, eq, v = item.partition("=")
            if not eq or not name.strip() or not v.strip():
                raise ConfigError(f"{key} (from {origin}): expected name=value pairs separated by commas, got {item!r}")
            pairs.append((name.strip(), v.strip()))
        items: Any = pairs
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise ConfigError(f"{key} (from {origin}): expected a table or name=value pairs, got {value!r}")
    out: dict[str, Any] = {}
    for name, v in items:
        out[coerce(name, ktyp, f"{key} name", origin)] = coerce(v, vtyp, f"{key}.{name}", origin)
    return out


def _apply(base: Any, updates: Mapping[str, Any], origin: str) -> Any:
    """Return a copy of the dataclass `base` with `updates` ({field: value}) applied and type-checked."""
    hints = _field_types(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for name, value in updates.items():
        key = f"{type(base).__name__}.{name}"
        if name not in names:
            raise ConfigError(f"unknown setting {name!r} in {origin} (known: {', '.join(sorted(names))})")
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} (from {origin}): expected a table of settings, got {value!r}")
            changes[name] = _apply(getattr(base, name), value, f"{origin} [{name}]")
        else:
            changes[name] = coerce(value, typ, key, origin)
    return dataclasses.replace(base, **changes)


def _nest(flat: Mapping[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    """{'kafka.bootstrap_servers': v} -> {'kafka': {'bootstrap_servers': v}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise ConfigError(f"setting {key!r} from {origin} must look like section.field")
        out.setdefault(section, {})[name] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None


def env_settings(env: Mapping[str, str]) -> dict[str, str]:
    """LOGAD_SECTION_FIELD=value -> {'section.field': value}; unknown LOGAD_ names are errors."""
    sections = {f.name: {g.name for g in dataclasses.fields(f.default_factory())}  # type: ignore[misc]
                for f in dataclasses.fields(Settings)}
    out: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section, fields_ in sections.items():
            if rest.startswith(section + "_") and rest[len(section) + 1:] in fields_:
                out[f"{section}.{rest[len(section) + 1:]}"] = value
                break
        else:
            raise ConfigError(f"unknown environment setting {name} (expected LOGAD_<SECTION>_<FIELD>)")
    return out


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """['kafka.bootstrap_servers=h:9092'] -> {'kafka.bootstrap_servers': 'h:9092'}."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected section.field=value")
        out[key.strip()] = value.strip()
    return out


def load_settings(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the TOML file (or $LOGAD_CONFIG), then LOGAD_* env, then CLI overrides."""
    env = os.environ if env is None else env
    settings = Settings()
    file = file or env.get("LOGAD_CONFIG") or None
    if file:
        settings = _apply(settings, read_toml(file), f"config file {file}")
    settings = _apply(settings, _nest(env_settings(env), "environment"), "environment")
    if cli:
        settings = _apply(settings, _nest(cli, "command line"), "command line")
    return cross_check(settings)


def cross_check(s: Settings) -> Settings:
    """Checks between fields, once every layer (file, environment, command line) is applied."""
    k = s.kafka
    if k.sasl_mechanism and not k.security_protocol.startswith("SASL_"):
        raise ConfigError(f"kafka.sasl_mechanism={k.sasl_mechanism!r} needs kafka.security_protocol SASL_SSL or "
                          f"SASL_PLAINTEXT, got {k.security_protocol!r}")
    if s.web.port == s.web.scorer_port:
        raise ConfigError(f"web.port and web.scorer_port must differ (both {s.web.port})")
    return s


def redacted(settings: Any) -> dict[str, Any]:
    """Settings as a dict with every secret-looking field replaced by '***' (for banners and logs)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = redacted(value)
        elif any(s in f.name for s in ("password", "secret", "token", "keyfile", "routing_key")) and value:
            out[f.name] = "***"
        else:
            out[f.name] = value
    return out
