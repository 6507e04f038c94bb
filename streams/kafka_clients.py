"""KafkaConfig -> aiokafka / Faust client settings, plus a reachability check and topic creation.

The only place that turns our config into client arguments, so that SASL/TLS settings reach every
producer, consumer, admin client and Faust app the same way. Secrets are passed through, never logged.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2 as kafka_murmur2

from logad.config import KafkaConfig
from logad.errors import BrokerError, ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
START_HINT = "start it with `scripts/kafka-local start` or set LOGAD_KAFKA_BOOTSTRAP_SERVERS"


def bootstrap_list(cfg: KafkaConfig) -> list[str]:
    """'a:9092, b:9093' -> ['a:9092', 'b:9093'] (a missing port means 9092)."""
    out = []
    for item in cfg.bootstrap_servers.split(","):
        item = item.strip()
        if item.startswith("kafka://"):
            item = item[len("kafka://"):]
        if not item:
            continue
        out.append(item if ":" in item.rsplit("]", 1)[-1] else f"{item}:9092")
    if not out:
        raise ConfigError("kafka.bootstrap_servers is empty (expected host:port[,host:port...])")
    return out


def _protocol(cfg: KafkaConfig) -> str:
    proto = cfg.security_protocol.strip().upper()
    if proto not in PROTOCOLS:
        raise ConfigError(f"kafka.security_protocol {cfg.security_protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if proto.startswith("SASL_"):
        mech = _mechanism(cfg)
        if not cfg.sasl_username:
            raise ConfigError(f"kafka.security_protocol={proto} needs kafka.sasl_username (LOGAD_KAFKA_SASL_USERNAME)")
        if mech not in SASL_MECHANISMS:
            raise ConfigError(f"kafka.sasl_mechanism {cfg.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
    elif cfg.sasl_mechanism or cfg.sasl_username:
        # Silently ignoring credentials would connect without auth and fail later, far from the cause.
        raise ConfigError(f"kafka.sasl_* is set but kafka.security_protocol is {proto}: use SASL_SSL or SASL_PLAINTEXT")
    return proto


def _mechanism(cfg: KafkaConfig) -> str:
    return (cfg.sasl_mechanism or "PLAIN").strip().upper()


def ssl_context(cfg: KafkaConfig) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL/SASL_SSL (CA from ssl_cafile or the system store), else None."""
    if _protocol(cfg) not in ("SSL", "SASL_SSL"):
        return None
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(cfg, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"kafka.{key}: file {path} does not exist")
    if bool(cfg.ssl_keyfile) and not cfg.ssl_certfile:
        raise ConfigError("kafka.ssl_keyfile is set without kafka.ssl_certfile")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ssl_cafile or None)
        if cfg.ssl_certfile:
            ctx.load_cert_chain(cfg.ssl_certfile, cfg.ssl_keyfile or None)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"kafka TLS files cannot be loaded: {e}") from None
    return ctx


def client_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection/auth kwargs shared by AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    proto = _protocol(cfg)
    kw: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(cfg),
        "client_id": cfg.client_id,
        "security_protocol": proto,
    }
    ctx = ssl_context(cfg)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if proto.startswith("SASL_"):
        # aiokafka uses the sasl_plain_* names for SCRAM as well.
        kw.update(sasl_mechanism=_mechanism(cfg), sasl_plain_username=cfg.sasl_username,
                  sasl_plain_password=cfg.sasl_password)
    return kw


def producer_kwargs(cfg: KafkaConfig, **extra: Any) -> dict[str, Any]:
    # acks=all + idempotence: no duplicates from producer retries (cheap on one broker, right on many).
    return {**client_kwargs(cfg), "acks": "all", "enable_idempotence": True, **extra}


def consumer_kwargs(cfg: KafkaConfig, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
    # Manual commits: we commit after processing, never before (at-least-once).
    kw = {**client_kwargs(cfg), "group_id": group_id, "enable_auto_commit": False,
          "auto_offset_reset": "earliest"}
    return {**kw, **extra}


def admin_kwargs(cfg: KafkaConfig, **extra: Any) -> dict[str, Any]:
    return {**client_kwargs(cfg), **extra}


def faust_broker_url(cfg: KafkaConfig) -> str:
    """'a:9092,b:9093' -> 'kafka://a:9092,kafka://b:9093' (what faust's `broker` setting parses)."""
    return ",".join(f"kafka://{hp}" for hp in bootstrap_list(cfg))


def faust_credentials(cfg: KafkaConfig) -> Any:
    """faust.SASLCredentials / faust.SSLCredentials for the config, or None for PLAINTEXT."""
    import faust  # lazy: importing faust is slow and pulls in its whole runtime

    proto = _protocol(cfg)
    ctx = ssl_context(cfg)
    if proto == "SSL":
        return faust.SSLCredentials(ctx)
    if proto.startswith("SASL_"):
        # SASLCredentials switches itself to SASL_SSL when given a context.
        return faust.SASLCredentials(username=cfg.sasl_username, password=cfg.sasl_password,
                                     mechanism=_mechanism(cfg), ssl_context=ctx)
    return None


def faust_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for faust.App(...) that carry the broker address and credentials."""
    out: dict[str, Any] = {"broker": faust_broker_url(cfg), "broker_client_id": cfg.client_id}
    creds = faust_credentials(cfg)
    if creds is not None:
        out["broker_credentials"] = creds
    return out


async def _tcp_probe(hostport: str, timeout_s: float) -> str | None:
    """None when a TCP connection opens, else a short reason ('connection refused', ...)."""
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return f"unknown host {host}"
    except (asyncio.TimeoutError, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    except (OSError, ValueError) as e:
        return (e.strerror or str(e) or type(e).__name__).lower()
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    name = type(e).__name__
    return (text if text.startswith(name) else f"{name}: {text}" if text else name)[:300]


async def check_broker(cfg: KafkaConfig, timeout_s: float = 5.0) -> None:
    """Raise BrokerError (one line, with the address and what to do) unless a broker answers.

    A TCP probe first gives the precise reason (refused / unknown host / timeout); then a metadata
    request through aiokafka proves the protocol, TLS and SASL settings work.
    """
    servers = bootstrap_list(cfg)
    where = ",".join(servers)
    reasons = await asyncio.gather(*(_tcp_probe(s, timeout_s) for s in servers))
    if all(reasons):
        why = "; ".join(dict.fromkeys(r for r in reasons if r))
        raise BrokerError(f"cannot reach Kafka at {where} ({why}): {START_HINT}")
    admin = AIOKafkaAdminClient(**admin_kwargs(cfg, request_timeout_ms=max(int(timeout_s * 1000), 1000)))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        meta = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        if not meta.get("brokers"):
            raise BrokerError(f"Kafka at {where} answered but lists no brokers")
    except BrokerError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise BrokerError(f"Kafka at {where} accepts connections but did not answer within {timeout_s:g} s "
                          f"(wrong port, TLS/SASL mismatch or broker still starting?)") from None
    except (KafkaError, OSError, ssl.SSLError) as e:
        raise BrokerError(f"Kafka at {where} refused us ({_one_line(e)}); check LOGAD_KAFKA_SECURITY_PROTOCOL "
                          f"and LOGAD_KAFKA_SASL_*/SSL_* settings") from None
    finally:
        await admin.close()


async def ensure_topics(cfg: KafkaConfig, names: Mapping[str, int], replication: int = 1,
                        timeout_s: float = 10.0) -> list[str]:
    """Create the topics {name: partitions} that do not exist yet; return the names created.

    Idempotent. An existing topic with a different partition count is an error, not a warning:
    tables are co-partitioned with their streams and silently wrong counts misroute state.
    """
    if not names:
        return []
    admin = AIOKafkaAdminClient(**admin_kwargs(cfg, request_timeout_ms=int(timeout_s * 1000)))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = await _partition_counts(admin, list(names))
        missing = [n for n in names if n not in existing]
        created: list[str] = []
        if missing:
            resp = await admin.create_topics(
                [NewTopic(n, names[n], replication) for n in missing], timeout_ms=int(timeout_s * 1000))
            for topic, code, *rest in resp.topic_errors:
                err = for_code(code) if code else None
                if err is None:
                    created.append(topic)
                elif err is not TopicAlreadyExistsError:  # a concurrent creator won the race: fine
                    msg = rest[0] if rest and rest[0] else err.__name__
                    raise BrokerError(f"cannot create topic {topic!r} ({names[topic]} partitions): {msg}")
            existing.update(await _partition_counts(admin, missing, created=True))
        wrong = {n: existing.get(n) for n, p in names.items() if existing.get(n) != p}
        if wrong:
            detail = ", ".join(f"{n} has {existing.get(n)} (expected {names[n]})" for n in wrong)
            raise BrokerError(f"topics with the wrong partition count: {detail}; delete them or fix topics.partitions")
        return created
    except (asyncio.TimeoutError, TimeoutError):
        raise BrokerError(f"creating topics timed out after {timeout_s:g} s at {cfg.bootstrap_servers}") from None
    except KafkaError as e:
        raise BrokerError(f"creating topics at {cfg.bootstrap_servers} failed ({_one_line(e)})") from None
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str],
                            created: bool = False) -> dict[str, int]:
    """{topic: partition count} for those of `names` that exist, once every partition has a leader.

    Right after a create, metadata can still miss the topic, or list it without partitions or
    leaders (producing then fails with NOT_LEADER retries): with `created`, wait until all are usable.
    """
    counts: dict[str, int] = {}
    for _ in range(100):
        topics = await admin.describe_topics(names)
        counts = {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}
        ready = all(p["error_code"] == 0 and p["leader"] >= 0
                    for t in topics if t["error_code"] == 0 for p in t["partitions"])
        if ready and all(c > 0 for c in counts.values()) and (not created or len(counts) == len(names)):
            return counts
        await asyncio.sleep(0.05)
    return counts


PARTITION_CACHE = 1 << 18  # keys per generation and partition count (two generations: <= ~55 MB)
_partitions: dict[int, tuple[dict[bytes, int], dict[bytes, int]]] = {}  # n -> (current, previous)


def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes), as the producers and Faust use it:
    aiokafka.partitioner.murmur2, the reference that key_partitions is tested against.

    Memoised: a session id is partitioned at ingest, for every changelog write, for its windows and
    by the sweep's ownership filter, and murmur2 costs ~4 us in Python. Two generations (a full
    one becomes the previous, the previous is dropped) keep the keys of live sessions: clearing
    everything at once made 87% of the lookups miss when more sessions than the cache held were
    open (bench/stream_throughput.py, 45k sessions)."""
    gens = _partitions.get(partitions)
    if gens is None:
        gens = _partitions[partitions] = ({}, {})
    cur, prev = gens
    p = cur.get(key)
    if p is None:
        p = prev.get(key)
        if p is None:
            p = (kafka_murmur2(key) & 0x7FFFFFFF) % partitions
        if len(cur) >= PARTITION_CACHE:
            _partitions[partitions] = cur, prev = {}, cur
        cur[key] = p
    return p


_M = 0x5BD1E995  # murmur2's multiplier


def key_partitions(keys: list[bytes], partitions: int) -> list[int]:
    """key_partition of every key, vectorised: murmur2 over the keys of equal length at once with
    numpy's wrapping uint32 arithmetic (~0.2 us a key in batches of thousands, ~0.5 us in hundreds,
    against ~4 us a key for the reference, aiokafka.partitioner.murmur2; tested equal to it).
    Nothing is memoised (the scorer's keys are mostly new). For processes that have numpy loaded
    anyway (the scorer): the worker does not import it (~15 MB) and uses key_partition."""
    import numpy as np

    out = [0] * len(keys)
    by_len: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        by_len.setdefault(len(k), []).append(i)
    m = np.uint32(_M)
    for n, idx in by_len.items():
        a = np.frombuffer(b"".join([keys[i] for i in idx]), dtype=np.uint8).reshape(len(idx), n)
        h = np.full(len(idx), (0x9747B28C ^ n) & 0xFFFFFFFF, dtype=np.uint32)
        n4 = n & ~3
        if n4:
            words = np.ascontiguousarray(a[:, :n4]).view("<u4")
            for j in range(n4 // 4):
                k = words[:, j] * m
                k ^= k >> np.uint32(24)
                k *= m
                h = (h * m) ^ k
        extra = n & 3
        if extra >= 3:
            h ^= a[:, n4 + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= a[:, n4 + 1].astype(np.uint32) << np.uint32(8)
        if extra:
            h = (h ^ a[:, n4].astype(np.uint32)) * m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
        for i, p in zip(idx, ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()):
            out[i] = p
    return out


async def send_batched(producer: Any, topic: str, records: Iterable[tuple]) -> list[Any]:
    """Send (partition, key, value[, headers]) records as one BatchBuilder per partition (a new one
    whenever it is full) instead of one `send()` each: `send()` costs ~40 us of Python per record (a
    future, a partition lookup, an accumulator append), a batch append a few. Order within a
    partition is kept. Returns the batches' delivery futures (await them all: every record acknowledged)."""
    by_part: dict[int, list[tuple]] = {}
    for p, k, v, *h in records:
        lst = by_part.get(p)
        item = (k, v, h[0] if h else None)
        if lst is None:
            by_part[p] = [item]
        else:
            lst.append(item)
    futures = []
    if not hasattr(producer, "create_batch"):  # a producer without batches (test fakes): one send each
        for p, items in by_part.items():
            futures += [await producer.send(topic, key=k, value=v, partition=p, **({"headers": h} if h else {}))
                        for k, v, h in items]
        return futures
    for p, items in by_part.items():
        batch = producer.create_batch()
        for k, v, h in items:
            if batch.append(key=k, value=v, timestamp=None, headers=h or []) is None:  # full: send, start another
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                if batch.append(key=k, value=v, timestamp=None, headers=h or []) is None:
                    raise ValueError(f"a record of {len(v or b'')} bytes does not fit a producer batch")
        futures.append(await producer.send_batch(batch, topic, partition=p))
    return futures
