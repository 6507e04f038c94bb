"""Detector: a loaded model bundle + its normal reference + calibrated thresholds -> decisions.

The one object that `logad score`, `logad evaluate`, `logad detect` and the streaming scorer call:
    windows -> WindowScorer scores -> Thresholds.decide -> WindowScore
and sessions (template-key sequences) -> windows -> per-session score and decision.
The combined score of a window is max over enabled methods of (score - threshold) / scale, and
(unseen_rate - limit) / limit for the hard rule: > 0 exactly when the decision is "anomaly", and a
continuous value for PR curves.

Adaptive tolerance: when the thresholds carry instability levels (logad.calibrate with R > 0), the
detector estimates each source's instability online from the windows it scores (logad.instability)
and scores and decides every batch at the level of that estimate; the estimate moves between calls
(a call is decided at the level its source had when it began), never within one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from logad.artifacts import Bundle, load_bundle, read_json, sha256_file, write_json
from logad.errors import ArtifactError
from logad.feedback import FEEDBACK_REASON, Overlay
from logad.instability import InstabilityTracker, observable
from logad.model import pick_device
from logad.records import Window, WindowScore
from logad.scoring import METHODS, Reference, WindowScorer
from logad.windows import is_complete, windows_of
from logad.thresholds import COMPLETE_ONLY, Thresholds

THRESHOLDS = "thresholds.json"
REFERENCE = "reference.safetensors"


def save_reference(model_dir: str | Path, ref: Reference) -> str:
    path = Path(model_dir) / REFERENCE
    save_file({k: v.contiguous() for k, v in ref.to_tensors().items()}, str(path))
    return sha256_file(path)


def load_reference(model_dir: str | Path, vocab_size: int) -> tuple[Reference, str]:
    path = Path(model_dir) / REFERENCE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: run `logad calibrate --model {model_dir}` first")
    try:
        ref = Reference.from_tensors(load_file(str(path)))
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable reference ({e})") from None
    if ref.seen.numel() != vocab_size or (ref.counts.numel() and ref.counts.shape[1] != vocab_size):
        raise ArtifactError(f"{path}: reference is for a vocab of {ref.seen.numel()} templates, model has {vocab_size}")
    return ref, sha256_file(path)


def save_thresholds(model_dir: str | Path, th: Thresholds) -> None:
    write_json(Path(model_dir) / THRESHOLDS, th.to_dict())


@dataclass(frozen=True, slots=True)
class SessionResult:
    session_id: str
    label: int | None
    score: float  # max combined window score (> 0 means anomalous)
    is_anomaly: bool
    scores: dict[str, float]  # per method, max over the session's windows
    n_windows: int
    n_events: int


class Detector:
    def __init__(self, bundle: Bundle, reference: Reference, thresholds: Thresholds | None,
                 device: torch.device | str = "cpu", batch_size: int = 256, cache_size: int = 0,
                 adapt: bool = True) -> None:
        self.bundle = bundle
        self.reference = reference
        self.thresholds = thresholds
        self.device = torch.device(device)
        self.batch_size = batch_size
        # (ids, n_context) -> [model scores, surprising-event dicts, decision if complete, decision if
        # cut]: the model is a pure function of the window's ids, and real sessions repeat (the 1,454
        # windows of the HDFS sample have 119 distinct id sequences). The decision (Thresholds.decide
        # + combined) is a pure function of those scores and of whether the window is complete, so
        # it is cached beside them: a hit costs a lookup and one WindowScore. Cleared when full
        # (O(1) eviction; the working set refills).
        self.cache_size = cache_size
        self._cache: dict[tuple, list] = {}
        self.cache_hits = self.cache_misses = 0
        # Repeats within one call are scored once, cache or not (False: every window is scored, the
        # baseline bench/scorer.py measures against).
        self.dedupe = True
        topk = thresholds.topk if thresholds else 9
        self.scorer = WindowScorer(bundle.model.to(self.device), reference, bos=bundle.vocab.BOS,
                                   pad=bundle.vocab.PAD, topk=topk, device=self.device,
                                   instability=thresholds.instability if thresholds else 0.0)
        # Per level: its thresholds (one level, the sealed one, for fixed-tolerance thresholds).
        # adapt=False, or fixed-tolerance thresholds: the sealed values at the sealed R, always.
        self.adapt = adapt and thresholds is not None and len(thresholds.levels) > 1
        self._levels = ([thresholds.at_level(i) for i in range(len(thresholds.levels))]  # type: ignore[union-attr]
                        if self.adapt else [thresholds])
        self._start = thresholds.start_level() if self.adapt else 0  # type: ignore[union-attr]
        self._trackers: dict[str, InstabilityTracker] = {}  # source -> its instability estimate
        self._frozen = False  # True while a chunk is decided again (its windows were observed once)
        self.pending = None  # logad.pending.PendingTemplates where windows may hold pending ids (logad.pending.attach)
        self.feedback: frozenset[tuple[tuple[int, ...], int]] = frozenset()  # (ids, n_context) marked normal

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", require_thresholds: bool = True,
             batch_size: int = 256, cache_size: int = 0, adapt: bool = True) -> Detector:
        dev = pick_device(device)
        bundle = load_bundle(model_dir, dev)
        ref, ref_sha = load_reference(model_dir, bundle.model.cfg.vocab_size)
        th = None
        if require_thresholds:
            th = Thresholds.from_dict(read_json(Path(model_dir) / THRESHOLDS, "thresholds file"))
            if th.model_sha256 != bundle.weights_sha256:
                raise ArtifactError(f"{Path(model_dir) / THRESHOLDS} was calibrated for other weights "
                                    f"({th.model_sha256[:12]} != {bundle.weights_sha256[:12]}): run `logad calibrate`")
            if th.reference_sha256 != ref_sha:
                raise ArtifactError(f"{Path(model_dir) / THRESHOLDS} does not match {REFERENCE} (tampered or stale)")
            unknown = set(th.values) - set(METHODS)
            if unknown:
                raise ArtifactError(f"{Path(model_dir) / THRESHOLDS}: unknown score methods {sorted(unknown)}")
        return cls(bundle, ref, th, dev, batch_size, cache_size, adapt)

    @property
    def version(self) -> str:
        return self.bundle.version

    def apply_overlay(self, overlay: Overlay) -> None:
        """Feedback (logad.feedback): a window equal to one people marked normal is decided normal
        (reason "feedback"), and those windows join the normal reference (the bundle's, extended).
        Replaces the previous overlay; not while a batch is being scored."""
        if overlay.normal == self.feedback:
            return
        s = self.scorer
        scorer = WindowScorer(s.model, self.reference, bos=s.bos, pad=s.pad, topk=s.topk, device=self.device,
                              instability=s.instability)
        if overlay.normal:
            scorer.extend_reference([ids for ids, _ in sorted(overlay.normal)], self.bundle.vocab.UNK)
        self.scorer, self.feedback = scorer, overlay.normal
        self._cache.clear()

    def level_of(self, source: str) -> int:
        """The tolerance level windows of this source are scored at now."""
        t = self._trackers.get(source) if self.adapt else None
        return t.level if t is not None else self._start

    def instability_state(self) -> dict[str, dict]:
        """Per source: the estimated rho, its level and instability R, the observations behind it."""
        return {src: {**t.state(), "instability": self._levels[t.level].instability}  # type: ignore[union-attr]
                for src, t in self._trackers.items()}

    @contextmanager
    def hypotheses(self) -> Iterator[None]:
        """Windows scored inside are what-ifs (logad.pending tries readings of a new statement), not
        traffic: they do not move the instability estimate."""
        frozen, self._frozen = self._frozen, True
        try:
            yield
        finally:
            self._frozen = frozen

    def _observe(self, windows: Sequence[Window], out: Sequence[WindowScore]) -> None:
        """Whole windows that look like instability feed their source's estimate (logad.instability)."""
        if not self.adapt or self._frozen:
            return
        touched = set()
        for w, ws in zip(windows, out):
            if not observable(ws.scores) or not is_complete(w.reason):
                continue
            t = self._trackers.get(w.source)
            if t is None:
                lv = self.thresholds.levels  # type: ignore[union-attr]
                t = self._trackers[w.source] = InstabilityTracker([x["rho"] for x in lv], self._start)
            t.observe(ws.scores["edit_ops"], len(w.ids))
            touched.add(w.source)
        for src in touched:
            self._trackers[src].update()

    def combined(self, scores: dict[str, float], complete: bool = True, th: Thresholds | None = None) -> float:
        th = th or self.thresholds
        if th is None:
            return scores["mean_nll"]
        scales = th.extra.get("scales", {})
        parts = [(scores[m] - t) / max(scales.get(m, 1.0), 1e-6) for m, t in th.values.items()
                 if complete or m not in COMPLETE_ONLY]
        parts.append((scores["unseen_rate"] - th.unseen_rate_max) / max(th.unseen_rate_max, 1e-6))
        return max(parts)

    def score_windows(self, windows: Sequence[Window], details: bool = False) -> list[WindowScore]:
        """Score windows in batches of similar length (padding is wasted compute: a batch pads to
        its longest window), answering repeated windows from the cache when it is on.

        The `scores` dict and the `surprising` dicts of the WindowScores are shared between repeats
        of a window (and with the cache): treat them as read-only."""
        raw: list[list | None] = [None] * len(windows)  # per window: its cache entry (see __init__)
        todo: list[int] = []  # windows to run through the model
        cache = self._cache if self.cache_size > 0 and details else None  # (only results with details are cached)
        same: dict[tuple, list[int]] = {}  # repeats within this call wait for their first (cache or not)
        level = {src: self.level_of(src) for src in {w.source for w in windows}}
        for i, w in enumerate(windows):
            if not self.dedupe and cache is None:
                todo.append(i)
                continue
            key = (w.ids, w.n_context, level[w.source])
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                raw[i] = hit
                self.cache_hits += 1
            elif key in same:
                same[key].append(i)
                self.cache_hits += cache is not None
            else:
                same[key] = [i]
                todo.append(i)
                self.cache_misses += cache is not None
        # by level, then length (stable: equal lengths keep their order); a batch holds one level
        todo.sort(key=lambda i: (level[windows[i].source], len(windows[i].ids)))
        k = 0
        while k < len(todo):
            lvl = level[windows[todo[k]].source]
            idx = [i for i in todo[k:k + self.batch_size] if level[windows[i].source] == lvl]
            k += len(idx)
            if self._levels[lvl] is not None:
                self.scorer.set_instability(self._levels[lvl].instability)
            scores, surprising = self.scorer.score([windows[i] for i in idx], details=details)
            for i, sc, ev in zip(idx, scores, surprising):
                entry = raw[i] = [sc, tuple(self._event(e) for e in ev) if details else (), None, None, lvl]
                key = (windows[i].ids, windows[i].n_context, lvl)
                for j in same.get(key, ())[1:]:
                    raw[j] = entry
                if cache is not None:
                    if len(cache) >= self.cache_size:
                        cache.clear()
                    cache[key] = entry
        out = self._finish(windows, raw)
        self._observe(windows, out)
        return out

    def score_cached(self, windows: Sequence[Window]) -> list[WindowScore] | None:
        """score_windows(windows, details=True) when the cache holds every window (no model call:
        cheap enough to run on an event loop), else None, and nothing is counted."""
        if self.cache_size <= 0:
            return None
        get = self._cache.get
        level = {src: self.level_of(src) for src in {w.source for w in windows}}
        raw = [get((w.ids, w.n_context, level[w.source])) for w in windows]
        if None in raw:
            return None
        out = self._finish(windows, raw)
        self.cache_hits += len(out)
        self._observe(windows, out)
        return out

    def _finish(self, windows: Sequence[Window], raw: Sequence[list | None]) -> list[WindowScore]:
        """Per window, its cache entry -> its WindowScore (the decision cached in the entry)."""
        out: list[WindowScore] = []
        for w, entry in zip(windows, raw):
            assert entry is not None
            slot = 2 if is_complete(w.reason) else 3
            decided = entry[slot]
            if decided is None:
                # A cut trace (a probe, an idle or end close: the session may go on) is judged by the
                # prefix-safe rules at the sealed thresholds (one common percentile): the per-level
                # thresholds are chosen by whole-session recall, which leaves those rules at the edge
                # of normal and would cost early alerts their lead time.
                th = self._levels[entry[4]] if slot == 2 else self.thresholds
                decided = entry[slot] = self._decide(entry[0], entry[1], slot == 2, th)
            scores, flag, reasons, events = decided
            if self.feedback and (w.ids, w.n_context) in self.feedback:  # people said: normal
                scores, flag, reasons = {**scores, "combined": min(scores["combined"], 0.0)}, False, (FEEDBACK_REASON,)
            if w.start and events:  # the events' indexes are in the window: shift them into the session
                events = tuple({**e, "index": w.start + e["index"]} for e in events)
            out.append(WindowScore(w, scores, flag, reasons, events))
        return out

    def _decide(self, model_scores: dict[str, float], events: tuple[dict, ...], complete: bool,
                th: Thresholds | None) -> tuple[dict[str, float], bool, tuple[str, ...], tuple[dict, ...]]:
        """(scores with "combined", is_anomaly, reasons, events) of a window: a pure function of its
        model scores, of whether it is complete and of its level's thresholds `th` (one cache entry,
        per level, holds both decisions)."""
        s = dict(model_scores)  # a copy: "combined" depends on the window's close reason, not only its ids
        if th is not None:
            flag, reasons = th.decide(s, complete=complete)
        else:
            flag, reasons = False, ()
        s["combined"] = self.combined(s, complete, th)
        return s, flag, reasons, events

    def _event(self, e) -> dict:
        """An EventDetail as the alert's dict, its index still in the window (score_windows shifts it
        by Window.start into the session, with a shallow copy: the rest, "expected" included, is
        shared by every repeat of the window and must not be mutated)."""
        v = self.bundle.vocab
        return {"index": e.index, "template_id": e.template_id, "template_key": v.key_of(e.template_id),
                "template": v.text_of(e.template_id), "prob": e.prob,
                "expected": [{"template_key": v.key_of(i), "template": v.text_of(i), "prob": p} for i, p in e.top]}

    def session_windows(self, session_id: str, ids: Sequence[int], source: str = "",
                        complete: bool = True) -> list[Window]:
        """Windows of one session's trace; `complete=False` when it may have been cut short (its last
        window then closes as "end", as at the end of a raw log file)."""
        return windows_of(source or self.bundle.path.name, session_id, list(ids), self.bundle.rule,
                          reason="complete" if complete else "end")

    def score_sessions(self, sessions: Iterable[tuple[str, int | None, Sequence[str]]],
                       complete: bool = True) -> list[SessionResult]:
        """(session_id, label, template keys) -> one result per session; unknown keys count as unseen."""
        vocab = self.bundle.vocab
        return self.score_id_sessions(((sid, lab, [vocab.id_of(k) for k in keys]) for sid, lab, keys in sessions),
                                      complete)

    def score_id_sessions(self, sessions: Iterable[tuple[str, int | None, Sequence[int]]],
                          complete: bool = True) -> list[SessionResult]:
        """(session_id, label, template ids) -> one result per session (any window anomalous)."""
        sessions = list(sessions)
        windows: list[Window] = []
        owner: list[int] = []
        for k, (sid, _, ids) in enumerate(sessions):
            ws = self.session_windows(sid, ids, complete=complete)
            windows += ws
            owner += [k] * len(ws)
        # In chunks, in order, as a stream would see them: the instability estimate moves between chunks.
        # The first chunk was decided before any estimate existed: it is decided again at the level
        # its own windows gave (offline the whole input is at hand; a stream has a warm-up instead).
        step = 4 * self.batch_size if self.adapt else max(1, len(windows))
        scored: list[WindowScore] = []
        for a in range(0, len(windows), step):
            chunk = windows[a:a + step]
            before = [self.level_of(w.source) for w in chunk]
            out = self.score_windows(chunk)
            if a == 0 and self.adapt and before != [self.level_of(w.source) for w in chunk]:
                self._frozen = True
                try:
                    out = self.score_windows(chunk)
                finally:
                    self._frozen = False
            scored += out
        per: list[list[WindowScore]] = [[] for _ in sessions]
        for k, ws in zip(owner, scored):
            per[k].append(ws)
        return [aggregate(sid, label, len(ids), ws) for (sid, label, ids), ws in zip(sessions, per)]


def aggregate(session_id: str, label: int | None, n_events: int, ws: Sequence[WindowScore]) -> SessionResult:
    """Session = max of its windows' scores; anomalous when any window is."""
    if not ws:  # empty session: nothing to score, nothing anomalous seen
        return SessionResult(session_id, label, float("-inf"), False, {}, 0, n_events)
    agg = {m: max(w.scores[m] for w in ws) for m in ws[0].scores}
    return SessionResult(session_id, label, agg["combined"], any(w.is_anomaly for w in ws), agg, len(ws), n_events)
