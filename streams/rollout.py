"""Live rollout in the scorer: a new bundle, or new feedback, picked up without a restart.

    every scorer.reload_every_s (Watcher.poll; file reads, hashes and loads in a thread: the event
    loop keeps fetching and scoring):
      model_dir: sha256 of manifest.json + thresholds.json = the bundle's identity (the manifest
        holds the weights' and the vocab's hashes, the thresholds those of the weights and the
        reference: any change of the bundle changes it; a touched file does not)
        -> the running bundle's: nothing
        -> another: Detector.load (every hash verified: a bundle still being copied fails it) with
           the feedback applied -> Scorer.swap, between two batches
        -> load failed: logged and counted (logad_model_reload_failures_total{what="bundle"}) once
           per state of the folder (identity + each file's size and mtime), retried when the folder
           changes again; the running bundle keeps scoring
      template_decisions.jsonl (logad.pending): its size or mtime changed -> read again, handed to
        every kept bundle's pending statements (a bad file: logged, counted, the decisions in force stay)
      feedback file (logad.feedback): its records' digest changed -> the overlay applied to every
        kept detector (Scorer.apply_feedback, between two batches); a bad file is logged and counted
        (what="feedback") once per state, the overlay in force stays
    Models (the scorer's bundles): vocab fingerprint -> the newest bundle with that vocab, at most
      MAX_MODELS of them: windows records carry the worker's fingerprint, so windows a worker cut
      under the previous vocab are still scored by the bundle of that vocab; a bundle with the
      same vocab replaces the running one for every window after the swap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logad.alerts import EventEncoder, vocab_tag
from logad.artifacts import MANIFEST
from logad.errors import ConfigError
from logad.feedback import Feedback, FeedbackError, read_feedback
from logad.template_decisions import decisions_path, read_decisions

log = logging.getLogger("logad.scorer")

MAX_MODELS = 2  # bundles kept: the newest, and the previous one's vocab while its windows still arrive
THRESHOLDS = "thresholds.json"  # (logad.detector.THRESHOLDS; that module imports torch)


@dataclass
class Model:
    """One loaded bundle as the scorer uses it."""

    detector: Any  # logad.detector.Detector
    identity: str  # bundle_state()[0] of the folder it was loaded from
    tag: str  # vocab_tag of its vocab: the windows records it scores carry it
    encoder: EventEncoder  # its envelopes: its model version, its thresholds, its vocab

    @property
    def version(self) -> str:
        return self.detector.version


def model_of(detector: Any, identity: str = "") -> Model:
    tag = vocab_tag(detector.bundle.vocab)
    th = dict(detector.thresholds.values) if detector.thresholds else {}
    return Model(detector, identity, tag, EventEncoder(detector.version, th, vocab=tag))


class Models:
    """vocab fingerprint -> Model (oldest first; the last one added is `current`)."""

    def __init__(self, first: Model, keep: int = MAX_MODELS) -> None:
        self.keep = max(1, keep)
        self._by_tag: dict[str, Model] = {first.tag: first}
        self.tags: frozenset[str] = frozenset(self._by_tag)  # what unpack_record accepts

    @property
    def current(self) -> Model:
        return next(reversed(self._by_tag.values()))

    def get(self, tag: str) -> Model | None:
        return self._by_tag.get(tag)

    def all(self) -> list[Model]:
        return list(self._by_tag.values())

    def add(self, model: Model) -> list[Model]:
        """`model` becomes current (replacing the one of its vocab); returns the models let go."""
        dropped = [m for m in [self._by_tag.pop(model.tag, None)] if m is not None]
        self._by_tag[model.tag] = model
        while len(self._by_tag) > self.keep:
            dropped.append(self._by_tag.pop(next(iter(self._by_tag))))
        self.tags = frozenset(self._by_tag)
        return dropped


def bundle_state(model_dir: str | Path) -> tuple[str, str]:
    """(identity, attempt) of a bundle folder: identity = sha256 of manifest.json and
    thresholds.json (a missing one hashes as missing); attempt adds every file's name, size and
    mtime, so that a folder still being written is tried again once it changes."""
    p = Path(model_dir)
    h = hashlib.sha256()
    for name in (MANIFEST, THRESHOLDS):
        try:
            data = (p / name).read_bytes()
        except OSError:
            data = b"\0missing"
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    identity = h.hexdigest()
    try:
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())
    except OSError:
        files = []
    return identity, identity + repr(files)


def file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Watcher:
    """Looks at the bundle folder and the feedback file every `every_s` seconds (see the module
    docstring). `load(model_dir)` -> a Detector (in a thread); `scorer`: what swaps and applies."""

    def __init__(self, scorer: Any, model_dir: str | Path, feedback: Path, load: Callable[[str | Path], Any],
                 every_s: float, metrics: Any = None, decisions: Path | None = None) -> None:
        self.scorer, self.model_dir, self.feedback, self.load = scorer, Path(model_dir), feedback, load
        self.decisions = decisions or decisions_path(model_dir)
        self.every_s, self.metrics = every_s, metrics
        self.applied = ""  # digest of the feedback in force
        self._failed_bundle = ""  # attempt state of the last bundle that failed to load
        self._failed_feedback: tuple | None = None  # file state of the last feedback that failed to read
        self._lock = asyncio.Lock()  # one look at a time (poll and settle)
        self._decisions_state = file_state(self.decisions)  # as the bundle was loaded
        self.reloads = self.failures = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # never the reason the scorer stops
                log.exception("looking for a new bundle or feedback failed; trying again in %g s", self.every_s)

    async def poll(self) -> bool:
        """One look; True when a bundle was swapped in or feedback applied."""
        async with self._lock:
            return (await self._bundle()) | (await self._feedback()) | (await self._decisions())

    def _count(self, what: str, ok: bool) -> None:
        if ok:
            self.reloads += 1
        else:
            self.failures += 1
        if self.metrics is not None:
            (self.metrics.reloads if ok else self.metrics.reload_failures).labels(what).inc()

    async def _bundle(self) -> bool:
        identity, attempt = await asyncio.to_thread(bundle_state, self.model_dir)
        running = self.scorer.models.current
        if identity == running.identity or attempt == self._failed_bundle:
            return False
        try:
            model = model_of(await asyncio.to_thread(self._load_with_feedback), identity)
            await self.scorer.swap(model)
        except Exception as e:  # noqa: BLE001 (ArtifactError for a bundle being copied; anything else alike)
            self._failed_bundle = attempt
            self._count("bundle", False)
            log.error("new bundle in %s not loaded (%s: %s); %s keeps scoring, trying again when the folder "
                      "changes", self.model_dir, type(e).__name__, e, running.version)
            return False
        self._failed_bundle = ""
        self._count("bundle", True)
        log.info("bundle %s (vocab %s) swapped in for %s (vocab %s)", model.version, model.tag, running.version,
                 running.tag)
        return True

    def _load_with_feedback(self) -> Any:
        det = self.load(self.model_dir)
        fb = read_feedback(self.feedback)  # (a bad file: this bundle waits, as the overlay in force does)
        det.apply_overlay(fb.overlay(det.bundle.vocab))
        return det

    async def _feedback(self) -> bool:
        state = await asyncio.to_thread(file_state, self.feedback)
        if state is not None and state == self._failed_feedback:
            return False
        try:
            fb: Feedback = await asyncio.to_thread(read_feedback, self.feedback)
        except FeedbackError as e:
            self._failed_feedback = state
            self._count("feedback", False)
            log.error("feedback not applied: %s; the feedback in force stays", e)
            return False
        self._failed_feedback = None
        if fb.digest == self.applied:
            return False
        await self.scorer.apply_feedback(fb)
        self.applied = fb.digest
        self._count("feedback", True)
        log.info("feedback applied: %d verdicts in force, %d windows marked normal", len(fb.standing),
                 len(self.scorer.models.current.detector.feedback))
        return True

    async def _decisions(self) -> bool:
        """template_decisions.jsonl changed (a person accepted or rejected a pending statement, or
        this or another scorer promoted one): every kept bundle's pending statements follow it."""
        path = self.decisions
        state = await asyncio.to_thread(file_state, path)
        if state == self._decisions_state:
            return False
        self._decisions_state = state
        try:
            decided = await asyncio.to_thread(read_decisions, path)
        except ConfigError as e:
            self._count("decisions", False)
            log.error("template decisions not applied: %s; the decisions in force stay", e)
            return False
        for m in self.scorer.models.all():
            if getattr(m.detector, "pending", None) is not None:
                m.detector.pending.set_decisions(decided)
        self._count("decisions", True)
        log.info("template decisions applied: %d in force", len(decided))
        return True

    async def settle(self) -> None:
        """Look now (a windows record of an unknown vocab arrived: a worker may already run a new
        bundle this scorer has not loaded yet)."""
        await self.poll()
