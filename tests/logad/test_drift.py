"""Drift-tolerant template assignment: reworded statements map back, new or ambiguous ones do not."""

from __future__ import annotations

from pathlib import Path

from logad.config import DriftConfig
from logad.drift import DriftVocab, words
from logad.templates import UNK, TemplateVocab

ROOT = Path(__file__).resolve().parents[2]
HDFS = TemplateVocab.load(ROOT / "artifacts/models/hdfs/template_vocab.json")
OS = TemplateVocab.load(ROOT / "artifacts/models/openstack/template_vocab.json")
INST = "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d]"


def test_words_drop_placeholders_numbers_and_glued_wildcards() -> None:
    assert words("<*>Served block<*>to<*>") == ("served", "block", "to")
    assert words("Receiving block <BLK> src: <IP>:<NUM> dest: <IP>:<NUM> x1 12") == ("receiving", "block", "src", "dest")


def test_reworded_lines_map_to_their_statement() -> None:
    d = DriftVocab(HDFS)
    cases = {
        "Receiving data block blk_1 src: /10.0.0.1:50010 dest: /10.0.0.2:50010": "E5",  # word inserted
        "10.250.10.6:50010 Served the block blk_-16 to /10.250.18.114": "E3",
        "Accepting block blk_1 src: /10.0.0.1:50010 dest: /10.0.0.2:50010": "E5",  # one word replaced
        "Received blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:2 of size 12": "E6",  # word dropped
    }
    for line, key in cases.items():
        assert HDFS.match(line) == UNK  # the frozen vocab calls them unseen
        assert HDFS.key_of(d.match(line)) == key, line
    rep = d.report()
    assert rep["lines"] == {"drift": 4} and len(rep["reworded"]) == 4 and {r["template_key"] for r in rep["reworded"]} == {"E5", "E3", "E6"}
    # exact lines stay exact and are counted as such
    assert HDFS.key_of(d.match("Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:2")) == "E5"
    assert d.counts == {"drift": 4}  # exact matches are not counted (the hot path)


def test_new_and_ambiguous_statements_stay_unseen() -> None:
    d = DriftVocab(OS)
    assert d.match(f"{INST} VM Began (Lifecycle Event)") == UNK  # as close to Started as to Stopped
    assert d.match(f"{INST} Unpausing now completely") == UNK  # one shared word of many
    assert d.match("Disk quota exceeded on volume 7") == UNK  # nothing like it
    h = DriftVocab(HDFS)
    assert h.match("Verification failed for blk_1") == UNK  # an outcome word differs: another event
    assert h.match("Receiving no block blk_1 src: /1.1.1.1:1 dest: /1.1.1.2:2") == UNK
    assert OS.key_of(d.match(f"{INST} VM has Started (Lifecycle Event)")) == OS.key_of(OS.match(
        f"{INST} VM Started (Lifecycle Event)"))
    strict = DriftVocab(HDFS, DriftConfig(min_similarity=1.0, margin=5))
    assert strict.match("Receiving data block blk_1 src: /1.1.1.1:1 dest: /1.1.1.2:2") == UNK


def test_drift_report_names_reworded_and_new_statements(tmp_path: Path) -> None:
    import gzip

    from logad.drift import drift_report

    with gzip.open(ROOT / "data/hdfs/HDFS_head20k.log.gz", "rt") as f:
        lines = [next(f) for _ in range(3000)]
    edited = [ln.replace("Receiving block", "Receiving data block") for ln in lines]
    edited += ["081109 213518 143 INFO dfs.DataNode: Brand new statement for blk_123 here\n"] * 3
    (tmp_path / "x.log").write_text("".join(edited))
    rep = drift_report([tmp_path / "x.log"], ROOT / "artifacts/models/hdfs")
    n = sum("Receiving block" in ln for ln in lines)
    assert rep["reworded_lines"] == n and rep["new_lines"] == 3 and rep["lines"] == 3003
    (row,) = rep["reworded"]
    assert row["template_key"] == "E5" and row["seen_as"].startswith("Receiving data block") and row["lines"] == n
    assert row["first_seen"] == 1226262918.0  # event time of the first such line (2008-11-09 20:35:18)
    (new,) = rep["new"]
    assert new["template"] == "Brand new statement for <*> here" and new["lines"] == 3 and new["sessions"] == 1
