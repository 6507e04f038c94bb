"""`logad alerts`: print the alerts topic, readable or as raw JSON; and a reader shared with evaluation.

    alerts topic (key session id, value alert JSON) -> one block per alert:
      <time>  ALERT  <session>  window [start, end) closed by <reason>  score <combined>  model <version>
          why: max_nll > 6.16, ...
          surprising: #12 p=0.0003 "Receiving block <*> src: <*> dest: <*>" (expected: "..." 0.91)
          line #12 logs.hdfs/0@1234:0: 081109 203615 148 INFO dfs.DataNode$PacketResponder: ...   (evidence)
No consumer group: reading never moves anyone's offsets. Duplicates (at-least-once delivery) are
printed once per run, deduped by alert id.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import IO, Any

import orjson

from logad.config import Settings


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """Partition numbers of `topic` ([] when it does not exist)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka_clients import admin_kwargs

    admin = AIOKafkaAdminClient(**admin_kwargs(settings.kafka))
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in meta["partitions"]) if meta["error_code"] == 0 else []
    finally:
        await admin.close()


async def read_topic(settings: Settings, topic: str, *, from_beginning: bool = True, follow: bool = False,
                     idle_s: float = 1.0) -> AsyncIterator[Any]:
    """Records of every partition of `topic`, without a consumer group.

    Not following: stops at the end offsets taken at start. Following: runs until cancelled."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka_clients import check_broker, consumer_kwargs

    await check_broker(settings.kafka)
    parts = await topic_partitions(settings, topic)
    while not parts and follow:  # following a topic nobody created yet: wait for it
        await asyncio.sleep(1.0)
        parts = await topic_partitions(settings, topic)
    if not parts:
        return
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings.kafka, group_id=None))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps)
        while True:
            if not follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(p >= end[tp] for p, tp in zip(positions, tps)):
                    return
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for recs in batch.values():
                for r in recs:
                    yield r
    finally:
        await consumer.stop()


def _fmt_time(event: dict) -> str:
    return str(event.get("time", ""))[:19].replace("T", " ")


def render(event: dict) -> str:
    """A readable block for one alert envelope."""
    d = event.get("data", {})
    w = d.get("window", {})
    score = d.get("scores", {}).get("combined")
    head = (f"{_fmt_time(event)}  ALERT  {event.get('subject', '?')}  window [{w.get('start')}, {w.get('end')}) "
            f"closed by {w.get('reason')}  lines {d.get('line_count')}"
            + (f"  score {score:+.2f}" if isinstance(score, (int, float)) else "")
            + f"  model {d.get('model_version')}  id {str(event.get('id', ''))[:12]}")
    lines = [head]
    if d.get("reasons"):
        lines.append("    why: " + ", ".join(d["reasons"][:4]))
    for s in d.get("surprising", [])[:3]:
        exp = s.get("expected") or []
        top = f' (expected: "{exp[0]["template"][:60]}" {exp[0]["prob"]:.2f})' if exp else ""
        lines.append(f'    surprising: #{s.get("index")} p={s.get("prob", 0):.4f} "{str(s.get("template"))[:80]}"{top}')
    for e in (d.get("evidence") or [])[:3]:
        if isinstance(e, dict):
            p = e.get("position") or {}
            where = (f'{p.get("topic")}/{p.get("partition")}@{p.get("offset")}:{p.get("line")}' if "offset" in p
                     else f'{p.get("file")}:{p.get("line")}')
            text = str(e.get("line", "")).split("\n", 1)[0]
            lines.append(f'    line #{e.get("index")} {where}: {text[:160]}')
    return "\n".join(lines)


async def print_alerts(settings: Settings, topic: str, *, follow: bool, from_beginning: bool, as_json: bool,
                       out: IO[str] = sys.stdout) -> int:
    """Print alerts until the end (or forever with follow); returns how many distinct alerts."""
    seen: set[str] = set()
    async for r in read_topic(settings, topic, from_beginning=from_beginning or not follow, follow=follow):
        try:
            event = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            out.write(f"(undecodable record at {r.topic}/{r.partition}@{r.offset})\n")
            continue
        aid = event.get("id")
        if aid in seen:
            continue
        seen.add(aid)
        out.write((r.value.decode("utf-8", "replace") if as_json else render(event)) + "\n")
        out.flush()
    return len(seen)
