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
