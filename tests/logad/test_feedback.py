"""logad.feedback: the fold of verdicts and undos, the equality rule the detector applies (same ids,
same context; ids checked against the vocab), bad files as one clear error, and `logad detect`
leaving out exactly the windows people marked normal."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from logad.alerts import make_event, vocab_tag
from logad.detector import Detector
from logad.feedback import (ANOMALY, FEEDBACK_REASON, NORMAL, FeedbackError, append_record, read_feedback,
                            undo_record, verdict_from_alert)
from logad.records import Window, WindowScore
from logad.templates import TemplateEntry, TemplateVocab

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "artifacts/models/hdfs"
RAW = ROOT / "data/hdfs/HDFS_head20k.log.gz"

VOCAB = TemplateVocab([TemplateEntry("E1", "a <*>"), TemplateEntry("E2", "b <*>"), TemplateEntry("E3", "c")])
TAG = vocab_tag(VOCAB)


def alert(aid: str, ids: tuple[int, ...], n_context: int = 0, session: str = "s1", vocab: str = TAG) -> dict:
    w = Window("hdfs", session, 0, ids, n_context, 1.0, 2.0, "idle", True, len(ids))
    return make_event(WindowScore(w, {"combined": 2.0}, True, ("count_tail 9 > 2",)), "m-1", {}, vocab=vocab)


def verdict(aid: str, ids: tuple[int, ...], v: str = NORMAL, n_context: int = 0, at: str = "t") -> dict:
    a = alert(aid, ids, n_context)
    a["id"] = aid
    return verdict_from_alert(a, v, VOCAB, TAG, "ann", "why", at=at).record()


def write(path: Path, *docs: dict) -> Path:
    for d in docs:
        append_record(path, d)
    return path


def test_fold_last_verdict_per_alert_undo_revokes_latest_per_window(tmp_path: Path) -> None:
    p = write(tmp_path / "f.jsonl",
              verdict("a1", (3, 4, 5)), verdict("a2", (3, 4)), verdict("a3", (3, 4, 5), ANOMALY),  # a3: same window as a1
              verdict("a2", (3, 4), ANOMALY), verdict("a2", (3, 4), NORMAL),  # a2 given again: its last one counts
              verdict("a4", (5, 5)), undo_record("a4", "ann"))
    fb = read_feedback(p)
    assert fb.records == 7 and [v.alert_id for v in fb.standing] == ["a1", "a3", "a2"]
    assert fb.verdict_of("a4") is None and fb.verdict_of("a2").verdict == NORMAL
    assert fb.latest(((3, 4, 5), 0)).alert_id == "a3"  # the later verdict on the same window is in force
    assert fb.overlay(VOCAB).normal == {((3, 4), 0)}  # (3, 4, 5) is a confirmed anomaly now
    write(p, undo_record("a3", "ann"))
    fb2 = read_feedback(p)
    assert fb2.overlay(VOCAB).normal == {((3, 4), 0), ((3, 4, 5), 0)} and fb2.digest != fb.digest
    assert read_feedback(tmp_path / "none.jsonl").standing == () and read_feedback(tmp_path / "none.jsonl").digest == ""


def test_overlay_needs_the_same_templates_under_the_ids(tmp_path: Path) -> None:
    p = write(tmp_path / "f.jsonl", verdict("a1", (3, 4)))
    fb = read_feedback(p)
    extended = TemplateVocab([*VOCAB.entries, TemplateEntry("E4", "d")])  # ids kept, one appended
    assert fb.overlay(extended).normal == {((3, 4), 0)}
    other = TemplateVocab([TemplateEntry("E1", "a <*>"), TemplateEntry("E2", "B <*>")])  # id 4 is another template
    assert fb.overlay(other).normal == frozenset()
    assert fb.overlay(TemplateVocab([TemplateEntry("E1", "a <*>")])).normal == frozenset()  # id 4 gone


@pytest.mark.parametrize("content, what", [
    (b'{"v":1,"op":"verdict"\n', "line 3: not JSON"),
    (b'[1, 2]\n', "line 3: not a feedback record"),
    (b'{"v":2,"op":"undo","alert_id":"a"}\n', "not a feedback record of version 1"),
    (b'{"v":1,"op":"erase","alert_id":"a"}\n', "op must be 'verdict' or 'undo'"),
    (b'{"v":1,"op":"undo"}\n', "'alert_id' must be a non-empty string"),
    (b'{"v":1,"op":"verdict","verdict":"maybe"}\n', "verdict must be one of normal, anomaly"),
])
def test_bad_feedback_files_are_one_clear_error(tmp_path: Path, content: bytes, what: str) -> None:
    p = tmp_path / "f.jsonl"
    p.write_bytes(orjson.dumps(undo_record("x", "ann")) + b"\n\n" + content)
    with pytest.raises(FeedbackError, match=what.replace("(", r"\(")) as e:
        read_feedback(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_bad_verdict_fields_name_the_field(tmp_path: Path) -> None:
    good = verdict("a1", (3, 4))
    for field, value, what in (("ids", [], "'ids'"), ("ids", [3, -4], "every id"), ("n_context", 2, "n_context"),
                               ("templates", {"3": ["E1"]}, "templates entry"), ("by", "", "'by'")):
        p = tmp_path / f"{field}.jsonl"
        p.write_bytes(orjson.dumps({**good, field: value}) + b"\n")
        with pytest.raises(FeedbackError, match=what):
            read_feedback(p)


def test_a_record_being_written_is_read_once_whole(tmp_path: Path) -> None:
    p = write(tmp_path / "f.jsonl", verdict("a1", (3, 4)))
    line = orjson.dumps(verdict("a2", (5,)))
    with p.open("ab") as fh:
        fh.write(line[:20])  # half a record: not an error, not read
    fb = read_feedback(p)
    assert [v.alert_id for v in fb.standing] == ["a1"]
    with p.open("ab") as fh:
        fh.write(line[20:])  # whole, still without its newline
    assert [v.alert_id for v in read_feedback(p).standing] == ["a1", "a2"]


def test_verdict_from_alert_checks_ids_and_vocab() -> None:
    a = alert("x", (3, 4))
    v = verdict_from_alert(a, NORMAL, VOCAB, TAG, "ann")
    assert v.pattern == ((3, 4), 0) and v.templates == {3: ("E1", "a <*>"), 4: ("E2", "b <*>")} and v.source == "hdfs"
    old = alert("x", (3, 4))
    del old["data"]["window"]["ids"]
    with pytest.raises(FeedbackError, match="carries no window ids"):
        verdict_from_alert(old, NORMAL, VOCAB, TAG, "ann")
    with pytest.raises(FeedbackError, match="scored under vocab 'ffff"):
        verdict_from_alert(alert("x", (3, 4), vocab="ffff"), NORMAL, VOCAB, TAG, "ann")
    with pytest.raises(FeedbackError, match="do not fit the bundle's vocab"):
        verdict_from_alert(alert("x", (3, 99)), NORMAL, VOCAB, TAG, "ann")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(MODEL, "cpu", batch_size=64, cache_size=1000)


def test_detector_decides_feedback_windows_normal_and_learns_them(detector: Detector, tmp_path: Path) -> None:
    """The equality rule: same ids and same context -> normal, reason "feedback"; the same ids with
    another context, or one event more, are judged by the scores, which now count the feedback
    window among the normal ones; an undo restores the bundle's reference."""
    from logad.feedback import apply_feedback

    v = detector.bundle.vocab
    ids = tuple(v.id_of(k) for k in ("E5", "E5", "E22", "E7", "E11", "E10"))  # an HDFS write that failed
    w = Window("hdfs", "blk_1", 0, ids, 0, 1.0, 2.0, "complete", True, 6)
    longer = Window("hdfs", "blk_2", 0, ids + (v.id_of("E10"),), 0, 1.0, 2.0, "complete", True, 7)
    ctx = Window("hdfs", "blk_3", 0, ids, 1, 1.0, 2.0, "complete", True, 6)
    before = detector.score_windows([w, longer, ctx], details=True)
    assert all(s.is_anomaly for s in before)
    a = make_event(before[0], detector.version, {}, vocab=vocab_tag(v))
    path = write(tmp_path / "f.jsonl", verdict_from_alert(a, NORMAL, v, vocab_tag(v), "ann").record())
    apply_feedback(detector, path)
    after = detector.score_windows([w, longer, ctx], details=True)
    assert not after[0].is_anomaly and after[0].reasons == (FEEDBACK_REASON,) and after[0].scores["combined"] <= 0
    # not the same window: judged by the scores, which now see the feedback window among the normal ones
    assert FEEDBACK_REASON not in after[1].reasons + after[2].reasons
    assert after[1].scores["edit_tail"] < before[1].scores["edit_tail"]
    assert detector.score_cached([w])[0].reasons == (FEEDBACK_REASON,)  # the cached path decides alike
    append_record(path, undo_record(a["id"], "ann"))
    apply_feedback(detector, path)
    again = detector.score_windows([w, longer], details=True)  # undone: the bundle's reference again
    assert again[0].is_anomaly and again[1].scores == before[1].scores


def test_detect_applies_the_bundles_feedback(tmp_path: Path) -> None:
    """`logad detect` with a --normal verdict: that window's alert is gone, every other alert stays."""
    from logad.config import SessionConfig
    from logad.detect_files import detect_paths

    def run(out: Path, feedback: Path) -> list[dict]:
        detect_paths([RAW], MODEL, None, out, SessionConfig(idle_timeout_s=3), "cpu", order="file", feedback=feedback)
        return [orjson.loads(line) for line in out.read_bytes().splitlines()]

    first = run(tmp_path / "a1.jsonl", tmp_path / "none.jsonl")
    picked = next(a for a in first if a["data"]["window"]["ids"] and len(a["data"]["window"]["ids"]) < 10)
    vocab = Detector.load(MODEL, "cpu").bundle.vocab
    fb = write(tmp_path / "fb.jsonl", verdict_from_alert(picked, NORMAL, vocab, vocab_tag(vocab), "ann").record())
    second = run(tmp_path / "a2.jsonl", fb)
    same = [a for a in first if (a["data"]["window"]["ids"], a["data"]["window"]["n_context"])
            == (picked["data"]["window"]["ids"], picked["data"]["window"]["n_context"])]
    assert {a["id"] for a in second} == {a["id"] for a in first} - {a["id"] for a in same}
