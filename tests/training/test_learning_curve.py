"""`logad learning-curve` on a tiny budget: subsetting contract, the six rows, and a verdict that
follows the numbers. Checks wiring, not the figures (those are in artifacts/metrics/openstack/)."""

import math
import random

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
from training.learning_curve import (
    Calibration, CurveConfig, aggregate, calibration_like, learning_curve, subset_sessions, verdict, write_subset,
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


def _row(fraction, init, f1_clean, f1_pert, loss, n=10):
    m = lambda f1: {"precision": 1.0, "recall": 1.0, "f1": f1, "fpr": 0.0, "f1_at_hdfs_prevalence": f1}  # noqa: E731
    return {"fraction": fraction, "init": init, "train_sessions": n, "best_val_loss": loss,
            "clean": m(f1_clean), "perturbed": m(f1_pert)}


def test_verdict_follows_the_numbers():
    helps = [_row(0.01, "hdfs", 0.95, 0.90, 0.30), _row(0.01, "scratch", 0.90, 0.80, 0.50),
             _row(1.0, "hdfs", 0.99, 0.95, 0.10), _row(1.0, "scratch", 0.99, 0.90, 0.10)]
    s, comps = verdict(helps, 0.02)
    assert s.startswith("HDFS pretraining pays for detection at every fraction")
    assert comps["0.01"]["detection"] == "helps" and comps["0.01"]["signs"]["next-template val loss"] == 1
    assert comps["1"]["signs"] == {"next-template val loss": 0, "F1 clean": 0, "F1 at R": 1,
                                   "F1 at 2.93% clean": 0, "F1 at 2.93% at R": 1}
    assert "F1 at R=0.02: better with HDFS pretraining at 1%, 100% (0.900 vs 0.800, 0.950 vs 0.900)" in s
    same = [_row(f, i, 0.97, 0.90, 0.2) for f in (0.1, 1.0) for i in ("hdfs", "scratch")]
    s, comps = verdict(same, 0.02)
    assert s.startswith("HDFS pretraining does not pay for detection at any fraction.")
    assert {c["detection"] for c in comps.values()} == {"none"}
    hurts = [_row(0.1, "hdfs", 0.90, 0.80, 0.3), _row(0.1, "scratch", 0.90, 0.85, 0.3)]
    assert verdict(hurts, 0.02)[0].startswith("HDFS pretraining does not pay for detection at any fraction (it is worse at 10%)")
    partly = helps[:2] + same[2:]  # helps at 1%, no difference at 100%
    s, comps = verdict(partly, 0.02)
    assert s.startswith("HDFS pretraining pays for detection at 1% (10 sessions) and makes no difference elsewhere")
    assert verdict(helps[:2] + hurts, 0.02)[0].startswith("HDFS pretraining pays for detection at 1% and is worse at 10%.")
    # a lower val loss alone is not a detection gain, and the sentence says so
    loss_only = [_row(0.1, "hdfs", 0.97, 0.90, 0.1), _row(0.1, "scratch", 0.97, 0.905, 0.2)]
    s, comps = verdict(loss_only, 0.02)
    assert comps["0.1"]["detection"] == "none" and "does not carry over" in s
    # the same test-split F1, but more false positives weigh at real prevalence: that is a detection loss
    prev = [_row(0.1, "hdfs", 0.90, 0.90, 0.2), _row(0.1, "scratch", 0.90, 0.90, 0.2)]
    prev[0]["perturbed"]["f1_at_hdfs_prevalence"] = 0.70
    s, comps = verdict(prev, 0.02)
    assert comps["0.1"]["detection"] == "hurts" and "F1 at 2.93% at R=0.02: worse with HDFS pretraining at 10%" in s
    # a mean difference the perturbation seeds do not agree on is no difference
    seeds = [_row(0.1, "hdfs", 0.90, 0.90, 0.2), _row(0.1, "scratch", 0.90, 0.85, 0.2)]
    seeds[0]["perturbed_by_seed"] = [{"f1": f, "f1_at_hdfs_prevalence": f} for f in (0.95, 0.95, 0.80)]
    seeds[1]["perturbed_by_seed"] = [{"f1": f, "f1_at_hdfs_prevalence": f} for f in (0.85, 0.85, 0.85)]
    c = verdict(seeds, 0.02)[1]["0.1"]
    assert c["diffs"]["F1 at R"] > 0.01 and c["signs"]["F1 at R"] == 0 and c["detection"] == "none"
    s = verdict(seeds, 0.02)[0]
    assert s.startswith("HDFS pretraining does not pay consistently for detection at any fraction (at 10%")
    assert "F1 at R=0.02: no consistent difference (the mean favours HDFS pretraining" in s
    seeds[0]["perturbed_by_seed"][2] = {"f1": 0.86, "f1_at_hdfs_prevalence": 0.86}
    assert verdict(seeds, 0.02)[1]["0.1"]["detection"] == "helps"
    # a mean difference two replicates disagree on is no difference
    h = [_row(0.1, "hdfs", 0.90, 0.90, 0.10), _row(0.1, "hdfs", 0.90, 0.90, 0.30)]
    sc = [_row(0.1, "scratch", 0.90, 0.90, 0.25), _row(0.1, "scratch", 0.90, 0.90, 0.28)]
    for x, seed in zip(h + sc, (1, 2, 1, 2)):
        x["seed"], x["samples"], x["train_seconds"] = seed, 256, 1.0
        x["best_baseline"], x["sequence_model_f1"] = {"clean": None, "perturbed": None}, {"clean": None, "perturbed": None}
    rows = [aggregate(h), aggregate(sc)]
    assert rows[0]["best_val_loss"] == pytest.approx(0.20) and rows[0]["seeds"] == [1, 2]
    c = verdict(rows, 0.02)[1]["0.1"]
    assert c["diffs"]["next-template val loss"] > 0.01 and c["signs"]["next-template val loss"] == 0
    both = [_row(0.1, "hdfs", 0.99, 0.80, 0.2), _row(0.1, "scratch", 0.90, 0.90, 0.2)]
    assert verdict(both, 0.02)[1]["0.1"]["detection"] == "mixed"
    # the sequence-model-alone F1 is reported when evaluate() gives it, and never decides the bottom line
    assert "sequence model alone" not in verdict(same, 0.02)[0]
    for r, (c, p) in zip(same, [(0.8, 0.7), (0.6, 0.5)] * 2):
        r["sequence_model_f1"] = {"clean": c, "perturbed": p}
    s, comps = verdict(same, 0.02)
    assert "sequence model alone F1 at R=0.02: better with HDFS pretraining at 10%, 100% (0.700 vs 0.500" in s
    assert s.startswith("HDFS pretraining does not pay for detection") and comps["1"]["detection"] == "none"


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    prepare_openstack(root / "os")
    # A tiny untrained "HDFS checkpoint": the curve only needs a bundle over the HDFS vocab to resize.
    vocab = TemplateVocab.from_reference(DATA / "loghub_2k/HDFS/HDFS_templates.csv", FORMATS["hdfs"])
    save_bundle(root / "init", NextTokenTransformer(ModelConfig(vocab_size=len(vocab), block_size=64, **TINY)),
                vocab, WindowRule(), {"dataset": "hdfs", "samples": 0})
    cfg = CurveConfig(fractions=(1.0, 0.01, 0.1), budget_samples=256, batch_size=32, evals=2, seed=3, device="cpu")
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
    assert saved["config"]["calibration"]["instability"] == 0.02
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
