"""The worker picks up a new bundle without a restart when its vocab extends the running one.

    every scorer.reload_every_s (a Faust timer, watch(); file reads in a thread):
      model_dir: streams.rollout.bundle_state (sha256 of manifest.json + thresholds.json) changed
        -> the bundle's vocab, format and session rules (streams.session_processor.load_session_rules:
           the vocab's sha256 against the manifest; a bundle still being copied fails it and is
           tried again when the folder changes)
        -> the same vocab: only logad_model_info follows (the new version)
        -> a vocab that extends the running one (extension_problem: every template keeps its id,
           key, text and pattern; the same masking and format; new templates appended) and the same
           log format and session rules: the windows fingerprint, then the matcher, switch to it
           between two ingest batches. Events already in open sessions keep their meaning (their
           ids name the same templates); windows cut from then on carry the new fingerprint, which
           the scorer scores with the new bundle (streams/rollout.py)
        -> anything else: refused, an ERROR log and logad_model_reload_failures_total{what="vocab"};
           the running vocab stays: its ids would name other templates, a restart is needed
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from logad.alerts import vocab_tag

log = logging.getLogger("logad.worker")


def extension_problem(old: Any, new: Any) -> str:
    """"" when TemplateVocab `new` is an id-extension of `old` (every template of `old` keeps its
    id, key, text and pattern; the same masking and format; templates only appended), else why not."""
    if new.format_name != old.format_name:
        return f"the vocab is for format {new.format_name!r}, the running one for {old.format_name!r}"
    if new.masking_fingerprint != old.masking_fingerprint:
        return "the vocab masks lines with other rules"
    if len(new) < len(old):
        return f"the vocab has {len(new)} templates, fewer than the running one's {len(old)}"
    if new.keys[:len(old.keys)] != old.keys:
        i = next(i for i, (a, b) in enumerate(zip(old.keys, new.keys)) if a != b)
        return f"template id {i} is {new.keys[i]!r}, in the running vocab {old.keys[i]!r}"
    for i, (a, b) in enumerate(zip(old.entries, new.entries)):
        if (a.text, a.pattern, a.token_wildcards) != (b.text, b.pattern, b.token_wildcards):
            return f"template {a.key!r} (id {i + len(old.keys) - len(old.entries)}) matches other lines now"
    return ""


class VocabWatcher:
    """Looks at the worker's bundle folder (see the module docstring). `ctx`: the worker's
    streams.app.WorkerContext (its ingestor's matcher, its runner's windows fingerprint, its
    session rules and metrics); `vocab`, `fmt`: what the worker was started with."""

    def __init__(self, ctx: Any, model_dir: str | Path, settings: Any, vocab: Any, fmt: Any) -> None:
        from streams.rollout import bundle_state

        self.ctx, self.model_dir, self.settings = ctx, Path(model_dir), settings
        self.vocab, self.fmt = vocab, fmt
        self.identity = bundle_state(model_dir)[0]
        self._failed = ""  # the folder state (bundle_state's attempt) last refused or unreadable
        self.picked = self.refused = 0

    async def poll(self) -> bool:
        """One look; True when a new vocab was taken."""
        from streams.rollout import bundle_state
        from streams.session_processor import load_session_rules

        if not self.ctx.ready.is_set():
            return False
        identity, attempt = await asyncio.to_thread(bundle_state, self.model_dir)
        if identity == self.identity or attempt == self._failed:
            return False
        try:
            vocab, fmt, rules = await asyncio.to_thread(load_session_rules, self.model_dir, None, self.settings.sessions)
        except Exception as e:  # noqa: BLE001 (ArtifactError while a bundle is copied in; anything else alike)
            self._failed = attempt
            log.warning("new bundle in %s not read (%s: %s); trying again when the folder changes",
                        self.model_dir, type(e).__name__, e)
            return False
        tag = vocab_tag(vocab)
        if tag == vocab_tag(self.vocab):  # new weights or thresholds: the scorer's business
            self.identity = identity
            self._model_info(vocab)
            return False
        running = self.ctx.runner.proc.sessionizer.rules
        problem = (extension_problem(self.vocab, vocab)
                   or ("its log format differs" if (fmt.name, fmt.source_text) != (self.fmt.name, self.fmt.source_text)
                       else "")
                   or ("its window rule or terminal templates differ" if rules != running else ""))
        if problem:
            self._failed = attempt
            self.refused += 1
            self.ctx.metrics.reload_failures.labels("vocab").inc()
            log.error("new bundle in %s NOT taken: %s. Its template ids would not mean what the running "
                      "vocab's mean: restart the worker (and the scorer) to run it", self.model_dir, problem)
            return False
        self.swap(vocab)
        self.identity, self._failed = identity, ""
        return True

    def swap(self, vocab: Any) -> None:
        """Take `vocab` (an extension of the running one): no await in here, so between two batches."""
        from logad.drift import matcher

        old = self.vocab
        # the fingerprint first: a window cut meanwhile holds old ids only, which the new vocab keeps
        self.ctx.runner.vocab = vocab_tag(vocab)
        self.ctx.ingestor.vocab = matcher(vocab, self.settings.drift)
        self.vocab = vocab
        self.picked += 1
        self.ctx.metrics.reloads.labels("vocab").inc()
        self._model_info(vocab)
        log.info("vocab %s (%d templates) taken for %s (%d templates): windows now carry its fingerprint",
                 vocab_tag(vocab), len(vocab), vocab_tag(old), len(old))

    def _model_info(self, vocab: Any) -> None:
        from streams.prometheus import set_model_info

        try:
            set_model_info(self.ctx.metrics.model_info, self.model_dir, self.fmt.name, vocab)
        except Exception as e:  # metrics only
            log.debug("model info: %s", e)


def watch(app: Any, ctx: Any, model_dir: str | Path, settings: Any) -> VocabWatcher:
    """Register the look at model_dir as a timer of the worker's Faust app (every
    scorer.reload_every_s, on every worker)."""
    from streams.session_processor import load_session_rules

    vocab, fmt, _ = load_session_rules(model_dir, None, settings.sessions)
    watcher = VocabWatcher(ctx, model_dir, settings, vocab, fmt)

    @app.timer(settings.scorer.reload_every_s)
    async def look_for_bundle() -> None:
        try:
            await watcher.poll()
        except Exception:  # never a reason to stop the worker
            log.exception("looking for a new bundle failed; trying again at the next look")

    return watcher
