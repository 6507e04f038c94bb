"""TemplateVocab: reference seeding, mapping of real raw lines, mining, persistence, frozen matching."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from logad.errors import ArtifactError
from logad.formats import FORMATS
from logad.parse import content_of, iter_records
from logad.records import LogRecord
from logad.templates import BOS, PAD, UNK, DriftMiner, TemplateVocab, match_lines

DATA = Path(__file__).resolve().parents[2] / "data"
HDFS_REF = DATA / "loghub_2k/HDFS/HDFS_templates.csv"
OS_REF = DATA / "openstack/graphlog_openstack/events.log_templates.csv"
HDFS, OS = FORMATS["hdfs"], FORMATS["openstack"]


@pytest.fixture(scope="module")
def hdfs_vocab() -> TemplateVocab:
    return TemplateVocab.from_reference(HDFS_REF, HDFS)


@pytest.fixture(scope="module")
def hdfs_contents() -> list[str]:
    return [r.content for r in iter_records(DATA / "hdfs/HDFS_head20k.log.gz", HDFS)]  # type: ignore[union-attr]


def loghub_truth(contents: list[str]) -> tuple[list[str | None], int, int]:
    """Independent truth: HDFS_templates.csv as raw-text regexes (no masking), the most specific
    (most literal characters) of the matching templates wins. Returns (E-id or None, #no match, #ambiguous)."""
    with open(HDFS_REF, newline="") as f:
        rows = list(csv.DictReader(f))
    rxs = [(r["EventId"], re.compile("^" + "(.*?)".join(map(re.escape, r["EventTemplate"].split("<*>"))) + "$", re.S),
            len(r["EventTemplate"].replace("<*>", ""))) for r in rows]
    out: list[str | None] = []
    none = ambiguous = 0
    for c in contents:
        hits = [(n, k) for k, rx, n in rxs if rx.match(c)]
        none += not hits
        ambiguous += len(hits) > 1
        out.append(max(hits)[1] if hits else None)
    return out, none, ambiguous


def test_special_ids_and_reference_keys(hdfs_vocab: TemplateVocab) -> None:
    assert (PAD, UNK, BOS) == (0, 1, 2) == (hdfs_vocab.PAD, hdfs_vocab.UNK, hdfs_vocab.BOS)
    assert hdfs_vocab.keys[:3] == ["<pad>", "<unk>", "<bos>"]
    assert len(hdfs_vocab) == 33 and hdfs_vocab.id_of("E1") == 3 and hdfs_vocab.id_of("E30") == 32
    assert hdfs_vocab.key_of(7) == "E5" and hdfs_vocab.text_of(7) == "<*>Receiving block<*>src:<*>dest:<*>"
    assert hdfs_vocab.id_of("E99") == UNK and hdfs_vocab.id_of("<unk>") == UNK  # unseen keys: UNK, no error
    with pytest.raises(KeyError):
        hdfs_vocab.key_of(33)
    os_vocab = TemplateVocab.from_reference(OS_REF, OS)
    assert os_vocab.keys[3:] == [str(i) for i in range(36)]  # GraphLog ids stay the strings "0".."35"


def test_raw_hdfs_lines_map_to_their_loghub_event_ids(hdfs_vocab: TemplateVocab, hdfs_contents: list[str]) -> None:
    truth, none, ambiguous = loghub_truth(hdfs_contents)
    got = [hdfs_vocab.keys[i] for i in hdfs_vocab.match_many(hdfs_contents)]
    rate = sum(g == t for g, t in zip(got, truth, strict=True)) / len(truth)
    print(f"HDFS_head20k: {rate:.4%} of {len(truth)} lines map to the Loghub E-id; "
          f"{none} match no template, {ambiguous} match several")
    assert rate >= 0.995
    assert none == 0 and UNK not in hdfs_vocab.match_many(hdfs_contents)
    # the 2k sample is spread over the whole log (other events: E3, E21, E23 ...): same check
    two_k = [content_of(x, HDFS) for x in (DATA / "loghub_2k/HDFS/HDFS_2k.log").read_bytes().splitlines()]
    truth2, _, _ = loghub_truth(two_k)  # type: ignore[arg-type]
    got2 = [hdfs_vocab.keys[i] for i in hdfs_vocab.match_many(two_k)]  # type: ignore[arg-type]
    assert sum(g == t for g, t in zip(got2, truth2, strict=True)) / len(truth2) >= 0.995
    assert {"E3", "E21", "E23"} <= set(got2)


def test_openstack_raw_lines_map_to_graphlog_keys() -> None:
    vocab = TemplateVocab.from_reference(OS_REF, OS)
    lines = (DATA / "loghub_2k/OpenStack/OpenStack_2k.log").read_bytes().splitlines()
    keys = {vocab.keys[vocab.match(r.content)] for r in iter_records(lines, OS)}  # type: ignore[union-attr]
    # VM lifecycle, spawn/destroy/build/deallocate timings, delete, terminate: same ids as the sequences
    assert {"0", "1", "2", "3", "7", "8", "9", "10", "11", "19", "23", "24", "25", "26"} <= keys
    assert "<unk>" in keys  # Loghub's "Claim successful" has no "on node <*>": not GraphLog's event 27


def test_match_never_changes_the_vocab(hdfs_vocab: TemplateVocab) -> None:
    before, n = hdfs_vocab.fingerprint(), len(hdfs_vocab)
    unseen = ["kernel panic at 0xdeadbeef", "", "Receiving", "BLOCK* something new happened to blk_1"]
    assert [hdfs_vocab.match(c) for c in unseen] == [UNK] * len(unseen)
    assert hdfs_vocab.fingerprint() == before and len(hdfs_vocab) == n
    assert hdfs_vocab.candidates("PacketResponder 1 for block blk_1 terminating") == [hdfs_vocab.id_of("E11")]


def test_match_cache_is_bounded() -> None:
    vocab = TemplateVocab(TemplateVocab.from_reference(HDFS_REF, HDFS).entries, HDFS, cache_size=10)
    for i in range(100):
        vocab.match(f"novel message number x{i}y")
    assert len(vocab._cache) <= 10


def test_save_load_roundtrip_and_tamper_detection(tmp_path: Path, hdfs_vocab: TemplateVocab,
                                                  hdfs_contents: list[str]) -> None:
    p = hdfs_vocab.save(tmp_path / "template_vocab.json")
    loaded = TemplateVocab.load(p)
    assert loaded.keys == hdfs_vocab.keys and loaded.entries == hdfs_vocab.entries
    assert loaded.fingerprint() == hdfs_vocab.fingerprint() and loaded.format_name == "hdfs"
    assert loaded.match_many(hdfs_contents[:500]) == hdfs_vocab.match_many(hdfs_contents[:500])
    doc = json.loads(p.read_text())
    assert doc["sha256"] and doc["masking_fingerprint"] == HDFS.masker.fingerprint

    tampered = dict(doc, templates=[dict(doc["templates"][0], key="E1x"), *doc["templates"][1:]])
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    with pytest.raises(ArtifactError, match="sha256"):
        TemplateVocab.load(tmp_path / "t.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError):
        TemplateVocab.load(tmp_path / "bad.json")
    # the vocab keeps the masking it was made with: other rules than today's format still match right
    other = TemplateVocab.from_reference(HDFS_REF, OS)
    other.format_name = "hdfs"
    loaded_other = TemplateVocab.load(other.save(tmp_path / "o.json"))
    assert loaded_other.masking_fingerprint == OS.masker.fingerprint and loaded_other.masker is not HDFS.masker
    assert loaded.masker is HDFS.masker  # same rules: shares the format's warm caches
    # rules edited but sha256 recomputed: the masking fingerprint still catches it
    odoc = json.loads((tmp_path / "o.json").read_text())
    del odoc["sha256"]
    odoc["masking"]["rules"][0]["pattern"] = "x+"
    odoc["sha256"] = hashlib.sha256(json.dumps(odoc, sort_keys=True, separators=(",", ":"),
                                               ensure_ascii=False).encode()).hexdigest()
    (tmp_path / "o2.json").write_text(json.dumps(odoc))
    with pytest.raises(ArtifactError, match="fingerprint"):
        TemplateVocab.load(tmp_path / "o2.json")
    # a masking fingerprint without the rules it names: refused, naming the file (also when the
    # format's own rules have that fingerprint: a vocab file carries its rules)
    for fp, name in (("0" * 64, "o3.json"), (HDFS.masker.fingerprint, "o4.json")):
        norules = {k: v for k, v in odoc.items() if k not in ("sha256", "masking")}
        norules["masking_fingerprint"] = fp
        norules["sha256"] = hashlib.sha256(json.dumps(norules, sort_keys=True, separators=(",", ":"),
                                                      ensure_ascii=False).encode()).hexdigest()
        (tmp_path / name).write_text(json.dumps(norules))
        with pytest.raises(ArtifactError, match=f"{name}: .*masking rules.*re-create"):
            TemplateVocab.load(tmp_path / name)


def test_keys_only_vocab() -> None:
    vocab = TemplateVocab.from_keys([str(i) for i in range(36)])
    assert len(vocab) == 39 and vocab.id_of("0") == 3 and vocab.id_of("36") == UNK
    with pytest.raises(ArtifactError):
        vocab.match("[instance: x] VM Stopped (Lifecycle Event)")


def test_fit_keeps_seed_ids_and_mines_the_rest(hdfs_vocab: TemplateVocab, hdfs_contents: list[str]) -> None:
    novel = [f"Disk {i} of node{i % 3} failed with code {i * 7}" for i in range(30)] + ["Shutting down the DataNode"]
    vocab = TemplateVocab.fit(hdfs_contents[:3000] + novel, HDFS, seed=hdfs_vocab)
    assert vocab.keys[: len(hdfs_vocab)] == hdfs_vocab.keys  # seed ids unchanged
    mined = vocab.entries[len(hdfs_vocab.entries):]
    assert [e.key for e in mined] == ["T1", "T2", "T3", "T4"]
    assert {e.text for e in mined} == {*(f"Disk <*> of node{i} failed with code <*>" for i in range(3)),
                                       "Shutting down the DataNode"}
    assert sum(e.count for e in vocab.entries) == 3000 + len(novel)
    receiving = sum(c.startswith("Receiving block") for c in hdfs_contents[:3000])
    assert vocab.entries[vocab.id_of("E5") - 3].count == receiving
    assert vocab.match("Disk 77 of node1 failed with code 3") == vocab.id_of("T2")
    assert all(e.token_wildcards for e in mined) and not any(e.token_wildcards for e in hdfs_vocab.entries)
    assert TemplateVocab.fit(hdfs_contents[:3000] + novel, HDFS, seed=hdfs_vocab).fingerprint() == vocab.fingerprint()


def test_a_mined_wildcard_is_one_token() -> None:
    vocab = TemplateVocab.fit(["User alice logged in", "User bob logged in"], HDFS, sim_th=0.5)
    assert [e.text for e in vocab.entries] == ["User <*> logged in"]
    assert vocab.match("User carol logged in") == 3
    assert vocab.match("User carol smith logged in") == UNK  # Drain3's <*> is one token: novel stays novel
    assert vocab.match("User  logged in") == UNK


def test_drift_miner_counts_new_templates(hdfs_vocab: TemplateVocab) -> None:
    drift = DriftMiner(HDFS)
    for i in range(50):
        content = f"Slow disk /dev/sd{i % 2} on 10.0.0.{i}: {i} ms" if i % 5 else "DataNode is shutting down"
        assert hdfs_vocab.match(content) == UNK
        drift.observe(content)
    s = drift.summary()
    assert s["lines"] == 50 and s["templates"] == 2  # "/dev/sd0" and "/dev/sd1" are both paths
    assert s["top"][0] == {"id": s["top"][0]["id"], "template": "Slow disk <*> on <*>: <*> ms", "count": 40}
    assert s["top"][1]["template"] == "DataNode is shutting down" and s["top"][1]["count"] == 10


def test_match_lines_for_the_cli(hdfs_vocab: TemplateVocab) -> None:
    lines = [
        b"081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-16 src: /10.250.19.102:54106 "
        b"dest: /10.250.19.102:50010\n",
        b"081109 214043 19 INFO dfs.FSNamesystem: BLOCK* ask 10.250.17.177:50010 to delete  blk_-85 blk_-91\n",
        b"081109 214043 19 INFO dfs.FSNamesystem: BLOCK* something brand new for blk_7\n",
        b"garbage\n",
    ]
    out = list(match_lines(hdfs_vocab, HDFS, lines))
    assert out == [(("blk_-16",), "E5"), (("blk_-85", "blk_-91"), "E30"), (("blk_7",), "<unk>"),
                   ((), "rejected:unparseable")]
    assert isinstance(next(iter_records(lines, HDFS)), LogRecord)
