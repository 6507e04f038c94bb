"""Parser accuracy (Loghub-2.0 metrics) of our masking + Drain3 on the 2k samples meets the bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.parser_eval import BARS, evaluate_parser, grouping_scores, main, normalise_template


def test_grouping_metrics_on_a_toy_example() -> None:
    truth = ["A", "A", "B", "B", "C"]
    pred = ["x", "x", "y", "z", "z"]  # group A exact; B split; C merged with part of B
    ga, fga = grouping_scores(truth, pred)
    assert ga == pytest.approx(2 / 5)
    precision, recall = 1 / 3, 1 / 3
    assert fga == pytest.approx(2 * precision * recall / (precision + recall))
    assert grouping_scores(truth, truth) == (1.0, 1.0)


def test_normalise_template() -> None:
    assert normalise_template(" BLOCK* ask <*>:<*> to  delete <*><*> ") == "BLOCK* ask <*>:<*> to delete <*>"
    assert normalise_template(" BLOCK* ask <*>:<*> to  delete <*> ", lenient=True) == "BLOCK* ask <*> to delete <*>"
    assert normalise_template("from <*>-<*>-<*> <*>:<*>:<*> to", lenient=True) == "from <*> <*> to"
    assert normalise_template("<*><*>.<*> x") == "<*>.<*> x"
    assert normalise_template("allocateBlock: <*> <*>", lenient=True) == "allocateBlock: <*> <*>"  # spaces separate


@pytest.mark.parametrize("dataset", ["hdfs", "openstack"])
def test_parser_accuracy_bars(dataset: str, tmp_path: Path) -> None:
    result = main(dataset, tmp_path)
    print(json.dumps({k: v for k, v in result.items() if k not in ("bars", "masking_fingerprint")}))
    for metric, floor in BARS[dataset].items():
        assert result[metric] >= floor, f"{dataset} {metric} {result[metric]} < {floor}"
    assert all(b["met"] for b in result["bars"].values())
    written = json.loads((tmp_path / f"{dataset}.json").read_text())
    assert written == result
    assert result["n_templates_found"] == result["n_templates_truth"]


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(ValueError):
        evaluate_parser("bgl")
