"""A minimal Faust app for the platform tests: counts records per key in a changelogged Table.

Run as a subprocess (`python -m tests.streams.faust_app_counter worker -l warning`) so a test can
SIGKILL it. Configured by COUNTER_* environment variables (not LOGAD_*: those are strict settings).

in  (key=utf-8 bytes, value=anything) --> agent: counts[key] = [n, last_offset] --> out (key, "key:offset:n")

The table stores the source offset it last applied, so a record re-delivered after a crash (its
offset was not committed, but its changelog write was) is not counted twice: per-key counts stay
exact under at-least-once, while outputs may repeat. Same key -> same partition -> rising offsets.
"""

from __future__ import annotations

import asyncio
import os

import faust

from logad.config import KafkaConfig
from streams.kafka_clients import faust_settings

env = os.environ
PARTITIONS = int(env["COUNTER_PARTITIONS"])
SLEEP_S = float(env.get("COUNTER_SLEEP_MS", "0")) / 1000.0

app = faust.App(
    env["COUNTER_APP_ID"],
    **faust_settings(KafkaConfig(bootstrap_servers=env["COUNTER_BOOTSTRAP"])),
    datadir=env["COUNTER_DATADIR"],
    store="memory://",  # state lives only in the changelog: a restart must recover from it
    processing_guarantee=env.get("COUNTER_GUARANTEE", "at_least_once"),
    broker_commit_interval=float(env.get("COUNTER_COMMIT_INTERVAL_S", "1.0")),
    topic_partitions=PARTITIONS,
    # A SIGKILLed member stays in the group until its session times out (Faust's default: 60 s) and
    # the restarted worker waits for that rebalance; 6 s is the broker's minimum session timeout.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
# Raw bytes in: a typed topic that cannot decode a record crashes the agent.
source = app.topic(env["COUNTER_SOURCE"], key_serializer="raw", value_serializer="raw",
                   partitions=PARTITIONS, internal=False)
out = app.topic(env["COUNTER_OUT"], key_type=str, value_type=str, partitions=PARTITIONS, internal=False)
counts = app.Table("counts", default=lambda: [0, -1], partitions=PARTITIONS)


@app.agent(source)
async def count(stream: faust.StreamT) -> None:
    async for event in stream.events():
        key, offset = event.key.decode(), event.message.offset
        n, last = counts[key]
        if offset > last:
            n += 1
            counts[key] = [n, offset]  # reassign: in-place mutation is not persisted
        await out.send(key=key, value=f"{key}:{offset}:{n}")
        if SLEEP_S:
            await asyncio.sleep(SLEEP_S)


if __name__ == "__main__":
    app.main()
