"""`logad train` from raw logs and a format file to a bundle every consumer takes; guard rails."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from logad.artifacts import bundle_format, load_bundle
from logad.detect_files import detect_paths
from logad.errors import ConfigError
from logad.guard import InputMismatch
from training.train import TrainOptions, train_bundle

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
FORMAT = ROOT / "formats" / "examples" / "hdfs.toml"
LABELS = DATA / "hdfs" / "HDFS_head20k_anomaly_label.csv"
FAST = TrainOptions(max_samples=1500, min_samples=500, epochs=2, device="cpu")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The first 8,000 lines of the bundled HDFS sample, split over two files in a folder (gzip + plain)."""
    d = tmp_path_factory.mktemp("logs")
    with gzip.open(DATA / "hdfs" / "HDFS_head20k.log.gz", "rt") as f:
        lines = [next(f) for _ in range(8000)]
    with gzip.open(d / "part1.log.gz", "wt") as g:
        g.writelines(lines[:4000])
    (d / "part2.log").write_text("".join(lines[4000:]), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def bundle(sample: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("model") / "myhdfs"
    report = train_bundle(FORMAT, [sample], out, labels=LABELS, opts=FAST, progress=False)
    return out, report


def test_bundle_describes_itself(bundle: tuple[Path, dict]) -> None:
    out, report = bundle
    for f in ("weights.safetensors", "manifest.json", "template_vocab.json", "thresholds.json",
              "reference.safetensors", "format.toml", "report.json", "report.md", "data/train.parquet"):
        assert (out / f).is_file(), f
    assert not (out / ".work").exists()
    assert (out / "format.toml").read_text() == FORMAT.read_text()  # verbatim
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["log_format"]["name"] == "myhdfs" and manifest["log_format"]["sha256"]
    assert bundle_format(out, "myhdfs").session_rule == "session_keys"
    b = load_bundle(out)
    assert b.vocab.format_name == "myhdfs" and len(b.vocab) > 10
    # labelled anomalous blocks never train; the report compares with baselines on the test split
    assert report["counts"]["train"]["anomaly"] == 0
    assert report["labels"]["labelled_anomaly"] > 0
    assert report["test"]["anomaly"] > 0 and "baselines" in report["test"]
    assert set(report["seconds"]) >= {"read_s", "templates_s", "train_s", "calibrate_s", "total_s"}
    assert "## Test split" in (out / "report.md").read_text()


def test_detect_reads_the_bundles_format_and_writes_sessions(bundle: tuple[Path, dict], sample: Path,
                                                            tmp_path: Path) -> None:
    out, _ = bundle
    alerts, sessions = tmp_path / "alerts.jsonl", tmp_path / "sessions.csv"
    summary = detect_paths([sample], out, out=alerts, sessions_out=sessions, device="cpu")
    rows = list(csv.DictReader(sessions.open()))
    assert rows and set(rows[0]) == {"session_id", "score", "is_anomaly"}
    assert len(rows) == summary["sessions"] and len({r["session_id"] for r in rows}) == len(rows)
    flagged = {r["session_id"] for r in rows if r["is_anomaly"] == "1"}
    assert len(flagged) == summary["anomalous_sessions"]
    alerted = {json.loads(x)["subject"] for x in alerts.read_text().splitlines()}
    assert alerted == flagged
    assert all((float(r["score"]) > 0) == (r["is_anomaly"] == "1") for r in rows)
    assert summary["format"] == "myhdfs" and summary["input"]["problem"] == ""


def test_wrong_format_and_wrong_model_fail_with_rates(bundle: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = bundle
    # lines of another system: the bundle's format does not parse them
    with pytest.raises(InputMismatch, match=r"100\.0% of 2000 lines did not parse"):
        detect_paths([DATA / "loghub_2k" / "OpenStack" / "OpenStack_2k.log"], out, device="cpu")
    # a format that parses them, but the model has no templates for them
    loose = tmp_path / "loose.toml"
    loose.write_text("name = 'loose'\nlog_format = '<File> <Date> <Time> <Content>'\nsession_keys = ['(req-\\S+)']\n")
    with pytest.raises(InputMismatch, match="match no template"):
        detect_paths([DATA / "loghub_2k" / "OpenStack" / "OpenStack_2k.log"], out, log_format=str(loose), device="cpu")


def test_cli_exit_codes(bundle: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = bundle
    cmd = [sys.executable, "-m", "logad_cli.main", "detect", str(DATA / "loghub_2k" / "OpenStack" / "OpenStack_2k.log"),
           "--model", str(out), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "did not parse" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_refuses_what_it_cannot_use(tmp_path: Path, sample: Path) -> None:
    parse_only = tmp_path / "p.toml"
    parse_only.write_text("name = 'p'\nlog_format = '<Date> <Time> <Pid> <Level> <Component>: <Content>'\n")
    with pytest.raises(ConfigError, match="no session rule"):
        train_bundle(parse_only, [sample], tmp_path / "m", opts=FAST, progress=False)
    with pytest.raises(InputMismatch, match="did not parse"):
        train_bundle(FORMAT, [DATA / "loghub_2k" / "OpenStack" / "OpenStack_2k.log"], tmp_path / "m", opts=FAST,
                     progress=False)
    few = tmp_path / "few.log"
    few.write_text("".join(open(sample / "part2.log").readlines()[:5]))
    with pytest.raises(ConfigError, match="normal sessions found"):
        train_bundle(FORMAT, [few], tmp_path / "m", opts=FAST, progress=False)
    (tmp_path / "notabundle").mkdir()
    (tmp_path / "notabundle" / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a model bundle"):
        train_bundle(FORMAT, [sample], tmp_path / "notabundle", opts=FAST, progress=False)


def test_fine_tune_from_the_shipped_model(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    report = train_bundle(FORMAT, [sample / "part2.log"], out, init=ROOT / "artifacts" / "models" / "hdfs",
                          opts=FAST, progress=False)
    assert report["training"]["init"].endswith("hdfs")
    b = load_bundle(out)
    assert b.rule == load_bundle(ROOT / "artifacts" / "models" / "hdfs").rule


def test_prepare_raw_writes_the_splits(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    cmd = [sys.executable, "-m", "logad_cli.main", "prepare", "raw", "--raw", str(sample), "--format", str(FORMAT),
           "--labels", str(LABELS), "--out", str(out), "--split", "hash"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert all((out / f).is_file() for f in ("train.parquet", "val.parquet", "test.parquet", "template_vocab.json"))
    assert "sha256" in json.loads((out / "split.json").read_text())["split_rule"]
    r = subprocess.run(cmd[:5] + ["--raw", str(sample)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "needs --raw PATH, --format FILE and --out FOLDER" in r.stderr


def test_alerts_quote_their_raw_lines(bundle: tuple[Path, dict], sample: Path, tmp_path: Path) -> None:
    out, _ = bundle
    log = sample / "part2.log"
    alerts = tmp_path / "alerts.jsonl"
    s = detect_paths([log], ROOT / "artifacts" / "models" / "hdfs", out=alerts, evidence=3, device="cpu")
    assert s["alerts"] > 0
    text = log.read_text().splitlines()
    for doc in map(json.loads, alerts.read_text().splitlines()):
        ev = doc["data"]["evidence"]
        assert 1 <= len(ev) <= 3 and doc["data"]["severity"] in ("critical", "error", "warning")
        assert doc["data"]["summary"].startswith(f"hdfs session {doc['subject']}:")
        for e in ev:
            assert e["position"]["file"] == str(log)
            assert text[e["position"]["line"] - 1] == e["line"]  # verbatim, 1-based line numbers
            assert doc["subject"] in e["line"]  # a line of this session


def test_gap_split_sessions_quote_only_their_own_lines(tmp_path: Path) -> None:
    from logad.detect_files import Positions, windows_of_events
    from logad.session_rules import SessionRules, Sessionizer
    from logad.windows import WindowRule

    sz = Sessionizer("t", SessionRules(rule=WindowRule(4, 2), gap_s=10.0))
    events = [(float(t), "f", i, ("a",), 3) for i, t in enumerate([0, 1, 2, 100, 101])]
    got = list(windows_of_events(events, sz, Positions()))
    closed = [(w.reason, [ln for _, ln in pos]) for w, pos in got if w.final]
    assert closed == [("gap", [0, 1, 2]), ("end", [3, 4])]


def test_templates_match_reads_with_the_bundles_format(bundle: tuple[Path, dict], sample: Path) -> None:
    out, _ = bundle
    r = subprocess.run([sys.executable, "-m", "logad_cli.main", "templates", "match", str(sample / "part2.log"),
                        "--vocab", str(out / "template_vocab.json")], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(rows) == 4000 and all(k.startswith("blk_") and t.startswith("T") for k, t in rows)


def test_init_keeps_the_template_ids_of_its_vocab(bundle: tuple[Path, dict], tmp_path: Path) -> None:
    """`--init` of a bundle trained with the same format: the new vocab is an id-extension of its
    vocab (what a running worker picks up without a restart); of a bundle with other masking: a
    fresh vocab and a warning saying so."""
    from logad.format_files import load_format
    from streams.live_vocab import extension_problem
    from training.train import init_vocab

    out, _ = bundle
    more = tmp_path / "more.log"
    with gzip.open(DATA / "hdfs" / "HDFS_head20k.log.gz", "rt") as f:
        more.write_text("".join(line for i, line in enumerate(f) if i >= 8000))
    report = train_bundle(FORMAT, [more], tmp_path / "next", init=out, opts=FAST, progress=False)
    old, new = load_bundle(out).vocab, load_bundle(tmp_path / "next").vocab
    assert extension_problem(old, new) == "" and new.keys[:len(old)] == old.keys
    assert not [w for w in report["warnings"] if "--init" in w]
    seed, why = init_vocab(ROOT / "artifacts" / "models" / "hdfs", load_format(FORMAT))
    assert seed is None and "other masking" in why and "restart" in why
