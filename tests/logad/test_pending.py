"""Pending statements: ids, resolution, votes, promotion, decisions, readings (logad.pending)."""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path

import pytest

from logad.config import DriftConfig
from logad.drift import DriftVocab
from logad.errors import ConfigError
from logad.pending import PendingIds, PendingTemplates, score_with_pending
from logad.records import Window, WindowScore
from logad.template_decisions import DECISIONS_FILE, Decision, append_decision, read_decisions
from logad.templates import UNK, TemplateVocab

ROOT = Path(__file__).resolve().parents[2]
HDFS = ROOT / "artifacts" / "models" / "hdfs"


@pytest.fixture(scope="module")
def vocab() -> TemplateVocab:
    return TemplateVocab.load(HDFS / "template_vocab.json")


def win(sid: str, ids, n_context: int = 0, start: int = 0) -> Window:
    return Window("hdfs", sid, start, tuple(ids), n_context, 1.0, 2.0, "end")


class FakeDetector:
    """Normal iff the window's ids are one of `normal`; a surprising event per UNK, expecting `expect`."""

    def __init__(self, normal: set[tuple[int, ...]], expect: dict[int, list[int]] | None = None,
                 vocab: TemplateVocab | None = None) -> None:
        self.normal, self.expect, self.vocab = normal, expect or {}, vocab
        self.seen: list[tuple[int, ...]] = []
        self.hypothetical = 0
        self._quiet = False

    @contextlib.contextmanager
    def hypotheses(self):
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def score_windows(self, windows, details: bool = False):
        out = []
        for w in windows:
            if UNK in w.ids[1:] and any(t >= len(self.vocab) for t in w.ids):
                raise AssertionError("a pending id reached the detector")
            if self._quiet:
                self.hypothetical += 1
            else:
                self.seen.append(w.ids)
            ok = w.ids in self.normal
            events = tuple({"index": w.start + i, "expected": [{"template_key": self.vocab.key_of(t)}
                                                               for t in self.expect.get(i, [])]}
                           for i, t in enumerate(w.ids) if t == UNK)
            out.append(WindowScore(w, {"x": 0.0 if ok else 9.0}, not ok, () if ok else ("x 9 > 1",), events))
        return out


def test_ids_round_trip_and_bad_keys(vocab):
    ids = PendingIds(vocab)
    t = vocab.id_of(vocab.key_of(5))
    for tid in (ids.alias(t), ids.new(0), ids.new(0x7fff), ids.new(0x8001)):
        assert ids.id_of(ids.key_of(tid)) == tid
    assert ids.protected(ids.new(0x8001)) and not ids.protected(ids.new(1)) and not ids.protected(ids.alias(t))
    for bad in ("alias:nope", "new:zz", "new:10000", "other:1", "plain"):
        with pytest.raises(ConfigError):
            ids.id_of(bad)
    with pytest.raises(ValueError):
        ids.key_of(3)


def test_matcher_gives_pending_ids(vocab):
    dv = DriftVocab(vocab, DriftConfig(), pending=True)
    ids = dv.pending
    known = next(e.text for e in vocab.entries if "PacketResponder" in e.text)
    assert dv.match(known.replace("<*>", "7")) < ids.base
    alias = dv.match("PacketResponder 3 is done now and quite finished for blk_1 terminating gracefully")
    new = dv.match("Rebalancer moved shard 12 to rack 7")
    signal = dv.match("Rebalancer failed shard 12 to rack 7")
    assert new >= 2 * ids.base and ids.key_of(new).startswith("new:") and not ids.protected(new)
    assert ids.protected(signal)
    assert alias >= ids.base
    assert dv.match("12 34") == UNK  # no constant words: unseen, as before
    assert dv.examples[new].startswith("Rebalancer moved")
    assert DriftVocab(vocab).match("Rebalancer moved shard 12 to rack 7") == UNK  # pending off: UNK


def test_resolve_alias_and_new(vocab):
    ids = PendingIds(vocab)
    p = PendingTemplates(vocab)
    w = win("b1", [5, ids.alias(6), 7, ids.new(3), 8], n_context=2, start=10)
    (r,), (how,) = p.resolve([w])
    assert r.ids == (5, 6, 7, 8) and r.n_context == 2 and r.start == 10
    assert how.keep == [0, 1, 2, 4]
    assert how.open_keys == (ids.key_of(ids.new(3)),)  # the alias sits in the context: judged before
    assert p.resolve([win("b", [5, 6])])[1] == [None]


def test_votes_promote_after_n_distinct_normal_sessions(vocab):
    ids = PendingIds(vocab)
    new = ids.new(42)
    key = ids.key_of(new)
    promoted = []
    p = PendingTemplates(vocab, promote_after=3, on_promote=promoted.append)
    det = FakeDetector({(5, 6, 7)}, vocab=vocab)
    flags = []
    for sid in ("a", "a", "b", "bad", "c", "d"):
        ids_ = [5, 6, new, 7] if sid != "bad" else [5, 9, new, 7]
        (ws,) = score_with_pending(det, p, [win(sid, ids_)])
        flags.append(ws.is_anomaly)
        assert ws.window.ids == tuple(ids_)  # alerts keep the original window
    # a, a again (same session: no second vote), b, bad (anomalous on its own: no vote), c promotes
    # (and still alerts: three sessions did), d passes
    assert flags == [True, True, True, True, True, False]
    assert [d.key for d in promoted] == [key] and promoted[0].sessions == 3
    row = next(r for r in p.summary() if r["key"] == key)
    assert row["status"] == "promote" and row["votes"] == 3 and row["anomalous_windows"] == 1


def test_outcome_statements_and_rejects_never_pass(vocab):
    ids = PendingIds(vocab)
    prot, other = ids.new(0x8000 | 5), ids.new(6)
    p = PendingTemplates(vocab, promote_after=1,
                         decisions={ids.key_of(other): Decision(ids.key_of(other), "reject")})
    det = FakeDetector({(5, 6)}, vocab=vocab)
    for sid in "abcde":
        (ws,) = score_with_pending(det, p, [win(sid, [5, prot, 6])])
        assert ws.is_anomaly and "never promoted by votes" in ws.reasons[-1]
        (ws,) = score_with_pending(det, p, [win(sid, [5, other, 6])])
        assert ws.is_anomaly and ws.reasons[-1].startswith("rejected statement")
    assert not p.decisions.get(ids.key_of(prot))


def test_accept_as_template(vocab):
    ids = PendingIds(vocab)
    new = ids.new(9)
    p = PendingTemplates(vocab, decisions={ids.key_of(new): Decision(ids.key_of(new), "accept",
                                                                     target=vocab.key_of(8))})
    det = FakeDetector({(5, 8, 6)}, vocab=vocab)
    (ws,) = score_with_pending(det, p, [win("s", [5, new, 6])])
    assert not ws.is_anomaly and det.seen == [(5, 8, 6)]


def test_reading_by_what_the_model_expected(vocab):
    """A statement reworded beyond drift matching, left out, makes the window abnormal; read as
    the template the model expected in its place it is normal: votes promote that reading."""
    ids = PendingIds(vocab)
    new = ids.new(77)
    p = PendingTemplates(vocab, promote_after=2)
    det = FakeDetector({(5, 8, 6)}, expect={1: [9, 8]}, vocab=vocab)  # first guess wrong, second right
    out = [score_with_pending(det, p, [win(s, [5, new, 6])])[0] for s in ("a", "b", "c")]
    assert [w.is_anomaly for w in out] == [True, True, False]
    d = p.decisions[ids.key_of(new)]
    assert d.action == "promote" and d.target == vocab.key_of(8)
    assert det.hypothetical > 0 and all(UNK not in s and max(s) < ids.base for s in det.seen)


def test_promotion_applies_to_the_rest_of_its_batch(vocab):
    ids = PendingIds(vocab)
    new = ids.new(1)
    p = PendingTemplates(vocab, promote_after=2)
    det = FakeDetector({(5, 6)}, vocab=vocab)
    out = score_with_pending(det, p, [win(s, [5, new, 6]) for s in "abcd"])
    assert [w.is_anomaly for w in out] == [True, True, False, False]


def test_decisions_file(tmp_path, vocab):
    path = tmp_path / DECISIONS_FILE
    assert read_decisions(path) == {}
    append_decision(path, Decision("new:0001", "accept", by="ana", at=1.0, why="new cache log"))
    append_decision(path, Decision("new:0002", "reject", by="ana", at=2.0))
    append_decision(path, Decision("new:0001", "forget", by="bo", at=3.0))
    got = read_decisions(path)
    assert list(got) == ["new:0002"] and got["new:0002"].by == "ana"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ConfigError, match=f"{DECISIONS_FILE}:4"):
        read_decisions(path)
    path.write_text(json.dumps({"key": "new:0001", "action": "bless"}) + "\n")
    with pytest.raises(ConfigError, match="action 'bless'"):
        read_decisions(path)


def test_detect_promotes_a_new_statement_and_cli_accepts_it(tmp_path):
    """`logad detect` on the bundled HDFS sample with one statement reworded beyond drift matching:
    the first sessions holding it alert, then it is promoted; once a person accepts it, none do."""
    import shutil

    from typer.testing import CliRunner

    from logad.detect_files import detect_paths
    from logad_cli.main import app

    raw = gzip.open(ROOT / "data/hdfs/HDFS_head20k.log.gz", "rt").read()
    model = tmp_path / "m"
    shutil.copytree(HDFS, model)
    plain, edited = tmp_path / "plain.log", tmp_path / "edited.log"
    plain.write_text(raw)
    edited.write_text(raw.replace(" terminating", " now done and gone"))
    base = detect_paths([plain], model, out=tmp_path / "a.jsonl", evidence=0)
    after = detect_paths([edited], model, out=tmp_path / "b.jsonl", evidence=0)
    (row,) = after["pending"]
    assert row["status"] == "promote" and row["votes"] == DriftConfig().promote_after
    assert base["alerts"] <= after["alerts"] <= base["alerts"] + DriftConfig().promote_after
    res = CliRunner().invoke(app, ["templates", "accept", row["key"], "--model", str(model), "--why", "upgrade"])
    assert res.exit_code == 0, res.output
    again = detect_paths([edited], model, out=tmp_path / "c.jsonl", evidence=0)
    assert again["alerts"] == base["alerts"]
    res = CliRunner().invoke(app, ["templates", "pending", "--model", str(model), "--logs", str(edited)])
    assert res.exit_code == 0 and "accept" in res.output
    for action in ("reject", "forget"):
        res = CliRunner().invoke(app, ["templates", action, row["key"], "--model", str(model), "--by", "ana"])
        assert res.exit_code == 0, res.output
        decided = read_decisions(model / DECISIONS_FILE)
        assert (decided[row["key"]].action, decided[row["key"]].by) == ("reject", "ana") if action == "reject" \
            else row["key"] not in decided
    bad = CliRunner().invoke(app, ["templates", "accept", "new:zz", "--model", str(model)])
    assert bad.exit_code != 0 and "hex slot" in str(bad.exception)
