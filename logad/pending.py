"""Pending statements: log statements the vocab does not know, kept apart until they prove normal.

An upgrade adds log statements and rewords others more than drift matching (logad.drift) accepts.
Calling each of their sessions anomalous forever is an alert storm; accepting them blindly hides a
new error. They are pending instead. The matcher (DriftVocab with `pending=True`) gives each line no
template fits one of two pending ids, stable across processes and restarts (V = len(vocab)):

    close to exactly one known statement T (by words), not close enough for drift  ->  V + T    "alias:<key of T>"
    nothing close (or an outcome word differs: "failed" for "succeeded")            ->  2V + h   "new:<h>"
        h = crc32 of the statement's constant words mod NEW_SLOTS (a statement, not a line)
    no constant words at all                                                         ->  UNK      (unseen, as before)

The model never sees a pending id. Before scoring, `PendingTemplates.resolve` rewrites each window:
an alias becomes its known statement T, a new statement is left out (the window is scored as if the
line were not there), unless a decision says otherwise. After scoring, `judge`:

    a window holding a pending statement that is neither promoted nor accepted -> anomaly, reason
        "pending statement ...", and when the rewritten window is normal by every other rule its
        session votes for each such statement;
    a statement voted for by `promote_after` sessions -> promoted: from then on it is resolved and
        the window is decided on its scores alone (a new statement alone stops alerting);
    a rejected statement -> always anomalous, never promoted.

A new statement inside an abnormal-looking session does not vote, and its window still alerts.
Statements with an outcome word (logad.drift.SIGNAL_WORDS) are never promoted by votes: only a
person accepts them (`logad templates accept`). Decisions (accept / reject / promote, who, when,
why) are appended to a JSON-lines file beside the bundle (`template_decisions.jsonl`); the last
decision per statement holds.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logad.errors import ConfigError
from logad.records import Window, WindowScore
from logad.template_decisions import Decision, append_decision, decisions_path, read_decisions
from logad.templates import N_SPECIAL, UNK, TemplateVocab

log = logging.getLogger("logad.pending")

NEW_SLOTS = 1 << 16  # hash slots of new statements (ids 2V .. 2V + NEW_SLOTS - 1)
OUTCOME_BIT = 1 << 15  # set in the slot of a statement with an outcome word: never promoted by votes
KEEP_SESSIONS = 64  # session ids remembered per statement (votes are counted, the ids only dedupe)


def new_slot(words: Sequence[str], outcome: bool) -> int:
    """The hash slot of a new statement: its constant words, not its variables (crc32: stable), with
    OUTCOME_BIT when one of them is an outcome word (the scorer sees ids, not words)."""
    return zlib.crc32(" ".join(words).encode("utf-8")) % OUTCOME_BIT | (OUTCOME_BIT if outcome else 0)


class PendingIds:
    """The pending id ranges of one vocab (see the module doc)."""

    def __init__(self, vocab: TemplateVocab) -> None:
        self.vocab = vocab
        self.base = len(vocab)  # V: ids below it are the vocab's own

    def alias(self, tid: int) -> int:
        return self.base + tid

    def new(self, slot: int) -> int:
        return 2 * self.base + slot

    def is_pending(self, tid: int) -> bool:
        return tid >= self.base

    def protected(self, tid: int) -> bool:
        """A new statement with an outcome word: only a person promotes it."""
        return tid >= 2 * self.base and bool((tid - 2 * self.base) & OUTCOME_BIT)

    def key_of(self, tid: int) -> str:
        """A pending id -> its statement key: "alias:<template key>" or "new:<hex slot>"."""
        if tid < self.base:
            raise ValueError(f"template id {tid} is not a pending id (vocab has {self.base})")
        if tid < 2 * self.base:
            return "alias:" + self.vocab.key_of(tid - self.base)
        return f"new:{tid - 2 * self.base:04x}"

    def id_of(self, key: str) -> int:
        """Inverse of key_of; ConfigError for a key that names nothing in this vocab."""
        kind, _, rest = key.partition(":")
        if kind == "alias":
            tid = self.vocab.id_of(rest)
            if tid == UNK:
                raise ConfigError(f"{key!r}: the model's vocab has no template {rest!r}")
            return self.alias(tid)
        if kind == "new":
            try:
                slot = int(rest, 16)
            except ValueError:
                slot = -1
            if not 0 <= slot < NEW_SLOTS:
                raise ConfigError(f"{key!r}: a new statement's key is new:<hex slot below {NEW_SLOTS:x}>")
            return self.new(slot)
        raise ConfigError(f"{key!r}: a pending statement's key starts with 'alias:' or 'new:'")


@dataclass
class PendingStat:
    """What is known of one pending statement."""

    key: str
    sessions: set[str] = field(default_factory=set)  # sessions that voted (at most KEEP_SESSIONS ids)
    votes: int = 0  # sessions that looked normal apart from it
    by_target: dict[str, int] = field(default_factory=dict)  # votes per reading: "" its default, else a template key
    windows: int = 0  # windows it occurred in
    anomalous: int = 0  # windows it occurred in that were anomalous by their own scores
    first_seen: float | None = None  # event time
    last_seen: float | None = None
    text: str | None = None  # an example (masked), where the matcher saw the line


@dataclass
class Resolution:
    """How one window was rewritten for scoring."""

    keep: list[int] | None  # positions of the original ids kept (None: all, same length)
    open_keys: tuple[str, ...]  # pending statements neither promoted nor accepted
    rejected: tuple[str, ...]
    all_keys: tuple[str, ...]


class PendingTemplates:
    """resolve -> Detector.score_windows -> judge, with votes, promotions and decisions."""

    def __init__(self, vocab: TemplateVocab, promote_after: int = 5,
                 decisions: dict[str, Decision] | None = None, on_promote: Any = None) -> None:
        self.ids = PendingIds(vocab)
        self.promote_after = promote_after  # sessions; 0: never by votes
        self.decisions = dict(decisions or {})
        self.stats: dict[str, PendingStat] = {}
        self.promoted_at: dict[str, int] = {}  # key -> index of the window that promoted it, in the last judge call
        self.on_promote = on_promote  # callback(Decision): persist it (the stream appends to the file)

    def set_decisions(self, decisions: dict[str, Decision]) -> None:
        """Decisions read again (a person accepted or rejected a statement): they hold from the next window."""
        self.decisions = dict(decisions)

    def _target(self, tid: int, key: str) -> int | None:
        """The id a pending id is scored as (None: left out)."""
        d = self.decisions.get(key)
        if d is not None and d.action in ("accept", "promote") and d.target:
            return self.ids.vocab.id_of(d.target)
        b = self.ids.base
        return tid - b if tid < 2 * b else None

    def resolve(self, windows: Sequence[Window]) -> tuple[list[Window], list[Resolution | None]]:
        """Windows with pending ids -> windows the model can score (same order) and how each was rewritten."""
        base = self.ids.base
        out: list[Window] = []
        res: list[Resolution | None] = []
        for w in windows:
            if not w.ids or max(w.ids) < base:
                out.append(w)
                res.append(None)
                continue
            ids: list[int] = []
            keep: list[int] = []
            keys: dict[str, None] = {}
            n_ctx = 0
            for i, t in enumerate(w.ids):
                if t >= base:
                    key = self.ids.key_of(t)
                    if i >= w.n_context:
                        keys[key] = None
                    t = self._target(t, key)
                    if t is None:
                        continue
                keep.append(i)
                ids.append(t)
                n_ctx += i < w.n_context
            state = [(k, self.decisions.get(k)) for k in keys]
            open_keys = tuple(k for k, d in state if d is None)
            rejected = tuple(k for k, d in state if d is not None and d.action == "reject")
            same = len(keep) == len(w.ids)
            out.append(replace(w, ids=tuple(ids), n_context=n_ctx))
            res.append(Resolution(None if same else keep, open_keys, rejected, tuple(keys)))
        return out, res

    def judge(self, originals: Sequence[Window], scored: Sequence[WindowScore],
              res: Sequence[Resolution | None], explained: dict[int, dict[str, str]] | None = None,
              count: bool = True) -> list[WindowScore]:
        """Scores of the rewritten windows -> WindowScores of the original windows, with the pending
        rules. `explained`: window index -> {pending key: template key} readings that made an
        anomalous window normal (score_with_pending finds them): votes for those readings."""
        out: list[WindowScore] = []
        if count:
            self.promoted_at = {}
        for n, (w, ws, r) in enumerate(zip(originals, scored, res)):
            if r is None:
                out.append(ws)
                continue
            events = ws.surprising
            if r.keep is not None and events:  # indexes of the rewritten window -> of the original
                events = tuple({**e, "index": w.start + r.keep[e["index"] - w.start]} for e in events)
            flag, reasons = ws.is_anomaly, ws.reasons
            for k in r.all_keys if count else ():
                self._observe(k, w, ws.is_anomaly)
            if r.open_keys:
                readings = {k: "" for k in r.open_keys} if not ws.is_anomaly else (explained or {}).get(n, {})
                for k, target in readings.items() if count else ():
                    if self._vote(k, target, w.session_id):
                        self.promoted_at[k] = n
                # open when the window was resolved: it alerts (the session that promotes one too)
                flag = True
                reasons = reasons + tuple(self._reason(k) for k in r.open_keys)
            if r.rejected:
                flag = True
                reasons = reasons + tuple(f"rejected statement {k}" for k in r.rejected)
            out.append(WindowScore(w, ws.scores, flag, reasons, events))
        return out

    def _reason(self, key: str) -> str:
        s = self.stats[key]
        need = "never promoted by votes" if self.ids.protected(self.ids.id_of(key)) or self.promote_after <= 0 else \
            f"{s.votes}/{self.promote_after} normal sessions"
        return f"pending statement {key} ({need})"

    def _observe(self, key: str, w: Window, anomalous: bool) -> None:
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = PendingStat(key)
        s.windows += 1
        s.anomalous += anomalous
        for t in (w.first_ts, w.last_ts):
            if t is not None:
                s.first_seen = t if s.first_seen is None else min(s.first_seen, t)
                s.last_seen = t if s.last_seen is None else max(s.last_seen, t)

    def _vote(self, key: str, target: str, session_id: str) -> bool:
        """A session that looks normal with the statement read as `target` ("" its default reading);
        True when that promotes the statement."""
        s = self.stats[key]
        if session_id in s.sessions or key in self.decisions:
            return False
        if len(s.sessions) < KEEP_SESSIONS:
            s.sessions.add(session_id)
        s.votes += 1
        n = s.by_target[target] = s.by_target.get(target, 0) + 1
        if self.ids.protected(self.ids.id_of(key)) or self.promote_after <= 0 or n < self.promote_after:
            return False
        d = Decision(key, "promote", target=target or None, by="logad", at=time.time(), sessions=n,
                     why=f"{n} sessions looked normal with it read as {self.counts_as(key, target)}")
        self.decisions[key] = d
        if self.on_promote is not None:
            self.on_promote(d)
        return True

    def note_text(self, key: str, text: str) -> None:
        """An example line of the statement (masked), for people reviewing it."""
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = PendingStat(key)
        if s.text is None:
            s.text = text

    def summary(self) -> list[dict[str, Any]]:
        """Every statement seen or decided: key, status, votes, windows, first/last seen, what it counts as."""
        keys = list(self.stats) + [k for k in self.decisions if k not in self.stats]
        rows = []
        for k in keys:
            s = self.stats.get(k) or PendingStat(k)
            d = self.decisions.get(k)
            rows.append({"key": k, "status": d.action if d else "pending", "votes": s.votes, "windows": s.windows,
                         "anomalous_windows": s.anomalous, "first_seen": s.first_seen, "last_seen": s.last_seen,
                         "counts_as": self.counts_as(k), "text": s.text,
                         "decided_by": d.by if d else None, "decided_at": d.at if d else None})
        return rows

    def counts_as(self, key: str, target: str | None = None) -> str:
        """What the statement is scored as (or would be, read as template `target`), in words."""
        tid = self.ids.vocab.id_of(target) if target else self._target(self.ids.id_of(key), key)
        return "(left out)" if tid is None else f"{self.ids.vocab.key_of(tid)}: {self.ids.vocab.text_of(tid)}"


def attach(detector: Any, model_dir: str | Path, cfg: Any, persist: bool = True) -> PendingTemplates:
    """detector.pending: the pending statements of the bundle in `model_dir`, with the decisions in
    force (decisions_path, `cfg` a DriftConfig); `persist`: promotions are appended there (the
    stream's scorer; a file it cannot write is logged, the promotion holds in memory)."""
    path = decisions_path(model_dir, cfg.decisions_file)

    def persist_to_file(d: Decision) -> None:
        try:
            append_decision(path, d)
        except OSError as e:
            log.error("promotion of %s not written to %s (%s): it holds until this process stops", d.key, path, e)

    pend = PendingTemplates(detector.bundle.vocab, cfg.promote_after, read_decisions(path),
                            on_promote=persist_to_file if persist else None)
    detector.pending = pend
    return pend


def score_with_pending(detector: Any, pending: PendingTemplates | None, windows: Sequence[Window],
                       **kw: Any) -> list[WindowScore]:
    """detector.score_windows(windows, **kw) for windows that may hold pending ids: resolve, score the
    rewritten windows (one made of pending statements only is not scored: no scores, normal by
    itself), judge. Alert ids and evidence stay those of the original windows.

    A window that is anomalous as rewritten and holds an open statement gets a second look: the
    statement is read as each of the templates the model expected in its place (the CANDIDATES most
    likely at its first position); a reading under which the window is normal is a vote for that
    reading (a reworded statement too far from its old words, or as close to two of them, is
    recognised by where it occurs). These hypotheses do not move the instability estimate."""
    if pending is None:
        return detector.score_windows(windows, **kw)
    resolved, res = pending.resolve(windows)
    full = _score(detector, resolved, **kw)
    todo = [i for i, (r, ws) in enumerate(zip(res, full)) if r is not None and r.open_keys and ws.is_anomaly]
    explained = _readings(detector, pending, windows, res, todo) if todo else {}
    out = pending.judge(windows, full, res, explained)
    # statements promoted by this batch's votes: the batch's later windows holding them were resolved
    # before; decide them again as resolved now (counted and observed once already)
    at = pending.promoted_at
    redo = [n for n, r in enumerate(res) if r is not None and any(n > at.get(k, n) for k in r.open_keys)]
    if redo:
        again, how = pending.resolve([windows[n] for n in redo])
        with detector.hypotheses():
            scored = _score(detector, again, **kw)
        for n, ws in zip(redo, pending.judge([windows[n] for n in redo], scored, how, count=False)):
            out[n] = ws
    return out


MAX_READ = 8  # open statements read per window (one model pass each)
CANDIDATES = 3  # the model's guesses tried per statement: the first left to right, the others one at a time


def _score(detector: Any, windows: Sequence[Window], **kw: Any) -> list[WindowScore]:
    idx = [i for i, w in enumerate(windows) if w.ids]
    scored = detector.score_windows([windows[i] for i in idx], **kw) if idx else []
    full = [WindowScore(w, {}, False, ()) for w in windows]
    for i, ws in zip(idx, scored):
        full[i] = ws
    return full


def _readings(detector: Any, pending: PendingTemplates, windows: Sequence[Window],
              res: Sequence[Resolution | None], todo: list[int]) -> dict[int, dict[str, str]]:
    """Window index -> {open pending key: template key}: one reading of every open statement of the
    window under which it is normal, else nothing. Left to right, each statement is read as the
    template the model expected at its first occurrence given the readings before it (a causal
    model: what follows does not matter), one pass per statement, windows side by side."""
    base = pending.ids.base
    jobs: list[dict[str, Any]] = []
    for i in todo:
        w, r = windows[i], res[i]
        if r is None:
            continue
        open_ids = {pending.ids.id_of(k): k for k in r.open_keys}
        marked, how = pending.resolve([replace(w, ids=tuple(UNK if t in open_ids else t for t in w.ids))])
        h = how[0]
        keep = range(len(w.ids)) if h is None or h.keep is None else h.keep
        spots: dict[str, list[int]] = {}  # key -> its positions in the marked window
        for j, p in enumerate(keep):
            if w.ids[p] >= base and w.ids[p] in open_ids:
                spots.setdefault(open_ids[w.ids[p]], []).append(j)
        if 0 < len(spots) <= MAX_READ:
            jobs.append({"i": i, "w": marked[0], "ids": list(marked[0].ids), "spots": spots, "order": list(spots),
                         "choice": {}})
    vocab = pending.ids.vocab
    with detector.hypotheses():
        for step in range(max((len(j["order"]) for j in jobs), default=0)):
            active = [j for j in jobs if j["order"] is not None and step < len(j["order"])]
            scored = detector.score_windows([replace(j["w"], ids=tuple(j["ids"])) for j in active], details=True)
            for j, ws in zip(active, scored):
                k = j["order"][step]
                at = j["w"].start + j["spots"][k][0]
                hit = next((e for e in ws.surprising if e["index"] == at), None)
                cands = [vocab.id_of(c["template_key"]) for c in (hit or {}).get("expected", [])]
                cands = [t for t in cands if t >= N_SPECIAL][:CANDIDATES]  # templates, not specials
                if not cands:  # the model expected nothing readable there: no reading
                    j["order"] = None
                    continue
                for pos in j["spots"][k]:
                    j["ids"][pos] = cands[0]
                j["choice"][k] = vocab.key_of(cands[0])
                j.setdefault("others", {})[k] = cands[1:]
        done = [j for j in jobs if j["order"] is not None]
        verdicts = detector.score_windows([replace(j["w"], ids=tuple(j["ids"])) for j in done]) if done else []
        out = {j["i"]: j["choice"] for j, ws in zip(done, verdicts) if not ws.is_anomaly}
        # not normal read that way: one statement read as the model's second or third guess instead
        tries: list[tuple[dict[str, Any], str, int]] = [(j, k, t) for j, ws in zip(done, verdicts) if ws.is_anomaly
                                                        for k in j["order"] for t in j["others"][k]]
        variants = []
        for j, k, t in tries:
            ids = list(j["ids"])
            for pos in j["spots"][k]:
                ids[pos] = t
            variants.append(replace(j["w"], ids=tuple(ids)))
        for (j, k, t), ws in zip(tries, detector.score_windows(variants) if variants else []):
            if not ws.is_anomaly and j["i"] not in out:
                out[j["i"]] = {**j["choice"], k: vocab.key_of(t)}
    return out
