"""The offline pipeline end to end on a tiny budget: prepare -> pretrain -> calibrate -> evaluate ->
score -> early detection, plus fine-tuning with a resized vocab. Checks wiring and contracts, not
accuracy (the shipped models' figures are in artifacts/metrics/)."""

import csv
import gzip

import orjson
import pytest

from logad.artifacts import load_bundle
from logad.detector import Detector
from logad.errors import ArtifactError
from training.calibrate import calibrate
from training.data import load_split
from training.datasets import prepare_hdfs, prepare_openstack
from training.early import early_report
from training.evaluate import evaluate, evaluate_file, score_file
from training.loop import TrainConfig
from training.pretrain import checkpoint_for_epochs, finetune, pretrain

TINY = dict(n_layer=1, n_head=2, n_embd=16, dropout=0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    prepare_hdfs(root / "hdfs_pretrain")
    prepare_openstack(root / "openstack_finetune")
    cfg = TrainConfig(max_samples=1536, batch_size=32, eval_every=512, checkpoint_every=512, warmup_samples=64,
                      device="cpu")
    pretrain(root / "hdfs_pretrain", root / "models/hdfs", root / "ck/hdfs", TINY, cfg,
             metrics_dir=root / "metrics/hdfs", extra_checkpoint_epochs=0.1)
    calibrate(root / "models/hdfs", root / "hdfs_pretrain", device="cpu")
    return root


def test_pretrain_writes_sample_checkpoints_and_diagnostics(run):
    names = sorted(p.name for p in (run / "ck/hdfs/checkpoints").iterdir())
    assert "checkpoint_512" in names and "checkpoint_1536" in names
    diag = orjson.loads((run / "metrics/hdfs/training_diagnostics.json").read_bytes())
    assert set(diag["test"]["topk_accuracy"]) == {"top1", "top3", "top5", "top10"}
    assert diag["coverage"]["val"]["unseen_template_rate"] > 0  # val holds anomalies with unseen events
    assert (run / "metrics/hdfs/training_loss.png").stat().st_size > 1000
    m = load_bundle(run / "models/hdfs").manifest
    assert m["data_hashes"]["train"] and m["train_config"]["max_samples"] == 1536 and m["git_commit"]


def test_evaluate_reports_model_and_baselines(run):
    r = evaluate(run / "models/hdfs", run / "hdfs_pretrain", "hdfs", metrics_dir=run / "metrics/hdfs", device="cpu")
    assert set(r["baselines"]) == {"new_template", "count_vector", "ngram", "exact_sequence"}
    assert 0.0 <= r["model"]["f1"] <= 1.0 and r["recommendations"]
    assert "gap_to_best_baseline_f1" in r
    assert (run / "metrics/hdfs/f1_vs_threshold.png").is_file()
    assert (run / "metrics/hdfs/anomaly_diagnostics.json").is_file()
    p = evaluate(run / "models/hdfs", run / "hdfs_pretrain", "hdfs", instability=0.05, seed=1, device="cpu", write=False)
    assert p["instability"] == 0.05


def test_score_file_contract(run, tmp_path):
    src = tmp_path / "seq.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("BlockId,Label,EventSequence\nb1,Normal,E5 E22 E5 E5 E11 E9 E11 E9 E11 E9 E26 E26 E26\n"
                 "b2,Anomaly,E5 E22 E20 E999\n")
    out = tmp_path / "out.csv"
    res = score_file(run / "models/hdfs", src, None, out, device="cpu")
    rows = list(csv.DictReader(out.open()))
    assert [r["session_id"] for r in rows] == ["b1", "b2"]
    assert {"session_id", "label", "score", "is_anomaly", "unseen_rate", "count_l1"} <= set(rows[0])
    assert rows[1]["is_anomaly"] == "1"  # E20 never seen in training, E999 unknown: unseen, not an error
    assert res[1].scores["unseen_rate"] > 0.05
    plain = tmp_path / "plain.txt"
    plain.write_text("E5 E22 E20\n")
    m = evaluate_file(run / "models/hdfs", plain, "Anomaly", device="cpu")
    assert m["tp"] == 1


def test_thresholds_tamper_and_mismatch_refused(run, tmp_path):
    import shutil
    d = tmp_path / "m"
    shutil.copytree(run / "models/hdfs", d)
    th = orjson.loads((d / "thresholds.json").read_bytes())
    th["values"]["topk_miss"] = 1e9  # a hand-edited threshold (silences alerts): the file's sha256 catches it
    (d / "thresholds.json").write_bytes(orjson.dumps(th))
    with pytest.raises(ArtifactError, match="thresholds file was modified"):
        Detector.load(d, "cpu")
    from logad.thresholds import content_sha256

    th = orjson.loads((run / "models/hdfs/thresholds.json").read_bytes())
    th["model_sha256"] = "0" * 64  # a consistent file, but fitted for other weights
    th["sha256"] = content_sha256({k: v for k, v in th.items() if k != "sha256"})
    (d / "thresholds.json").write_bytes(orjson.dumps(th))
    with pytest.raises(ArtifactError, match="calibrated for other weights"):
        Detector.load(d, "cpu")
    (d / "reference.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        Detector.load(d, "cpu")


def test_early_detection_report(run):
    det = Detector.load(run / "models/hdfs", "cpu")
    rows = load_split(run / "hdfs_pretrain", "test")[:200]
    rows += [r for r in load_split(run / "hdfs_pretrain", "test") if r.label == 0][:50]
    rows += [r for r in load_split(run / "hdfs_pretrain", "test") if r.label == 1][:50]
    rep = early_report(det, rows, normal_train=load_split(run / "hdfs_pretrain", "train"))
    assert 0.0 < rep["oracle_bound_share"]["median"] <= 1.0
    assert 0.0 <= rep["incremental_false_alarm_rate"] <= 1.0
    # Prefix-monotone rules: an early alarm on a normal session implies the full-session alarm.
    assert rep["incremental_false_alarm_rate"] <= rep["final_decision_at_close"]["fpr"] + 1e-9


def test_oracle_bound_is_where_a_prefix_leaves_every_normal_prefix():
    from training.data import SessionRow
    from training.early import oracle_shares

    normal = [SessionRow("n1", (5, 6, 7, 8), 0), SessionRow("n2", (5, 9), 0)]
    anomalous = [SessionRow("a1", (5, 6, 9, 8), 1),  # leaves at event 3 of 4
                 SessionRow("a2", (5, 6), 1),  # a normal prefix throughout: only its end tells
                 SessionRow("a3", (4, 6, 7, 8, 9), 1)]  # leaves at the first event
    assert oracle_shares(anomalous, normal) == [0.75, 1.0, 0.2]


def test_finetune_from_pretrained_checkpoint(run):
    init = checkpoint_for_epochs(run / "ck/hdfs", 0.1)
    cfg = TrainConfig(max_samples=256, batch_size=32, eval_every=128, checkpoint_every=256, warmup_samples=32,
                      lr=3e-4, betas=(0.9, 0.98), early_stop_patience=2, device="cpu")
    res = finetune(run / "openstack_finetune", init, run / "models/openstack", run / "ck/os", cfg,
                   metrics_dir=run / "metrics/openstack")
    assert {"finetuned", "scratch", "verdict"} <= set(res)
    b = load_bundle(run / "models/openstack")
    assert b.manifest["init"] == str(init) and len(b.vocab) == b.model.cfg.vocab_size
