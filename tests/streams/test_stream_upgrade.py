"""An upgrade mid-replay (real broker; `logad worker`, `logad scorer`, `logad replay` as processes).

Half-way through the HDFS sample the software is "upgraded": one statement is reworded beyond
drift matching ("PacketResponder N for block B terminating" -> "... now done and gone"). The worker
gives its lines a pending id, the scorer alerts on the first sessions that hold it, promotes it
after drift.promote_after sessions that look normal apart from it (written to the decisions file),
and from then on those sessions pass: nothing restarted, and the stream decides like `logad detect`
on the same file (the same alerts but for which normal-looking sessions were the promoting ones: the
order windows reach the scorer in is not the file's).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from logad.config import DriftConfig
from logad.template_decisions import read_decisions
from tests.reliability.harness import MODEL, RAW, Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

OLD, NEW = " terminating", " now done and gone"


def upgraded(tmp: Path, n: int = 6000) -> Path:
    """The first n lines of the sample, the second half of them with the statement reworded."""
    with gzip.open(RAW, "rt") as f:
        lines = [line for _, line in zip(range(n), f)]
    out = tmp / "upgrade.log"
    out.write_text("".join(lines[: n // 2]) + "".join(line.replace(OLD, NEW) for line in lines[n // 2:]))
    return out


def pending_only(alert: dict) -> bool:
    return all(r.startswith("pending statement") for r in alert["data"]["reasons"])


def test_a_reworded_statement_alerts_until_promoted(kafka_bootstrap: str, tmp_path: Path) -> None:
    from logad.detect_files import detect_paths

    log = upgraded(tmp_path)
    n_promote = DriftConfig().promote_after
    offline_out = tmp_path / "offline.jsonl"
    offline = detect_paths([log], MODEL, out=offline_out, evidence=0,
                           drift=DriftConfig(decisions_file=str(tmp_path / "offline_decisions.jsonl")))
    (row,) = offline["pending"]
    assert row["status"] == "promote"
    expected = [orjson.loads(x) for x in offline_out.read_bytes().splitlines()]
    assert sum(map(pending_only, expected)) == n_promote  # the promoting sessions alerted, then none

    p = Pipeline(kafka_bootstrap, tmp_path)
    try:
        p.start()
        p.wait_replay(p.start_replay("--max", file=log))
        p.wait_drained()
        got = {a["id"]: a for a in (orjson.loads(r.value) for r in p.read(p.settings.topics.alerts))}
    finally:
        p.stop()
    decided = read_decisions(tmp_path / "template_decisions.jsonl")  # the harness's drift.decisions_file
    assert decided[row["key"]].action == "promote" and decided[row["key"]].by == "logad", decided
    alerts = list(got.values())
    assert sum(map(pending_only, alerts)) == n_promote, [a["data"]["reasons"] for a in alerts]
    assert {a["id"] for a in alerts if not pending_only(a)} == {a["id"] for a in expected if not pending_only(a)}
    assert not (MODEL / "template_decisions.jsonl").exists()  # the shipped bundle is left as it was
