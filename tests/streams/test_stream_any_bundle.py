"""The stream with a bundle trained here from a format file (not a shipped model), against the real
local broker, as separate processes (`logad worker`, `logad scorer`, `logad replay`):

    HDFS lines shipped as JSON ({"message": <raw line>, "host": ...}, one object per record, as
    Vector / Fluent Bit send them) + a format file with input = "json" -> `train_bundle` -> bundle
    -> worker and scorer both read LOGAD_SCORER_MODEL_DIR = that bundle; `logad replay` picks the
    bundle's format and its raw topic

(a) the stream's alerts equal `logad detect` on the same JSON file (alert ids identical);
(b) then lines the format cannot read arrive mixed with the same sessions again: the worker raises
    logad_input_mismatch{problem="unparsed"} and logs an ERROR ("wrong format or model?"), the
    scorer publishes the windows' scores but holds every alert (logad_alerts_held_total).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from logad.alerts import validate
from streams.codec import decode_scores
from tests.reliability.harness import RAW, Pipeline, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

N_LINES = 3000
FORMAT = """name = "hdfsjson"
input = "json"
log_format = '<Date> <Time> <Pid> <Level> <Component>: <Content>'
timestamp_fields = ["Date", "Time"]
timestamp_formats = ["%y%m%d %H%M%S"]
session_keys = ['(blk_-?\\d+)']

[json]
message = "message"
"""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The JSON file, its format file and a bundle trained on it (small budget: seconds)."""
    from training.train import TrainOptions, train_bundle

    d = tmp_path_factory.mktemp("shipped")
    with gzip.open(RAW, "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(N_LINES)]
    logs = d / "hdfs.jsonl"
    logs.write_bytes(b"".join(orjson.dumps({"message": line, "host": f"dn-{i % 3}"}) + b"\n"
                              for i, line in enumerate(lines)))
    fmt = d / "hdfsjson.toml"
    fmt.write_text(FORMAT, encoding="utf-8")
    bundle = d / "model"
    train_bundle(fmt, [logs], bundle, labels=RAW.parent / "HDFS_head20k_anomaly_label.csv",
                 opts=TrainOptions(max_samples=2000, min_samples=500, epochs=2, device="cpu"), progress=False)
    return {"logs": logs, "format": fmt, "bundle": bundle, "dir": d}


@pytest.fixture(scope="module")
def offline(shipped: dict[str, Path]) -> dict[str, dict]:
    from logad.config import SessionConfig
    from logad.detect_files import detect_file

    out = shipped["dir"] / "alerts.jsonl"
    detect_file(shipped["logs"], shipped["bundle"], None, out, SessionConfig(idle_timeout_s=3), device="cpu")
    alerts = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert alerts, "the trained bundle raises no alert on the file: the comparison would prove nothing"
    return {a["id"]: a for a in alerts}


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, shipped: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, tmp_path_factory.mktemp("stream"), LOGAD_SCORER_MODEL_DIR=str(shipped["bundle"]),
                 LOGAD_GUARD_MIN_LINES="50", LOGAD_GUARD_WINDOW_LINES="300")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_create_topics_all_makes_the_bundles_raw_topic(pipeline: Pipeline, shipped: dict[str, Path]) -> None:
    """`logad create-topics` (default --source all): the configured bundle's source and every
    topics.raw_by_source name; a source named on the command line may be any name."""
    import subprocess
    import sys

    from tests.reliability.harness import ROOT

    env = {**pipeline.env, "LOGAD_TOPICS_RAW_BY_SOURCE": f"other={pipeline.id}.other"}
    out = subprocess.run([sys.executable, "-m", "logad_cli.main", "create-topics"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split("\t", 1) for line in out.stdout.strip().splitlines())
    assert lines[pipeline.raw].startswith("1 partition") and lines[f"{pipeline.id}.other"].startswith("1 partition")
    assert "(created)" in lines[f"{pipeline.id}.other"]
    assert lines[pipeline.settings.topics.windows].startswith(f"{pipeline.settings.topics.partitions} partition")


def scores_and_alerts(p: Pipeline) -> tuple[list[dict], list[dict]]:
    t = p.settings.topics
    return ([s for r in p.read(t.scores) for s in decode_scores(r.value)],
            [orjson.loads(r.value) for r in p.read(t.alerts)])


def test_stream_with_a_trained_json_bundle_equals_offline(pipeline: Pipeline, shipped: dict[str, Path],
                                                          offline: dict[str, dict]) -> None:
    p = pipeline
    t0 = time.perf_counter()
    out = p.wait_replay(p.start_replay("--max", file=shipped["logs"]))  # format + topic from the bundle
    assert f"published {N_LINES} lines" in out, out
    p.wait_drained(timeout=90)
    print(f"\nany-bundle stream: {N_LINES} JSON lines replayed and drained in {time.perf_counter() - t0:.1f} s")
    scores, alerts = scores_and_alerts(p)
    by_id = {a["id"]: a for a in alerts}
    assert set(by_id) == set(offline), (f"only stream: {sorted(set(by_id) - set(offline))[:5]}, "
                                        f"only offline: {sorted(set(offline) - set(by_id))[:5]}\n{p.logs()}")
    for a in alerts:
        validate(a)
    assert {s["data"]["model_version"] for s in scores} == {next(iter(offline.values()))["data"]["model_version"]}
    assert not p.read(p.settings.topics.dead_letter)  # every JSON line parsed; no vocab mismatch


def test_stream_holds_alerts_when_the_input_does_not_fit(pipeline: Pipeline, shipped: dict[str, Path],
                                                         offline: dict[str, dict]) -> None:
    """Two plain-text lines (not JSON: this format cannot read them) per JSON line: the guard trips,
    the sessions are scored again, but no alert goes out."""
    p = pipeline
    scores_before, alerts_before = scores_and_alerts(p)
    assert alerts_before, "run after the equality test (it fills the topics)"
    with gzip.open(RAW, "rb") as f:
        text = [next(f).rstrip(b"\n") for _ in range(N_LINES)]
    mixed = shipped["dir"] / "mixed.log"
    with open(shipped["logs"], "rb") as f:
        mixed.write_bytes(b"".join(text[i] + b"\n" + text[-1 - i] + b"\n" + line
                                   for i, line in enumerate(f)))
    p.wait_replay(p.start_replay("--max", "--lines-per-record", "3", file=mixed))
    p.wait_drained(timeout=90)
    worker = p.read_metrics("worker")
    key = next((k for k in worker if k.startswith("logad_input_mismatch{") and 'problem="unparsed"' in k), None)
    assert key is not None and worker[key] == 1.0, {k: v for k, v in worker.items() if "input" in k}
    rate = [v for k, v in worker.items() if k.startswith("logad_input_unparsed_rate{") and p.raw in k]
    assert rate and rate[0] > 0.5, rate
    wait_for(lambda: "wrong format or model?" in p.worker.text(), 10, "the worker's ERROR log")
    scorer = p.read_metrics("scorer")
    held = scorer.get('logad_alerts_held_total{reason="unparsed"}', 0)
    scores_after, alerts_after = scores_and_alerts(p)
    assert len(alerts_after) == len(alerts_before), "an alert went out while the input did not fit"
    assert held >= len(offline), (held, len(offline))  # every anomalous window again, held
    assert len(scores_after) >= 2 * len(scores_before) - 5  # scored and published all the same
    dead: list[Any] = [orjson.loads(r.value) for r in p.read(p.settings.topics.dead_letter)]
    assert {d["reason"] for d in dead} == {"bad_json"} and len(dead) == 2 * N_LINES
