"""`logad learning-curve` on a tiny budget: subsetting contract, the six rows, and a verdict that
follows the numbers. Checks wiring, not the figures (those are in artifacts/metrics/openstack/)."""

import math
import random
from dataclasses import asdict

import orjson
import pyarrow.parquet as pq
import pytest

from logad.artifacts import save_bundle
from logad.errors import ArtifactError, ConfigError
from logad.formats import FORMATS
from logad.model import ModelConfig, NextTokenTransformer
from logad.windows import WindowRule
from logad.templates import TemplateVocab
from training.data import SessionRow, load_split
from training.datasets import DATA, prepare_openstack
from training.curve_report import verdict
from training.learning_curve import (
    Calibration, CurveConfig, calibration_like, learning_curve, subset_sessions, write_subset,
)

TINY = dict(n_layer=1, n_head=2, n_embd=16, dropout=0.0)


def _rows(n_normal: int, n_anom: int) -> list[SessionRow]:
    rows = [SessionRow(f"n{i}", (1, 2, 3), 0) for i in range(n_normal)]
    rows += [SessionRow(f"a{i}", (1, 9), 1) for i in range(n_anom)]
    random.Random(0).shuffle(rows)
    return rows


def test_subset_sizes_normal_only_and_deterministic():
    rows = _rows(500, 50)
    sizes = {f: len(subset_sessions(rows, f, seed=7, min_sessions=10)) for f in (0.01, 0.1, 0.5, 1.0)}
    assert sizes == {0.01: 10, 0.1: 50, 0.5: 250, 1.0: 500}  # 1% of 500 = 5 is lifted to the floor of 10
    assert sizes[0.01] == 10 and len(subset_sessions(rows, 0.01, seed=7, min_sessions=3)) == 5
    for f in (0.01, 0.1, 1.0):
        assert all(r.label == 0 for r in subset_sessions(rows, f, seed=7))
    ids = [r.session_id for r in subset_sessions(rows, 0.1, seed=7)]
    shuffled = list(reversed(rows))
    assert [r.session_id for r in subset_sessions(shuffled, 0.1, seed=7)] == ids  # order-free
    assert [r.session_id for r in subset_sessions(rows, 0.1, seed=8)] != ids  # the seed matters
    small = {r.session_id for r in subset_sessions(rows, 0.01, seed=7)}
    assert small <= set(ids)  # nested: 1% within 10%


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, math.nan])
def test_fraction_outside_unit_interval_raises(bad):
    with pytest.raises(ConfigError, match="outside"):
        subset_sessions(_rows(20, 0), bad, seed=1)
    with pytest.raises(ConfigError):
        CurveConfig(fractions=(0.1, bad))


def test_no_normal_sessions_raises():
    with pytest.raises(ConfigError, match="no normal"):
        subset_sessions(_rows(0, 5), 0.5, seed=1)


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    prepare_openstack(root / "os")
    # A tiny untrained "HDFS checkpoint": the curve only needs a bundle over the HDFS vocab to resize.
    vocab = TemplateVocab.from_reference(DATA / "loghub_2k/HDFS/HDFS_templates.csv", FORMATS["hdfs"])
    save_bundle(root / "init", NextTokenTransformer(ModelConfig(vocab_size=len(vocab), block_size=64, **TINY)),
                vocab, WindowRule(), {"dataset": "hdfs", "samples": 0})
    # Calibration without instability levels (nine tolerant re-scorings of validation per model, most
    # of this fixture's time; tests/training/test_calibrate.py covers them); two perturbation seeds
    # still test the mean over them.
    cfg = CurveConfig(fractions=(1.0, 0.01, 0.1), budget_samples=256, batch_size=32, evals=2, seed=3, device="cpu",
                      eval_seeds=2, calibration=Calibration(instability=0.0))
    report = learning_curve(root / "os", root / "init", root / "out", root / "work", cfg)
    return root, cfg, report


def test_subset_dataset_keeps_val_test_and_vocab(curve, tmp_path):
    root, _, _ = curve
    keep = {r.session_id for r in load_split(root / "os", "train")[:7]}
    write_subset(root / "os", tmp_path, keep)
    assert set(pq.read_table(tmp_path / "train.parquet")["session_id"].to_pylist()) == keep
    for f in ("val.parquet", "test.parquet", "template_vocab.json"):
        assert (tmp_path / f).read_bytes() == (root / "os" / f).read_bytes()


def test_six_rows_same_budget_finite_metrics(curve):
    root, cfg, report = curve
    rows = report["rows"]
    assert [(r["fraction"], r["init"]) for r in rows] == [(f, i) for f in (0.01, 0.1, 1.0) for i in ("hdfs", "scratch")]
    n_train = len(load_split(root / "os", "train"))
    assert {r["fraction"]: r["train_sessions"] for r in rows} == {
        0.01: max(10, math.ceil(0.01 * n_train)), 0.1: math.ceil(0.1 * n_train), 1.0: n_train}
    assert {r["samples"] for r in rows} == {cfg.budget_samples}  # the same budget for every run
    for r in rows:  # figures are means over replicates, and figures at R over perturbation seeds
        reps = r["replicates"]
        assert [x["seed"] for x in reps] == [cfg.seed + k for k in range(cfg.replicates)] == r["seeds"]
        assert r["best_val_loss"] == pytest.approx(sum(x["best_val_loss"] for x in reps) / cfg.replicates)
        for x in reps:
            assert len(x["perturbed_by_seed"]) == cfg.eval_seeds
            assert x["perturbed"]["f1"] == pytest.approx(sum(m["f1"] for m in x["perturbed_by_seed"]) / cfg.eval_seeds)
    for r in rows:
        assert math.isfinite(r["best_val_loss"])
        for block in ("clean", "perturbed"):
            assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in r[block].values())
            assert 0.0 <= r["sequence_model_f1"][block] <= 1.0 and 0.0 <= r["best_baseline"][block]["f1"] <= 1.0
    # each run's train split really is the subset
    sub = root / "work" / f"seed_{cfg.seed}" / "frac_0p01" / "data" / "train.parquet"
    assert pq.read_table(sub).num_rows == rows[0]["train_sessions"]


def test_written_report_and_verdict_match_the_rows(curve):
    root, cfg, report = curve
    saved = orjson.loads((root / "out/learning_curve.json").read_bytes())
    assert saved["verdict"] == verdict(saved["rows"], cfg.instability)[0] == report["verdict"]
    md = (root / "out/learning_curve.md").read_text()
    assert report["verdict"] in md
    assert md.count("| hdfs |") == 3 * (1 + cfg.replicates) and md.count("| scratch |") == 3 * (1 + cfg.replicates)
    assert "n/a" not in md  # every optional figure was reported
    assert saved["config"]["calibration"] == asdict(cfg.calibration)
    assert (root / "out/learning_curve.png").stat().st_size > 1000


def test_calibration_copied_from_a_calibrated_model(curve, tmp_path):
    root, cfg, _ = curve
    got = calibration_like(root / "work" / f"seed_{cfg.seed}" / "frac_1" / "models" / "scratch")  # calibrated with cfg.calibration
    assert (got.percentile, got.instability, got.topk) == (cfg.calibration.percentile, cfg.calibration.instability,
                                                           cfg.calibration.topk)
    assert got.methods  # calibrate() records the methods it fitted
    with pytest.raises(ArtifactError):
        calibration_like(tmp_path)  # not a calibrated model
    with pytest.raises(ConfigError, match="calibration instability"):
        CurveConfig(calibration=Calibration(instability=1.5))
