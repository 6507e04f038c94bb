"""A no-op Faust agent over a raw topic (the per-record framework cost, for bench/stream_throughput.py).

    python bench/_faust_noop.py worker -l warning     (NOOP_BOOTSTRAP, NOOP_TOPIC, NOOP_RECORDS, NOOP_OUT)

Counts records; when NOOP_RECORDS have arrived, writes "<records> <seconds from the first>" to
NOOP_OUT and stops the worker. raw bytes in, nothing out, no table: what every Faust agent pays
(on uvloop, as `logad worker` runs).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from logad.config import KafkaConfig  # noqa: E402
from streams.kafka_clients import faust_settings  # noqa: E402

env = os.environ
N = int(env["NOOP_RECORDS"])
app = faust.App(f"noop-{env['NOOP_TOPIC']}", **faust_settings(KafkaConfig(bootstrap_servers=env["NOOP_BOOTSTRAP"])),
                datadir=env.get("NOOP_DATADIR", "/tmp/logad-noop"), store="memory://", web_enabled=False,
                consumer_auto_offset_reset="earliest", broker_session_timeout=6.0, broker_heartbeat_interval=1.0)
source = app.topic(env["NOOP_TOPIC"], key_serializer="raw", value_serializer="raw", internal=False)
state = {"n": 0, "t0": 0.0}


@app.agent(source)
async def noop(stream: faust.StreamT) -> None:
    async for _ in stream.events():
        if state["n"] == 0:
            state["t0"] = time.perf_counter()
        state["n"] += 1
        if state["n"] == N:
            Path(env["NOOP_OUT"]).write_text(f"{N} {time.perf_counter() - state['t0']}")
            os._exit(0)  # noqa: SLF001 (done; no graceful shutdown needed for a measurement)


if __name__ == "__main__":
    from streams.worker import use_uvloop

    use_uvloop()  # as `logad worker` runs: same event loop, comparable ceiling
    app.main()
