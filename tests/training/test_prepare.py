"""Datasets: label counts equal the shared data README, no session in two splits, train is normal only."""

import pyarrow.parquet as pq
import pytest

from training.datasets import hdfs_sessions, openstack_sessions, prepare_hdfs, prepare_openstack
from training.prepare import Session, SplitRule, split_sessions


@pytest.fixture(scope="module")
def hdfs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hdfs")
    prepare_hdfs(out)
    return out


def test_hdfs_counts_match_readme():
    s = hdfs_sessions()
    # README: 100k file 6,345 blocks (248 anomalous); full anomalous file 13,395 blocks, which supersede
    # the 248 cut traces of the same blocks; DeepLog 4,855 normal sequences.
    assert sum(x.label == 0 and not x.train_only for x in s) == 6345 - 248
    assert sum(x.label == 1 for x in s) == 13395
    assert sum(x.train_only for x in s) == 4855


def test_openstack_counts_match_readme():
    s = openstack_sessions()
    assert sum(x.label == 0 for x in s) == 4800 and sum(x.label == 1 for x in s) == 400
    assert len({x.session_id for x in s}) == 5200
    # Row r of our copy is source row r + r // 4 + 1 (rows i % 5 == 0 were held out upstream).
    assert all(int(x.session_id.split("-")[1]) % 5 != 0 for x in s)


def test_no_session_in_two_splits_and_train_is_normal(hdfs_dir):
    ids = {}
    for split in ("train", "val", "test"):
        t = pq.read_table(hdfs_dir / f"{split}.parquet").to_pydict()
        ids[split] = set(t["session_id"])
        assert len(ids[split]) == len(t["session_id"])
        if split == "train":
            assert set(t["label"]) == {0}
        else:
            assert set(t["label"]) == {0, 1}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert (hdfs_dir / "template_vocab.json").is_file() and (hdfs_dir / "split.json").is_file()


def test_openstack_prepare(tmp_path):
    info = prepare_openstack(tmp_path)
    c = info["counts"]
    assert c["train"]["anomaly"] == 0
    assert sum(c[s]["anomaly"] for s in c) == 400 and sum(c[s]["normal"] for s in c) == 4800


def test_chronological_split_when_timestamps_exist():
    sessions = [Session(f"s{i}", "x", ["E1"], 0, first_ts=float(100 - i)) for i in range(100)]
    sessions += [Session(f"a{i}", "x", ["E2"], 1, first_ts=float(i)) for i in range(10)]
    r = split_sessions(sessions, SplitRule())
    assert r.rule.startswith("chronological")
    assert max(s.first_ts for s in r.splits["train"]) < min(s.first_ts for s in r.splits["val"] if s.label == 0)
    assert max(s.first_ts for s in r.splits["val"] if s.label == 0) < min(s.first_ts for s in r.splits["test"] if s.label == 0)


def test_duplicate_session_ids_rejected():
    from logad.errors import ParseError
    with pytest.raises(ParseError, match="occurs 2 times"):
        split_sessions([Session("x", "a", ["E1"], 0), Session("x", "b", ["E1"], 0)], SplitRule())
