"""Feedback and model rollout in the running stream (real broker; `logad worker`, `logad scorer`,
`logad replay`, `logad feedback` as processes):

(a) a replay, `logad feedback ID --normal` on one of its alerts (found on the alerts topic), the
    same replay again: that window does not alert again, every other alert does;
(b) the bundle folder replaced (a new weights file: a new model version, same vocab) while windows
    flow: every window scored once, those scored before the swap under the old version and those
    after under the new one, and logad_model_info names the new version.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from logad.alerts import validate
from streams.codec import decode_scores
from tests.reliability.harness import MODEL, RAW, ROOT, Pipeline, wait_for
from tests.streams.test_scorer_rollout import restamp

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

FAST_RELOAD = {"LOGAD_SCORER_RELOAD_EVERY_S": "0.5"}


def head(tmp: Path, n: int) -> Path:
    """The first n lines of the HDFS sample (sessions whose alerts are all in them)."""
    out = tmp / f"head{n}.log"
    with gzip.open(RAW, "rt") as f:
        out.write_text("".join(line for _, line in zip(range(n), f)))
    return out


def alert_records(p: Pipeline) -> list[Any]:
    return p.read(p.settings.topics.alerts)


def pattern(a: dict) -> tuple:
    w = a["data"]["window"]
    return tuple(w["ids"]), w["n_context"]


def test_feedback_normal_stops_that_windows_alert(kafka_bootstrap: str, tmp_path: Path) -> None:
    log = head(tmp_path, 6000)
    p = Pipeline(kafka_bootstrap, tmp_path, LOGAD_SCORER_FEEDBACK_FILE=str(tmp_path / "feedback.jsonl"), **FAST_RELOAD)
    try:
        p.start()
        p.wait_replay(p.start_replay("--max", file=log))
        p.wait_drained()
        first = alert_records(p)
        alerts = [orjson.loads(r.value) for r in first]
        assert len({pattern(a) for a in alerts}) > 1, "one alerting window pattern: nothing to keep unchanged"
        for a in alerts:
            validate(a)
        # the smallest window: a person looked at it and says it is normal
        picked = min(alerts, key=lambda a: len(a["data"]["window"]["ids"]))
        r = subprocess.run([sys.executable, "-m", "logad_cli.main", "feedback", picked["id"], "--normal",
                            "--bootstrap", kafka_bootstrap, "--topic", p.settings.topics.alerts, "--by", "ann",
                            "--why", "known retry", "--model", str(MODEL)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT, env=p.env)
        assert r.returncode == 0 and "recorded the normal verdict" in r.stdout, r.stderr
        wait_for(lambda: p.metrics("scorer").get('logad_model_reloads_total{what="feedback"}') == 1.0, 30,
                 "the scorer to apply the feedback", on_timeout=p.logs)
        end = {}
        for rec in first:
            end[rec.partition] = max(end.get(rec.partition, -1), rec.offset)
        p.wait_replay(p.start_replay("--max", file=log))  # the same sessions again
        p.wait_drained()
        again = [orjson.loads(r.value) for r in alert_records(p) if r.offset > end.get(r.partition, -1)]
    finally:
        p.stop()
    assert again, p.logs()
    gone = {a["id"] for a in alerts if pattern(a) == pattern(picked)}
    assert picked["id"] in gone
    assert {a["id"] for a in again} == {a["id"] for a in alerts} - gone  # the same sessions, the same ids


def test_bundle_swapped_while_windows_flow(kafka_bootstrap: str, tmp_path: Path) -> None:
    folder = tmp_path / "bundles" / "hdfs"
    shutil.copytree(MODEL, folder)
    p = Pipeline(kafka_bootstrap, tmp_path, LOGAD_SCORER_MODEL_DIR=str(folder), **FAST_RELOAD)
    try:
        p.start()
        old = p.read_metrics("scorer")
        replay = p.start_replay("--rate", "1500")
        wait_for(lambda: p.metrics("scorer").get("logad_scorer_windows_total", 0) >= 100, 60,
                 "windows to flow", on_timeout=p.logs)
        assert replay.poll() is None, "the replay ended before the swap: the test would prove nothing"
        sha, weights = restamp(MODEL, folder, "v2")  # copied in as a copy goes: manifest first, weights last
        time.sleep(0.6)
        shutil.move(weights, folder / "weights.safetensors")
        p.wait_replay(replay)
        p.wait_drained()
        metrics = p.read_metrics("scorer")
        sent = p.windows_in_kafka()  # what the worker sent to be scored
        score_recs = p.read(p.settings.topics.scores)
        alerts = [orjson.loads(r.value) for r in alert_records(p)]
    finally:
        p.stop()
    new_version = f"hdfs-{sha[:12]}"
    old_version = next(k for k in old if k.startswith("logad_model_info")).split('version="')[1].split('"')[0]
    assert old_version != new_version
    assert any(k.startswith("logad_model_info") and f'version="{new_version}"' in k for k in metrics), metrics
    assert not any(k.startswith("logad_model_info") and old_version in k for k in metrics)
    assert metrics.get('logad_model_reloads_total{what="bundle"}') == 1.0
    # every window sent scored once: one envelope id per window (a re-delivery repeats the same id;
    # a window scored under both versions would have two)
    scored: dict[tuple, set[str]] = {}
    stamps: dict[str, list[int]] = {old_version: [], new_version: []}
    for r in score_recs:
        for s in decode_scores(r.value):
            w = s["data"]["window"]
            scored.setdefault((s["subject"], w["start"], w["end"], s["data"]["first_ts"]), set()).add(s["id"])
            stamps[s["data"]["model_version"]].append(r.timestamp)
    assert len(scored) == sent and all(len(ids) == 1 for ids in scored.values())
    assert stamps[old_version] and stamps[new_version], "no window on one side of the swap"
    assert max(stamps[old_version]) <= min(stamps[new_version])  # one swap, between two batches
    assert {a["data"]["model_version"] for a in alerts} <= {old_version, new_version}
