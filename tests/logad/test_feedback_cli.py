"""`logad feedback` as a user runs it: --normal / --anomaly / --undo against an alerts file, the
verdicts appended to the feedback file (scorer.feedback_file), what it says when a verdict
replaces another, and bad input as one `error:` line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from logad.alerts import make_event, vocab_tag
from logad.feedback import read_feedback
from logad.records import Window, WindowScore

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "artifacts/models/hdfs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from logad.templates import TemplateVocab

    tmp = tmp_path_factory.mktemp("feedback")
    vocab = TemplateVocab.load(MODEL / "template_vocab.json")
    tag = vocab_tag(vocab)

    def alert(session: str, ids: tuple[int, ...], vocab_: str = tag) -> dict:
        w = Window("hdfs", session, 0, ids, 0, 1.0, 2.0, "idle", True, len(ids))
        return make_event(WindowScore(w, {"combined": 3.0}, True, ("count_tail 9 > 2",)), "hdfs-1", {}, vocab=vocab_)

    alerts = [alert("blk_1", (7, 7, 24)), alert("blk_2", (7, 7, 24)), alert("blk_3", (5, 6), "0" * 16)]
    old = alert("blk_4", (5,))
    del old["data"]["window"]["ids"]
    path = tmp / "alerts.jsonl"
    path.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in [*alerts, old]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
    env.update(LOGAD_SCORER_FEEDBACK_FILE=str(tmp / "fb.jsonl"), USER="ann")
    return {"tmp": tmp, "alerts": alerts, "old": old, "file": path, "env": env, "fb": tmp / "fb.jsonl"}


def logad(setup: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logad_cli.main", "feedback", *args, "--model", str(MODEL)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=setup["env"])


def test_normal_anomaly_undo(setup: dict) -> None:
    a1, a2 = setup["alerts"][0]["id"], setup["alerts"][1]["id"]
    r = logad(setup, a1, "--normal", "--alerts", str(setup["file"]), "--why", "nightly retry")
    assert r.returncode == 0, r.stderr
    assert f"recorded the normal verdict on alert {a1} (session blk_1, by ann" in r.stdout
    (v,) = read_feedback(setup["fb"]).standing
    assert (v.ids, v.n_context, v.by, v.why, v.model_version) == ((7, 7, 24), 0, "ann", "nightly retry", "hdfs-1")
    assert v.at.endswith("Z") and v.templates[24][0] == "E22"
    # the same window in another session, confirmed anomalous: it replaces the normal verdict
    r = logad(setup, a2, "--anomaly", "--alerts", str(setup["file"]), "--by", "bob")
    assert r.returncode == 0, r.stderr
    assert f"this revokes the normal verdict on alert {a1}" in r.stdout
    from logad.templates import TemplateVocab

    vocab = TemplateVocab.load(MODEL / "template_vocab.json")
    assert read_feedback(setup["fb"]).overlay(vocab).normal == frozenset()
    r = logad(setup, a2, "--undo")
    assert r.returncode == 0 and f"revoked the anomaly verdict on alert {a2}" in r.stdout, r.stderr
    assert read_feedback(setup["fb"]).overlay(vocab).normal == {((7, 7, 24), 0)}  # a1's verdict stands again
    assert [d["op"] for d in map(orjson.loads, setup["fb"].read_bytes().splitlines())] == ["verdict", "verdict", "undo"]


@pytest.mark.parametrize("args, message", [
    (["{a2}", "--undo"], "no verdict on alert {a2} is in force"),
    (["{a1}", "--normal"], "say where the alert is: --alerts FILE or --bootstrap SERVERS"),
    (["{a1}", "--normal", "--anomaly", "--alerts", "{file}"], "give exactly one of --normal, --anomaly, --undo"),
    (["0" * 32, "--normal", "--alerts", "{file}"], "alert 00000000000000000000000000000000 is not in"),
    (["{a3}", "--normal", "--alerts", "{file}"], "was scored under vocab '0000000000000000'"),
    (["{old}", "--normal", "--alerts", "{file}"], "carries no window ids"),
    (["{a1}", "--normal", "--alerts", "{bad}"], "line 2: not JSON"),
    (["{a1}", "--normal", "--alerts", "{tmp}/nope.jsonl"], "nope.jsonl: no such file"),
])
def test_bad_input_is_one_error_line(setup: dict, args: list[str], message: str) -> None:
    bad = setup["tmp"] / "bad.jsonl"
    bad.write_bytes(orjson.dumps(setup["alerts"][0]) + b"\nnot json\n")
    names = {"a1": setup["alerts"][0]["id"], "a2": "f" * 32, "a3": setup["alerts"][2]["id"],
             "old": setup["old"]["id"], "file": setup["file"], "bad": bad, "tmp": setup["tmp"]}
    before = setup["fb"].read_bytes() if setup["fb"].exists() else b""
    r = logad(setup, *(a.format(**names) for a in args))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message.format(**names) in r.stderr
    assert (setup["fb"].read_bytes() if setup["fb"].exists() else b"") == before  # nothing written
