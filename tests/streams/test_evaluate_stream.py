"""`logad evaluate-stream --labels`: session_id,label CSVs of any source (and HDFS's BlockId,Label,
and `logad detect --sessions-out`'s session_id,score,is_anomaly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logad.errors import ParseError
from streams.evaluate_stream import read_labels


@pytest.mark.parametrize("text", [
    "session_id,label\nreq-1,Normal\nreq-2,Anomaly\n",
    "BlockId,Label\nreq-1,Normal\nreq-2,Anomaly\n",
    "session_id,score,is_anomaly\nreq-1,0,0\nreq-2,3.5,1\n",
    "label,session_id\n0,req-1\n1,req-2\n",
    "trace,verdict\nreq-1,normal\nreq-2,abnormal\n",  # unknown names: id first, label second
])
def test_labels_of_any_source(tmp_path: Path, text: str) -> None:
    p = tmp_path / "labels.csv"
    p.write_text(text)
    assert read_labels(p) == {"req-1": 0, "req-2": 1}


def test_bad_labels_name_the_row(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("session_id,label\nreq-1,Normal\nreq-2,maybe\n")
    with pytest.raises(ParseError, match=r"labels.csv:3: label 'maybe'"):
        read_labels(p)
    p.write_text("only_one_column\nx\n")
    with pytest.raises(ParseError, match="session_id,label"):
        read_labels(p)


# ------------------------------------------------------------------ sessions whole in the sample
def test_complete_traces_report(tmp_path: Path) -> None:
    """Anomalous sessions count only when the sample holds their whole trace (as a multiset); normal
    sessions all count, cut or not; an anomalous session without a full trace is left out."""
    import gzip

    from streams.evaluate_stream import figures_text
    from streams.evaluate_traces import complete_report, read_full_traces

    p = tmp_path / "seq.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("BlockId,Label,EventSequence\nblk_a,Anomaly,E5 E22 E5 E3\nblk_b,Anomaly,E5 E22 E5 E3 E20\n"
                 "blk_x,Anomaly,E1\n")
    truth = {"blk_a": 1, "blk_b": 1, "blk_c": 1, "blk_n1": 0, "blk_n2": 0}
    full = read_full_traces(p, {s for s, v in truth.items() if v})
    assert set(full) == {"blk_a", "blk_b"}  # only the wanted sessions are kept
    sample = {"blk_a": ["E22", "E5", "E3", "E5"],  # whole (another order)
              "blk_b": ["E5", "E22", "E5", "E3"],  # cut before E20: left out
              "blk_n1": ["E5"], "blk_n2": ["E5", "E22"]}  # blk_n1 cut short: still normal, still counts
    r = complete_report(truth, {"blk_a", "blk_b", "blk_n1"}, sample, full)
    assert (r["sessions"], r["anomalous"], r["left_out_cut"], r["left_out_no_trace"]) == (3, 1, 1, 1)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 0, 1)  # the alert on cut normal blk_n1 is a false alarm
    assert r["recall"] == 1.0 and r["precision"] == 0.5

    report = {"labelled_sessions": 5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "tp": 2, "fp": 1, "fn": 1,
              "tn": 1, "complete": {"traces": str(p), **r}}
    text = figures_text(report)
    assert "all labelled sessions (what the sample's cut allows): 5 sessions (3 anomalous)" in text
    assert "sessions whose whole trace is in the sample (measures the detector): 3 sessions (1 anomalous)" in text
    assert "recall 1.000 (1/1)" in text and "1 anomalous sessions left out as cut" in text


def test_complete_traces_csv_errors_are_one_line(tmp_path: Path) -> None:
    from streams.evaluate_traces import read_full_traces

    p = tmp_path / "seq.csv"
    p.write_text("BlockId,Label\nblk_a,Anomaly\n")
    with pytest.raises(ParseError, match="EventSequence"):
        read_full_traces(p)
    with pytest.raises(ParseError, match="cannot read full traces"):
        read_full_traces(tmp_path / "missing.csv.gz")
