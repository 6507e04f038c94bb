"""training/curve_report.py: the verdict sentence and per-fraction comparisons follow the rows."""

import pytest

from training.curve_report import verdict
from training.learning_curve import aggregate


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
