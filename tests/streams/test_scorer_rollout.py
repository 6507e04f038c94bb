"""The scorer's live rollout without a broker (streams/rollout.py, streams/scorer.py): fake detectors,
consumer and producer, a bundle folder and a feedback file on disk.

A new bundle is swapped in between batches (a batch being scored finishes on its model), windows
records of the previous vocab are still scored by the previous bundle, a third vocab is
dead-lettered, a bundle that fails to load is counted once per state of its folder while the old
one keeps scoring, a half-written copy of the real bundle is never loaded, feedback is applied to
every kept bundle, and an unknown vocab makes the scorer look for its bundle before refusing it."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import orjson
from prometheus_client import CollectorRegistry

from logad.alerts import vocab_tag
from logad.config import ScorerConfig, Settings, TopicsConfig
from logad.errors import ArtifactError
from logad.feedback import NORMAL, append_record, verdict_from_alert
from logad.records import Window, WindowScore
from logad.templates import TemplateEntry, TemplateVocab
from streams.codec import encode_windows
from streams.prometheus import ScorerMetrics
from streams.rollout import Watcher, bundle_state
from tests.streams.test_stream_units import FakeConsumer, FakeProducer

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(topics=TopicsConfig(scores="S", alerts="A", dead_letter="D", windows="W"),
                    scorer=ScorerConfig(evidence_lines=0))
V1 = TemplateVocab([TemplateEntry("E1", "a <*>"), TemplateEntry("E2", "b <*>"), TemplateEntry("E3", "c")])
V2 = TemplateVocab([*V1.entries, TemplateEntry("E4", "d")])  # an id-extension of V1
V3 = TemplateVocab([TemplateEntry("X", "x")])


class FakeDetector:
    """Anomalous when a window has more than 2 ids, unless feedback says its window is normal."""

    def __init__(self, version: str, vocab: TemplateVocab, path: Path, delay: threading.Event | None = None) -> None:
        self.version, self.thresholds, self.feedback = version, SimpleNamespace(values={"max_nll": 1.0}), frozenset()
        self.bundle = SimpleNamespace(vocab=vocab, path=path, weights_sha256=version.encode().hex().ljust(64, "0"))
        self.delay, self.scored = delay, 0

    def score_windows(self, windows: list[Window], details: bool = False) -> list[WindowScore]:
        if self.delay is not None:
            self.delay.wait(5)
        self.scored += len(windows)
        return [WindowScore(w, {"max_nll": float(len(w.ids)), "combined": 1.0}, len(w.ids) > 2
                            and (w.ids, w.n_context) not in self.feedback, ("max_nll > 1",)) for w in windows]

    def apply_overlay(self, overlay) -> None:
        self.feedback = overlay.normal


def bundle(path: Path, text: str) -> Path:
    """A bundle folder as the watcher sees it: its identity is its manifest and thresholds."""
    path.mkdir(exist_ok=True)
    (path / "manifest.json").write_text(text)
    (path / "thresholds.json").write_text("{}")
    return path


def records(vocab: TemplateVocab, sessions: list[str], start: int = 0) -> list[SimpleNamespace]:
    ws = [Window("hdfs", s, 0, (3, 4, 5), 0, 1.0, 2.0, "idle", True, 3) for s in sessions]
    return [SimpleNamespace(topic="W", partition=0, offset=start + i, key=w.session_id.encode(), value=v, timestamp=0)
            for i, (w, v) in enumerate((w, encode_windows([w], vocab=vocab_tag(vocab))[0]) for w in ws)]


def setup(tmp_path: Path, loads: list, det: FakeDetector | None = None):
    from streams.scorer import Scorer

    folder = bundle(tmp_path / "m", "v1")
    det = det or FakeDetector("m-1", V1, folder)
    metrics = new_metrics()
    producer = FakeProducer()
    scorer = Scorer(det, FakeConsumer(), producer, SETTINGS, metrics, identity=bundle_state(folder)[0])

    def load(model_dir: Path):
        item = loads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    scorer.watcher = Watcher(scorer, folder, tmp_path / "feedback.jsonl", load, 0.05, metrics)
    return scorer, producer, metrics, folder


def sent(producer: FakeProducer, topic: str) -> list[dict]:
    out = [orjson.loads(v) for t, _, v in producer.sent if t == topic]
    return [e for o in out for e in o["scores"]] if topic == "S" else out


def new_metrics() -> ScorerMetrics:
    reg = CollectorRegistry()
    m = ScorerMetrics(reg)
    m.registry = reg  # type: ignore[attr-defined]
    return m


def value(metrics: ScorerMetrics, name: str, what: str) -> float:
    metric = {"reloads": "logad_model_reloads_total", "failures": "logad_model_reload_failures_total"}[name]
    return metrics.registry.get_sample_value(metric, {"what": what}) or 0.0  # type: ignore[attr-defined]


def info(metrics: ScorerMetrics) -> list[str]:
    """The versions logad_model_info shows (one series: the running bundle)."""
    return [s.labels["version"] for m in metrics.registry.collect()  # type: ignore[attr-defined]
            if m.name == "logad_model_info" for s in m.samples]


def test_same_vocab_swap_between_batches(tmp_path: Path) -> None:
    new = FakeDetector("m-2", V1, tmp_path / "m")
    scorer, producer, metrics, folder = setup(tmp_path, [new])

    async def go() -> None:
        await scorer.handle(records(V1, ["s1", "s2"]))
        assert not await scorer.watcher.poll()  # nothing changed
        bundle(folder, "v2")
        assert await scorer.watcher.poll()
        await scorer.handle(records(V1, ["s3"], start=2))
        assert not await scorer.watcher.poll()  # the running bundle's identity now

    asyncio.run(go())
    by_session = {a["subject"]: a["data"]["model_version"] for a in sent(producer, "A")}
    assert by_session == {"s1": "m-1", "s2": "m-1", "s3": "m-2"}
    assert all(a["data"]["vocab"] == vocab_tag(V1) for a in sent(producer, "A"))
    assert info(metrics) == ["m-2"] and value(metrics, "reloads", what="bundle") == 1
    assert scorer.models.tags == {vocab_tag(V1)} and scorer.det is new


def test_a_batch_being_scored_finishes_on_its_model(tmp_path: Path) -> None:
    gate = threading.Event()
    old = FakeDetector("m-1", V1, tmp_path / "m", delay=gate)
    scorer, producer, _, folder = setup(tmp_path, [FakeDetector("m-2", V1, tmp_path / "m")], det=old)

    async def go() -> None:
        batch = asyncio.create_task(scorer.handle(records(V1, ["s1", "s2"])))
        await asyncio.sleep(0.05)  # the batch is in the model (its thread waits on the gate)
        bundle(folder, "v2")
        swap = asyncio.create_task(scorer.watcher.poll())
        await asyncio.sleep(0.05)
        assert not swap.done() and scorer.det is old  # loaded, waiting for the batch
        gate.set()
        await batch
        assert await swap
        await scorer.handle(records(V1, ["s3"], start=2))

    asyncio.run(go())
    assert [(a["subject"], a["data"]["model_version"]) for a in sent(producer, "A")] == [
        ("s1", "m-1"), ("s2", "m-1"), ("s3", "m-2")]


def test_previous_vocab_scored_by_its_bundle_a_third_dead_lettered(tmp_path: Path) -> None:
    v3 = TemplateVocab([*V2.entries, TemplateEntry("E5", "e")])
    scorer, producer, metrics, folder = setup(tmp_path, [FakeDetector("m-2", V2, tmp_path / "m"),
                                                         FakeDetector("m-3", v3, tmp_path / "m")])

    async def go() -> None:
        bundle(folder, "v2")
        await scorer.watcher.poll()
        # windows cut by a worker still on V1, one already on V2, one of a vocab nobody runs
        await scorer.handle(records(V1, ["old"]) + records(V2, ["new"], 1) + records(V3, ["alien"], 2))
        bundle(folder, "v3")
        await scorer.watcher.poll()  # a third bundle: V1's is let go (two are kept)
        await scorer.handle(records(V1, ["late"], 3) + records(v3, ["newest"], 4))

    asyncio.run(go())
    assert {a["subject"]: (a["data"]["model_version"], a["data"]["vocab"]) for a in sent(producer, "A")} == {
        "old": ("m-1", vocab_tag(V1)), "new": ("m-2", vocab_tag(V2)), "newest": ("m-3", vocab_tag(v3))}
    dead = [orjson.loads(v) for t, _, v in producer.sent if t == "D"]
    assert [(d["offset"], d["reason"]) for d in dead] == [(2, "vocab_mismatch"), (3, "vocab_mismatch")]
    assert scorer.models.tags == {vocab_tag(V2), vocab_tag(v3)} and info(metrics) == ["m-3"]


def test_failed_load_counted_once_per_folder_state_old_bundle_keeps_scoring(tmp_path: Path) -> None:
    scorer, producer, metrics, folder = setup(tmp_path, [ArtifactError("weights: sha256 differs"),
                                                         FakeDetector("m-2", V1, tmp_path / "m")])

    async def go() -> None:
        bundle(folder, "v2")
        assert not await scorer.watcher.poll()
        assert not await scorer.watcher.poll()  # the same folder: not tried again
        await scorer.handle(records(V1, ["s1"]))
        (folder / "weights.safetensors").write_bytes(b"the rest of the copy")
        assert await scorer.watcher.poll()

    asyncio.run(go())
    assert value(metrics, "failures", what="bundle") == 1 and value(metrics, "reloads", what="bundle") == 1
    assert [a["data"]["model_version"] for a in sent(producer, "A")] == ["m-1"] and scorer.det.version == "m-2"


def test_feedback_applied_to_every_kept_bundle_bad_file_keeps_it(tmp_path: Path) -> None:
    scorer, producer, metrics, folder = setup(tmp_path, [FakeDetector("m-2", V2, tmp_path / "m")])
    fb = tmp_path / "feedback.jsonl"

    async def go() -> None:
        bundle(folder, "v2")
        await scorer.watcher.poll()
        await scorer.handle(records(V1, ["s1"]))
        (alert,) = sent(producer, "A")
        append_record(fb, verdict_from_alert(alert, NORMAL, V1, vocab_tag(V1), "ann").record())
        assert await scorer.watcher.poll()
        await scorer.handle(records(V1, ["s2"], 1) + records(V2, ["s3"], 2))
        with fb.open("ab") as fh:
            fh.write(b"not json\n")
        assert not await scorer.watcher.poll() and not await scorer.watcher.poll()
        await scorer.handle(records(V2, ["s4"], 3))

    asyncio.run(go())
    assert [a["subject"] for a in sent(producer, "A")] == ["s1"]  # V2 extends V1: the verdict holds for both
    assert {s["subject"] for s in sent(producer, "S")} == {"s1", "s2", "s3", "s4"}
    assert value(metrics, "reloads", what="feedback") == 1 and value(metrics, "failures", what="feedback") == 1
    assert all(m.detector.feedback == {((3, 4, 5), 0)} for m in scorer.models.all())


def test_unknown_vocab_looks_for_its_bundle_before_refusing(tmp_path: Path) -> None:
    scorer, producer, _, folder = setup(tmp_path, [FakeDetector("m-2", V2, tmp_path / "m")])

    async def go() -> None:
        bundle(folder, "v2")  # on disk, not polled yet: a worker already cut windows with it
        await scorer.handle(records(V2, ["s1"]))

    asyncio.run(go())
    assert [(a["subject"], a["data"]["model_version"]) for a in sent(producer, "A")] == [("s1", "m-2")]
    assert not [t for t, _, _ in producer.sent if t == "D"]


def restamp(src: Path, dst: Path, note: str) -> tuple[str, Path]:
    """Bundle `src` again in folder `dst` with a weights file that differs (same tensors, other
    metadata): a new model version, same vocab, same scores. Writes the manifest and thresholds
    now and returns (the new weights sha256, the weights file to move in last)."""
    from safetensors.torch import load_file, save_file

    from logad.artifacts import sha256_file
    from logad.thresholds import content_sha256

    tmp = dst.parent / f".{dst.name}.{note}.weights"
    save_file(load_file(str(src / "weights.safetensors")), str(tmp), metadata={"format": "logad-model/1", "note": note})
    sha = sha256_file(tmp)
    manifest = orjson.loads((src / "manifest.json").read_bytes())
    manifest["weights"]["sha256"] = sha
    thresholds = {k: v for k, v in orjson.loads((src / "thresholds.json").read_bytes()).items() if k != "sha256"}
    thresholds["model_sha256"] = sha
    thresholds["sha256"] = content_sha256(thresholds)  # (sealed: an edited thresholds file is refused)
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    (dst / "thresholds.json").write_bytes(orjson.dumps(thresholds))
    return sha, tmp


def test_half_written_copy_of_the_real_bundle_is_never_loaded(tmp_path: Path) -> None:
    from logad.detector import Detector
    from streams.scorer import Scorer

    folder = tmp_path / "hdfs"
    shutil.copytree(ROOT / "artifacts/models/hdfs", folder)
    det = Detector.load(folder, "cpu")
    metrics = new_metrics()
    scorer = Scorer(det, FakeConsumer(), FakeProducer(), SETTINGS, metrics, identity=bundle_state(folder)[0])
    scorer.watcher = Watcher(scorer, folder, folder / "feedback.jsonl", lambda d: Detector.load(d, "cpu"), 1, metrics)
    sha, weights = restamp(folder, folder, "v2")  # manifest and thresholds new, weights not yet

    async def go() -> None:
        assert not await scorer.watcher.poll()
        shutil.move(weights, folder / "weights.safetensors")
        assert await scorer.watcher.poll()

    asyncio.run(go())
    assert value(metrics, "failures", what="bundle") == 1
    assert scorer.det.version == f"hdfs-{sha[:12]}" != det.version and info(metrics) == [scorer.det.version]
