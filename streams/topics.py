"""The topics of the pipeline, their partition counts, and who reads and writes them.

    raw (logs.<source>: logs.hdfs)   shippers / `logad replay` -> ingest        1 partition by default
    events                           ingest -> session agent                    topics.partitions
    <app id>-sessions-changelog      session table (Faust creates it, compacted) topics.partitions
    windows                          session agent -> scorer                    topics.partitions
    scores                           scorer -> consumers                        topics.partitions
    alerts                           scorer -> consumers (key session id)       topics.partitions
    dead-letter                      ingest, sessions, scorer -> operators      topics.partitions

A source is a log format's name (the model bundle's format: hdfs, openstack, myapp); its raw topic
is topics.raw_by_source[source], else the topics.raw template with {source} replaced.
Raw topics get ONE partition unless configured otherwise: the lines of one session must be read in
file order, and Kafka orders only within a partition. Scale-out therefore uses one raw partition per
host / shipper (each shipper writes its own partition, in order; a session's lines from one host
stay ordered), never a random or round-robin spread of one log over several partitions.
Events, windows and scores travel as bundles: one record per partition per batch, without a key,
written to the partition Kafka's default partitioner gives each session id, so all of a session's
records share a partition and the session table is co-partitioned with the events topic (same key
bytes, same partitioner, same count). Alerts are one record each, keyed by session id.
We create every topic ourselves with explicit counts (`ensure_topics` refuses existing topics with
another count) instead of letting clients auto-create them with broker defaults.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from logad.config import Settings
from logad.errors import ConfigError

RAW_PARTITIONS = 1
# Raw topics accept records up to this size (broker default ~1 MiB), so that a record larger than
# ingest.max_record_bytes reaches us and is dead-lettered visibly instead of failing at the shipper.
RAW_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# The broker stamps each raw record with its arrival time (LogAppendTime): idle sessions are closed
# on that clock (streams/session_processor.py), whatever the shippers' clocks say.
RAW_TOPIC_CONFIG = {"max.message.bytes": str(RAW_MAX_MESSAGE_BYTES), "message.timestamp.type": "LogAppendTime"}
SESSIONS_TABLE = "sessions"  # Faust table name; its changelog topic is "<app id>-sessions-changelog"


@dataclass(frozen=True)
class Topics:
    raw: str  # the raw topic of the deployed source
    events: str
    windows: str
    scores: str
    alerts: str
    dead_letter: str


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts


def raw_topic(settings: Settings, source: str) -> str:
    """The raw topic of a source: topics.raw_by_source[source], else topics.raw with {source}
    replaced ("logs.{source}" -> logs.hdfs)."""
    t = settings.topics
    name = t.raw_by_source.get(source) or t.raw.replace("{source}", source)
    if not TOPIC_NAME.fullmatch(name):
        where = f"topics.raw_by_source[{source!r}]" if source in t.raw_by_source else f"topics.raw ({t.raw!r})"
        raise ConfigError(f"raw topic {name!r} of source {source!r} from {where} is not a valid Kafka topic name "
                          "(letters, digits, '.', '_', '-')")
    return name


def topics_for(settings: Settings, source: str, raw: str | None = None) -> Topics:
    t = settings.topics
    return Topics(raw=raw or raw_topic(settings, source), events=t.events, windows=t.windows, scores=t.scores,
                  alerts=t.alerts, dead_letter=t.dead_letter)


def partition_plan(settings: Settings, raw_topics: Sequence[str] = ()) -> dict[str, int]:
    """{topic: partitions} for the given raw topics and every pipeline topic (the changelog is
    Faust's, see SESSIONS_TABLE)."""
    t = settings.topics
    if t.partitions < 1:
        raise ConfigError(f"topics.partitions must be >= 1, got {t.partitions}")
    plan = {name: RAW_PARTITIONS for name in raw_topics}
    for name in (t.events, t.windows, t.scores, t.alerts, t.dead_letter):
        plan[name] = t.partitions
    return plan


async def create_topics(settings: Settings, raw_topics: Sequence[str] = ()) -> list[str]:
    """Create the missing topics; an existing topic with another partition count is an error.

    Existing raw topics keep whatever count the operator gave them (one per host is fine)."""
    from streams.kafka_clients import ensure_topics  # lazy: aiokafka

    plan = partition_plan(settings, raw_topics)
    raws = {k: v for k, v in plan.items() if k in set(raw_topics)}
    rest = {k: v for k, v in plan.items() if k not in raws}
    created = await ensure_topics(settings.kafka, rest, settings.topics.replication)
    created += await _ensure_raw(settings, raws)
    return created


async def _ensure_raw(settings: Settings, raws: dict[str, int]) -> list[str]:
    """Raw topics: create missing ones (RAW_PARTITIONS, RAW_MAX_MESSAGE_BYTES); keep existing ones as
    the operator made them (one partition per host is fine)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    from logad.errors import BrokerError
    from streams.kafka_clients import admin_kwargs

    if not raws:
        return []
    admin = AIOKafkaAdminClient(**admin_kwargs(settings.kafka, request_timeout_ms=10_000))
    created: list[str] = []
    try:
        await asyncio.wait_for(admin.start(), 10)
        meta = await admin.describe_topics(list(raws))
        existing = {m["topic"] for m in meta if m["error_code"] == 0 and m["partitions"]}
        missing = [k for k in raws if k not in existing]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(n, raws[n], settings.topics.replication, topic_configs=RAW_TOPIC_CONFIG) for n in missing],
                timeout_ms=10_000)
            for topic, code, *rest in resp.topic_errors:
                err = for_code(code) if code else None
                if err is None:
                    created.append(topic)
                elif err is not TopicAlreadyExistsError:
                    raise BrokerError(f"cannot create raw topic {topic!r}: {rest[0] if rest and rest[0] else err.__name__}")
            for _ in range(100):  # until the new topics have leaders (producing fails before)
                meta = await admin.describe_topics(missing)
                if all(m["error_code"] == 0 and m["partitions"] and all(p["leader"] >= 0 for p in m["partitions"])
                       for m in meta):
                    break
                await asyncio.sleep(0.05)
    except (asyncio.TimeoutError, TimeoutError):
        raise BrokerError(f"creating raw topics timed out at {settings.kafka.bootstrap_servers}") from None
    finally:
        await admin.close()
    return created


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{SESSIONS_TABLE}-changelog"
