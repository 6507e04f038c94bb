"""Template drift: a reworded log statement is still the statement the model knows.

Software upgrades reword log statements (a word added, dropped or replaced, the variables kept).
The frozen vocab would call every such line unseen and every session anomalous. `DriftVocab`
wraps the frozen vocab: a line no template fits is compared with every template by the words
they share, and assigned to the closest one when the two agree on most of their constant words
and no other template is nearly as close; the line then counts as drift, not as an unseen event.

    masked content --vocab.match--> template id                      exact (the vocab never changes)
                   --else--> words (letters only: placeholders, numbers and punctuation drop out)
                   --word edits (Indel) to each template's words--> closest, runner-up
                   --(similarity >= min_similarity, or one word changed in a statement of 3+ words)
                     and the runner-up needs `margin` more word edits--> that template (drift)
                   --else--> UNK                                        (unseen: still counts)

Words only, because the variables are what a rewording keeps and masking already turned them into
placeholders; a template's reference text may glue wildcards to words ("<*>Served block<*>to<*>"),
which the word split ignores. A statement that shares most words with two templates (VM Started /
VM Stopped reworded to "VM Began") is ambiguous and stays unseen, and so is a line that differs
from its closest template in an outcome word (SIGNAL_WORDS: "failed" for "succeeded", "not"). Results are cached per masked
line. `DriftVocab` answers `match` like TemplateVocab, so the offline detector and the stream's
ingest take it in place of the vocab.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Indel

from logad.config import DriftConfig
from logad.masking import render
from logad.pending import PendingIds, new_slot
from logad.templates import N_SPECIAL, UNK, DriftMiner, TemplateVocab

_WORD = re.compile(r"(?<![<\w])[A-Za-z][A-Za-z_'-]*[A-Za-z]|(?<![<\w])[A-Za-z](?![\w>])")
_PLACEHOLDER = re.compile(r"<[A-Z*][A-Z0-9_]*>|<\*>")
MIN_WORDS = 2  # templates with fewer constant words are never matched by similarity (too little to go on)
# Words that carry an outcome: a line that differs from a template in one of these ("Verification
# failed for" vs "Verification succeeded for") is a different event, never a rewording of it.
SIGNAL_WORDS = frozenset("""
abort aborted aborting cannot can't corrupt corrupted crash crashed deadlock denied error errors exception
exceptions expired fail failed failing fails failure fatal forbidden interrupted invalid killed lost missing
no not panic refused rejected retry retrying severe succeeded success successful timed timeout unable
unauthorized unavailable unreachable unexpected warn warning without
""".split())


def words(text: str) -> tuple[str, ...]:
    """The constant words of a masked line or a template: placeholders, numbers, punctuation dropped."""
    return tuple(w.lower() for w in _WORD.findall(_PLACEHOLDER.sub(" ", text)))


@dataclass
class DriftRecord:
    """One reworded form of a known statement, as seen."""

    template_id: int
    similarity: float
    masked: str  # the reworded line, masked
    lines: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class DriftVocab:
    """A frozen TemplateVocab plus similarity assignment of reworded lines (see the module doc)."""

    def __init__(self, vocab: TemplateVocab, cfg: DriftConfig = DriftConfig(), pending: bool = False) -> None:
        self.vocab = vocab
        self.cfg = cfg
        # pending=True: a line that is no rewording gets a pending id (logad.pending) instead of UNK;
        # only for consumers that resolve them before scoring (logad.pending.score_with_pending)
        self.pending = PendingIds(vocab) if pending else None
        self.examples: dict[int, str] = {}  # pending id -> one masked line of it (bounded by cache_size)
        self._targets = [(i + N_SPECIAL, words(e.pattern or e.text)) for i, e in enumerate(vocab.entries)]
        self._targets = [(tid, w) for tid, w in self._targets if len(w) >= MIN_WORDS]
        self._exact = vocab.match
        self._cache: dict[str, int] = {}
        self.drift: dict[str, DriftRecord] = {}  # masked reworded line -> its record
        self.counts: Counter[str] = Counter()  # drift, unknown (lines no template fits exactly)

    # TemplateVocab's lookups, unchanged
    def __getattr__(self, name: str) -> Any:
        return getattr(self.vocab, name)

    def __len__(self) -> int:
        return len(self.vocab)

    def nearest(self, masked: str) -> tuple[int, float, int, bool]:
        """(closest template id or UNK, its similarity, how many more word edits the runner-up needs,
        whether the closest differs by one word only: one inserted or dropped, or one replaced in a
        statement of 3+ words). Distances are Indel word edits (a replacement is 2)."""
        w = words(masked)
        if len(w) < MIN_WORDS:
            return UNK, 0.0, 0, False
        best, tw_best, d1, d2 = UNK, (), 1 << 30, 1 << 30
        for tid, tw in self._targets:
            d = Indel.distance(w, tw, score_cutoff=d2)
            if d < d1:
                best, tw_best, d1, d2 = tid, tw, d, d1
            elif d < d2:
                d2 = d
        if best == UNK:
            return UNK, 0.0, 0, False
        sim = 1.0 - d1 / (len(w) + len(tw_best))
        one = d1 <= 1 or (d1 == 2 and len(tw_best) >= 3 and len(w) == len(tw_best))
        if not SIGNAL_WORDS.isdisjoint(set(w) ^ set(tw_best)):
            return UNK, sim, 0, False  # an outcome word differs: another event, not a rewording
        return best, sim, (d2 - d1) // 2 if d2 < 1 << 30 else 1 << 20, one

    def match(self, content: str) -> int:
        tid = self._exact(content)
        if tid != UNK:  # the hot path (every known line): one lookup, nothing counted
            return tid
        masked = self.vocab.mask(content)
        hit = self._cache.get(masked)
        if hit is None:
            best, s1, ahead, one = self.nearest(masked)
            ok = best != UNK and (s1 >= self.cfg.min_similarity or one) and ahead >= self.cfg.margin
            hit = best if ok else UNK if self.pending is None else self._pending_id(masked, best, s1, ahead)
            if len(self._cache) >= self.cfg.cache_size:
                self._cache.clear()
            self._cache[masked] = hit
            if ok and masked not in self.drift and len(self.drift) < self.cfg.cache_size:
                self.drift[masked] = DriftRecord(best, s1, masked, first_seen=time.time())
        if hit == UNK:
            self.counts["unknown"] += 1
        elif self.pending is not None and hit >= self.pending.base:
            self.counts["pending"] += 1
        else:
            self.counts["drift"] += 1
            rec = self.drift.get(masked)
            if rec is not None:
                rec.lines += 1
                rec.last_seen = time.time()
        return hit

    def _pending_id(self, masked: str, best: int, sim: float, ahead: int) -> int:
        """The pending id of a line that is no rewording: an alias of the one known statement it is
        closest to (unique, sharing at least alias_similarity of the words), else a new statement."""
        assert self.pending is not None
        w = words(masked)
        if not w:
            return UNK
        if best != UNK and ahead >= 1 and sim >= self.cfg.alias_similarity:
            tid = self.pending.alias(best)
        else:
            tid = self.pending.new(new_slot(w, not SIGNAL_WORDS.isdisjoint(w)))
        if tid not in self.examples and len(self.examples) < self.cfg.cache_size:
            self.examples[tid] = masked
        return tid

    def match_many(self, contents: Iterable[str]) -> list[int]:
        return [self.match(c) for c in contents]

    def report(self) -> dict[str, Any]:
        """Which statements changed (reworded form -> the known template), since when, how many lines."""
        v = self.vocab
        rows = sorted(self.drift.values(), key=lambda r: -r.lines)
        return {"lines": dict(self.counts), "reworded": [
            {"template_key": v.key_of(r.template_id), "template": v.text_of(r.template_id), "seen_as": r.masked,
             "similarity": round(r.similarity, 3), "lines": r.lines,
             "first_seen": r.first_seen, "last_seen": r.last_seen} for r in rows]}


def matcher(vocab: TemplateVocab, cfg: DriftConfig) -> TemplateVocab | DriftVocab:
    """What reads lines for detection (logad detect, the worker): the vocab with drift matching and
    pending ids (logad.pending) when `cfg.enabled`, else the frozen vocab (a line no template fits: UNK)."""
    return DriftVocab(vocab, cfg, pending=True) if cfg.enabled else vocab


def drift_report(paths: Sequence[str | Path], model_dir: str | Path, cfg: DriftConfig = DriftConfig(),
                 log_format: str | None = None, top: int = 50) -> dict[str, Any]:
    """Which statements of the logs changed or appeared against a bundle's vocab, since when (event
    time) and how often: reworded statements (assigned to the known statement they are closest to)
    and new ones (lines no statement explains, mined into templates with Drain3)."""
    from logad.artifacts import bundle_format
    from logad.format_files import load_format
    from logad.parse import ParseStats
    from logad.readers import iter_file_records
    from logad.records import LogRecord

    vocab = TemplateVocab.load(Path(model_dir) / "template_vocab.json")
    fmt = load_format(log_format) if log_format else bundle_format(model_dir, vocab.format_name)
    dv = DriftVocab(vocab, cfg)
    miner = DriftMiner(fmt)
    stats = ParseStats()
    seen: dict[tuple[str, Any], dict[str, Any]] = {}  # ("reworded", masked) / ("new", cluster id) -> counts

    def note(key: tuple[str, Any], ts: float | None, session: tuple[str, ...]) -> dict[str, Any]:
        row = seen.setdefault(key, {"lines": 0, "sessions": set(), "first_seen": ts, "last_seen": ts})
        row["lines"] += 1
        row["sessions"].update(session)
        if ts is not None:
            row["first_seen"] = ts if row["first_seen"] is None else min(row["first_seen"], ts)
            row["last_seen"] = ts if row["last_seen"] is None else max(row["last_seen"], ts)
        return row

    for _, _, rec in iter_file_records(paths, fmt, stats):
        if not isinstance(rec, LogRecord):
            continue
        if vocab.match(rec.content) != UNK:
            continue
        tid = dv.match(rec.content)
        keys = rec.session_keys[:3]
        if tid != UNK:
            note(("reworded", vocab.mask(rec.content)), rec.timestamp, keys)["template_id"] = tid
        else:
            note(("new", miner.observe(rec.content)), rec.timestamp, keys)
    clusters = {t["id"]: t["template"] for t in miner.summary(top=len(seen))["top"]}
    rows: dict[str, list] = {"reworded": [], "new": []}
    for (kind, key), r in seen.items():
        row = {"lines": r["lines"], "sessions": len(r["sessions"]), "first_seen": r["first_seen"],
               "last_seen": r["last_seen"]}
        if kind == "reworded":
            row.update(template_key=vocab.key_of(r["template_id"]), template=vocab.text_of(r["template_id"]),
                       seen_as=render(key))
        else:
            row.update(template=clusters.get(key, "(evicted)"))
        rows[kind].append(row)
    for k in rows:
        rows[k] = sorted(rows[k], key=lambda r: -r["lines"])[:top]
    return {"lines": stats.lines, "parsed": stats.records, "exact": stats.records - sum(r["lines"] for r in
                                                                                             seen.values()),
            "reworded_lines": sum(r["lines"] for (k, _), r in seen.items() if k == "reworded"),
            "new_lines": sum(r["lines"] for (k, _), r in seen.items() if k == "new"), **rows}
