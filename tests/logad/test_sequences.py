import gzip

import pytest

from logad.errors import ParseError
from logad.sequences import read_sequences


def test_csv_gz_and_plain(tmp_path):
    p = tmp_path / "s.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("BlockId,Label,EventSequence\nblk_1,Normal,E5 E22 E5\nblk_2,Anomaly,E5 E20\n")
    got = list(read_sequences(p))
    assert [(s.session_id, s.label, s.keys) for s in got] == [
        ("blk_1", 0, ("E5", "E22", "E5")), ("blk_2", 1, ("E5", "E20"))]
    q = tmp_path / "plain.txt"
    q.write_text("5 5 22\n\n11 9\n")
    got = list(read_sequences(q, label="Normal", key_prefix="E"))
    assert [(s.session_id, s.label, s.keys) for s in got] == [("1", 0, ("E5", "E5", "E22")), ("3", 0, ("E11", "E9"))]


def test_bad_files_raise_parse_error(tmp_path):
    with pytest.raises(ParseError, match="does not exist"):
        list(read_sequences(tmp_path / "missing.csv"))
    p = tmp_path / "bad.csv"
    p.write_text("Foo,Label,EventSequence\nx,Normal,E1\n")
    with pytest.raises(ParseError, match="session-id column"):
        list(read_sequences(p))
    p.write_text("BlockId,Label,EventSequence\nx,Weird,E1\n")
    with pytest.raises(ParseError, match="unknown label"):
        list(read_sequences(p))
