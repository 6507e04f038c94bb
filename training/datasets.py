"""The two shipped datasets, built from the bundled Loghub-derived data (see data/README.md).

hdfs_pretrain (sessions = HDFS blocks, keys = Loghub E1..E30):
* normal: `hdfs_100k_block_sequences.csv.gz` normal blocks (cut at line 100k of HDFS.log) and
  DeepLog's 4,855 full normal sequences (no block ids: train only, never evaluated on);
* anomalous: the full traces of `hdfs_anomalous_block_sequences.csv.gz`; they supersede the cut
  100k-prefix traces of the same blocks, 127 of which equal a normal sequence and are undetectable
  from the sequence alone (data/README.md).
openstack_finetune (sessions = VM instances, keys = GraphLog template ids "0".."35"):
* `sequence_normal.csv` / `sequence_abnormal.csv`; session id = the row's index in the source file
  (rows i % 5 == 0 were held out upstream, so our r-th row is source row r + r // 4 + 1).
"""

from __future__ import annotations

from pathlib import Path

from logad.formats import FORMATS
from logad.templates import TemplateVocab
from training.prepare import (
    Session, SplitRule, prefer_full, sessions_from_sequences, split_sessions, write_dataset,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def hdfs_sessions(data_dir: Path = DATA) -> list[Session]:
    d = data_dir / "hdfs"
    cut = sessions_from_sequences(d / "hdfs_100k_block_sequences.csv.gz")
    full = sessions_from_sequences(d / "hdfs_anomalous_block_sequences.csv.gz")
    for s in full:
        s.origin = "hdfs_anomalous_block_sequences.csv.gz"
    deeplog = sessions_from_sequences(
        d / "deeplog_hdfs_train.txt", label="Normal", key_prefix="E", id_prefix="deeplog-", train_only=True
    )
    return prefer_full(cut + full) + deeplog


def openstack_sessions(data_dir: Path = DATA) -> list[Session]:
    d = data_dir / "openstack" / "graphlog_openstack"
    out = []
    for name, label in (("sequence_normal.csv", "Normal"), ("sequence_abnormal.csv", "Anomaly")):
        for s in sessions_from_sequences(d / name, label=label):
            r = int(s.session_id) - 1  # 0-based row in our copy
            s.session_id = f"{name.split('_')[1].split('.')[0]}-{r + r // 4 + 1}"
            out.append(s)
    return out


def prepare_hdfs(out_dir: Path, data_dir: Path = DATA, rule: SplitRule = SplitRule()) -> dict:
    vocab = TemplateVocab.from_reference(data_dir / "loghub_2k/HDFS/HDFS_templates.csv", FORMATS["hdfs"])
    result = split_sessions(hdfs_sessions(data_dir), rule)
    return write_dataset(out_dir, result, vocab, {"dataset": "hdfs", "vocab_seed": "HDFS_templates.csv"})


def prepare_openstack(out_dir: Path, data_dir: Path = DATA, rule: SplitRule = SplitRule()) -> dict:
    vocab = TemplateVocab.from_reference(
        data_dir / "openstack/graphlog_openstack/events.log_templates.csv", FORMATS["openstack"]
    )
    result = split_sessions(openstack_sessions(data_dir), rule)
    return write_dataset(out_dir, result, vocab, {"dataset": "openstack", "vocab_seed": "events.log_templates.csv"})
