"""The worker takes a new bundle whose vocab extends the running one without a restart, and refuses
any other (streams/live_vocab.py): a copy of the shipped HDFS bundle, its vocab extended or
reordered on disk, a fake worker context (matcher, windows fingerprint, session rules, metrics)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import CollectorRegistry

from logad.alerts import vocab_tag
from logad.artifacts import sha256_file
from logad.config import Settings
from logad.drift import DriftVocab
from logad.templates import TemplateEntry, TemplateVocab
from streams.live_vocab import extension_problem, watch
from streams.prometheus import WorkerMetrics
from streams.session_processor import load_session_rules

ROOT = Path(__file__).resolve().parents[2]
NEW_LINE = "Brand new statement for block blk_123"
OLD_LINE = "Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:6"


def extended(old: TemplateVocab) -> TemplateVocab:
    text = "Brand new statement for block <*>"
    return TemplateVocab([*old.entries, TemplateEntry("E99", text, 0, old.masker.mask_template(text))],
                         format_name=old.format_name, masker=old.masker)


def test_extension_problem() -> None:
    old = TemplateVocab.load(ROOT / "artifacts/models/hdfs/template_vocab.json")
    new = extended(old)
    assert extension_problem(old, new) == "" and extension_problem(old, old) == ""
    assert "fewer than" in extension_problem(new, old)
    swapped = TemplateVocab([old.entries[1], old.entries[0], *old.entries[2:]], format_name=old.format_name,
                            masker=old.masker)
    assert "template id 3 is 'E2'" in extension_problem(old, swapped)
    edited = TemplateVocab([TemplateEntry("E1", "other text", 0, "other text"), *old.entries[1:]],
                           format_name=old.format_name, masker=old.masker)
    assert "matches other lines now" in extension_problem(old, edited)
    other = TemplateVocab(list(old.entries), format_name="openstack", masker=old.masker)
    assert "for format 'openstack'" in extension_problem(old, other)


def write_vocab(folder: Path, vocab: TemplateVocab, vocab_last: bool = False) -> None:
    """Put `vocab` in the bundle folder with its manifest; vocab_last: the manifest only, the vocab
    file waits in vocab.tmp.json beside the folder (a copy in progress)."""
    tmp = folder.parent / "vocab.tmp.json"
    vocab.save(tmp)
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest["vocab"].update(sha256=sha256_file(tmp), size=len(vocab))
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    if not vocab_last:
        shutil.move(tmp, folder / "template_vocab.json")


class FakeApp:
    def __init__(self) -> None:
        self.timers: list = []

    def timer(self, interval: float):
        def register(fn):
            self.timers.append((interval, fn))
            return fn
        return register


@pytest.fixture
def worker(tmp_path: Path):
    folder = tmp_path / "hdfs"
    shutil.copytree(ROOT / "artifacts/models/hdfs", folder)
    settings = Settings()
    vocab, _, rules = load_session_rules(folder, None, settings.sessions)
    reg = CollectorRegistry()
    ctx = SimpleNamespace(ready=asyncio.Event(), metrics=WorkerMetrics(reg),
                          ingestor=SimpleNamespace(vocab=DriftVocab(vocab, settings.drift)),
                          runner=SimpleNamespace(vocab=vocab_tag(vocab), proc=SimpleNamespace(
                              sessionizer=SimpleNamespace(rules=rules))))
    ctx.ready.set()
    app = FakeApp()
    watcher = watch(app, ctx, folder, settings)
    ((interval, look),) = app.timers
    assert interval == settings.scorer.reload_every_s
    return SimpleNamespace(folder=folder, vocab=vocab, ctx=ctx, reg=reg, watcher=watcher, look=look)


def count(reg: CollectorRegistry, name: str) -> float:
    return reg.get_sample_value(name, {"what": "vocab"}) or 0.0


def test_an_extension_is_taken_between_batches(worker, caplog: pytest.LogCaptureFixture) -> None:
    w, ctx = worker.watcher, worker.ctx
    new = extended(worker.vocab)
    assert ctx.ingestor.vocab.match(NEW_LINE) == 1  # UNK

    async def go() -> None:
        await worker.look()
        assert w.picked == 0  # nothing changed
        write_vocab(worker.folder, new, vocab_last=True)  # a copy in progress: the manifest only
        await worker.look()
        assert w.picked == 0 and ctx.runner.vocab == vocab_tag(worker.vocab)
        shutil.move(worker.folder.parent / "vocab.tmp.json", worker.folder / "template_vocab.json")
        await worker.look()

    asyncio.run(go())
    assert w.picked == 1 and ctx.runner.vocab == vocab_tag(new)
    assert ctx.ingestor.vocab.match(NEW_LINE) == len(worker.vocab)  # the appended template's id
    assert ctx.ingestor.vocab.match(OLD_LINE) == worker.vocab.match(OLD_LINE)  # old ids keep their meaning
    assert isinstance(ctx.ingestor.vocab, DriftVocab)
    assert count(worker.reg, "logad_model_reloads_total") == 1
    assert [s.labels["vocab"] for m in worker.reg.collect() if m.name == "logad_model_info"
            for s in m.samples] == [vocab_tag(new)]


def test_a_vocab_that_is_no_extension_is_refused(worker, caplog: pytest.LogCaptureFixture) -> None:
    w, ctx = worker.watcher, worker.ctx
    old = worker.vocab
    reordered = TemplateVocab([old.entries[1], old.entries[0], *old.entries[2:]], format_name=old.format_name,
                              masker=old.masker)
    matcher = ctx.ingestor.vocab

    async def go() -> None:
        write_vocab(worker.folder, reordered)
        with caplog.at_level(logging.ERROR, logger="logad.worker"):
            await worker.look()
            await worker.look()  # the same folder: refused once

    asyncio.run(go())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "NOT taken" in errors[0].getMessage() and "restart" in errors[0].getMessage()
    assert "template id 3 is 'E2'" in errors[0].getMessage()
    assert ctx.runner.vocab == vocab_tag(old) and ctx.ingestor.vocab is matcher and w.refused == 1
    assert count(worker.reg, "logad_model_reload_failures_total") == 1


def test_the_real_worker_context_takes_an_extension(tmp_path: Path) -> None:
    """watch() and swap() on the worker's own app and context (built, not started): the matcher and
    the windows fingerprint they switch are the ones the ingest and the session runner use."""
    from streams.app import build_app

    folder = tmp_path / "hdfs"
    shutil.copytree(ROOT / "artifacts/models/hdfs", folder)
    settings = Settings()
    app, ctx = build_app(settings, app_id="live-vocab-test", model_dir=folder, datadir=tmp_path / "faust",
                         metrics=WorkerMetrics(CollectorRegistry()))
    watcher = watch(app, ctx, folder, settings)
    new = extended(watcher.vocab)
    # no template fits the line yet: a pending id (logad.pending)
    assert ctx.ingestor.vocab.match(NEW_LINE) >= len(watcher.vocab) and ctx.runner.vocab == vocab_tag(watcher.vocab)
    watcher.swap(new)
    assert ctx.ingestor.vocab.match(NEW_LINE) == len(new) - 1 and ctx.runner.vocab == vocab_tag(new)
