"""The template vocab: template key <-> integer id, mined offline with Drain3, frozen online.

    ids: 0 "<pad>", 1 "<unk>", 2 "<bos>", then templates 3.. in a stable order (seed entries first,
    then mined ones "T1", "T2", ...). The model's embedding rows are these ids, so a vocab never
    changes after training: `match()` only looks up, and new templates seen online go to a separate
    `DriftMiner`.

Matching is our own: each template is a *pattern* over masked text; typed placeholders (`<IP>`) are
literals and `<*>` is a wildcard: any text, possibly empty, in reference templates (Loghub's
semantics: "<*>Receiving block<*>src:<*>dest:<*>"), exactly one token in mined ones (Drain3's, so a
generic mined template cannot swallow novel lines that should be UNK). Unlike Drain3's tree search it
cannot miss a trained line, and it is cheap behind a cache keyed by the masked line (masked lines
repeat massively: 16k raw HDFS lines have 15 distinct masked forms).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from logad.errors import ArtifactError, ConfigError
from logad.formats import FORMATS, LogFormat
from logad.masking import MAX_CACHED_LINE, WILDCARD, Masker, MaskRule, render
from logad.parse import parse_line
from logad.records import Rejected
from logad.template_split import split_cluster

PAD, UNK, BOS = 0, 1, 2
SPECIAL_KEYS = ("<pad>", "<unk>", "<bos>")
N_SPECIAL = len(SPECIAL_KEYS)
KIND, VERSION = "logad.template_vocab", 1


@dataclass(frozen=True, slots=True)
class TemplateEntry:
    key: str  # stable name: Loghub "E5", GraphLog "12", mined "T3"
    text: str  # Loghub-style template with <*> (what people read, what parser accuracy compares)
    count: int = 0  # training lines that matched it
    pattern: str = ""  # masked pattern matched against masked lines; "" = cannot be matched (keys only)
    token_wildcards: bool = False  # True: each <*> is one token (mined); False: any text (reference)


class _Matcher:
    """First matching pattern, most specific first (most literal characters, then fewest wildcards)."""

    def __init__(self, patterns: Sequence[tuple[int, str, bool]]) -> None:
        ranked = []
        for tid, pattern, token_wildcards in patterns:
            segs = tuple(pattern.split(WILDCARD))
            tokens = tuple(pattern.split(" ")) if token_wildcards else None
            ranked.append((-sum(map(len, segs)), len(segs), tid, segs, tokens))
        self._order = [(tid, segs, tokens) for _, _, tid, segs, tokens in sorted(ranked)]

    @staticmethod
    def _fits(segs: tuple[str, ...], text: str) -> bool:
        # Greedy leftmost placement of the literal segments is exact for `*`-only patterns and linear.
        if len(segs) == 1:
            return text == segs[0]
        head, tail = segs[0], segs[-1]
        if len(text) < len(head) + len(tail) or not text.startswith(head) or not text.endswith(tail):
            return False
        pos, end = len(head), len(text) - len(tail)
        for seg in segs[1:-1]:
            i = text.find(seg, pos, end)
            if i < 0:
                return False
            pos = i + len(seg)
        return True

    @staticmethod
    def _fits_tokens(pattern: tuple[str, ...], tokens: list[str]) -> bool:
        if len(pattern) != len(tokens):
            return False
        return all(p == t or p == WILDCARD for p, t in zip(pattern, tokens, strict=True))

    def find_all(self, masked: str) -> list[int]:
        """Every fitting template id, most specific first (the first one is the match)."""
        tokens = masked.split(" ")  # masked text is single-space separated
        return [tid for tid, segs, ptoks in self._order
                if (self._fits(segs, masked) if ptoks is None else self._fits_tokens(ptoks, tokens))]

    def find(self, masked: str) -> int:
        tokens: list[str] | None = None
        for tid, segs, ptoks in self._order:
            if ptoks is None:
                if self._fits(segs, masked):
                    return tid
            else:
                if tokens is None:
                    tokens = masked.split(" ")
                if self._fits_tokens(ptoks, tokens):
                    return tid
        return UNK


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def new_miner(fmt: LogFormat, sim_th: float | None = None, depth: int | None = None,
              max_children: int | None = None, max_clusters: int | None = None) -> TemplateMiner:
    """A Drain3 miner fed with already-masked text (our masking replaces Drain3's), no persistence."""
    cfg = TemplateMinerConfig()
    cfg.drain_sim_th = fmt.drain_sim_th if sim_th is None else sim_th
    cfg.drain_depth = fmt.drain_depth if depth is None else depth
    cfg.drain_max_children = fmt.drain_max_children if max_children is None else max_children
    cfg.drain_max_clusters = max_clusters
    cfg.masking_instructions = []
    cfg.parametrize_numeric_tokens = True
    return TemplateMiner(persistence_handler=None, config=cfg)


class TemplateVocab:
    """Frozen key <-> id map with a matcher for raw message contents. See the module docstring."""

    PAD, UNK, BOS = PAD, UNK, BOS

    def __init__(self, entries: Sequence[TemplateEntry], fmt: LogFormat | None = None, *,
                 format_name: str | None = None, masker: Masker | None = None, cache_size: int = 50_000) -> None:
        self._entries = tuple(entries)
        self.keys: list[str] = [*SPECIAL_KEYS, *(e.key for e in self._entries)]  # id -> key
        self._ids = {k: i for i, k in enumerate(self.keys)}
        if len(self._ids) != len(self.keys):
            dup = [k for k, n in Counter(self.keys).items() if n > 1]
            raise ArtifactError(f"template vocab has duplicate keys: {dup[:5]}")
        self.format_name = fmt.name if fmt is not None else format_name
        # The vocab owns the masking its patterns were made with (stored in its file), so a later
        # change of a format's rules cannot silently mis-match a shipped vocab.
        self.masker: Masker | None = fmt.masker if fmt is not None else masker
        self.masking_fingerprint = self.masker.fingerprint if self.masker is not None else None
        self._matcher = _Matcher([(i + N_SPECIAL, e.pattern, e.token_wildcards)
                                  for i, e in enumerate(self._entries) if e.pattern])
        self._cache: dict[str, int] = {}
        self._cache_size = cache_size
        self._mask = self.masker.mask if self.masker is not None else self._no_format

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_reference(cls, csv_path: str | Path, fmt: LogFormat) -> TemplateVocab:
        """Seed from a Loghub-style `EventId,EventTemplate` CSV; keys stay the CSV's EventIds."""
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ArtifactError(f"cannot read reference templates {csv_path}: {e}") from None
        if not rows or not {"EventId", "EventTemplate"} <= set(rows[0]):
            raise ArtifactError(f"{csv_path}: expected columns EventId,EventTemplate")
        entries = [TemplateEntry(r["EventId"].strip(), r["EventTemplate"].strip(), 0,
                                 fmt.masker.mask_template(r["EventTemplate"])) for r in rows]
        return cls(entries, fmt)

    @classmethod
    def from_keys(cls, keys: Iterable[str], texts: Sequence[str] | None = None) -> TemplateVocab:
        """A vocab for sequence-only data (ids and keys, no matcher: it cannot map raw lines)."""
        keys = list(keys)
        texts = list(texts) if texts is not None else keys
        if len(texts) != len(keys):
            raise ArtifactError(f"from_keys: {len(keys)} keys but {len(texts)} texts")
        return cls([TemplateEntry(k, t) for k, t in zip(keys, texts, strict=True)])

    @classmethod
    def fit(cls, contents: Iterable[str], fmt: LogFormat, seed: TemplateVocab | None = None, *,
            sim_th: float | None = None, depth: int | None = None, max_children: int | None = None,
            max_clusters: int | None = None, split: bool = True) -> TemplateVocab:
        """Mine templates offline: lines matching a seed entry count for it; Drain3 mines the rest.

        Mined templates get keys "T1", "T2", ... in Drain3's creation order (deterministic for a
        given input order). Our masking runs before Drain3; Drain3's own masking is off. `split`:
        each Drain3 cluster is then split where its lines choose between a few constant words
        (logad.template_split), so the similarity threshold need not separate those.
        """
        if seed is not None and seed.masker is not None and seed.masking_fingerprint != fmt.masker.fingerprint:
            raise ConfigError(f"seed vocab was built with other masking than format {fmt.name!r} has")
        miner = new_miner(fmt, sim_th, depth, max_children, max_clusters)
        seed_counts: Counter[int] = Counter()
        mask = fmt.masker.mask
        seed_match = seed.match_masked if seed is not None and seed.masker is not None else None
        per_cluster: dict[int, Counter[str]] = {}
        for content in contents:
            masked = mask(content)
            if seed_match is not None:
                tid = seed_match(masked)
                if tid != UNK:
                    seed_counts[tid] += 1
                    continue
            cluster, _ = miner.drain.add_log_message(masked)
            if split:  # distinct masked lines per cluster: few, as masked lines repeat massively
                per_cluster.setdefault(cluster.cluster_id, Counter())[masked] += 1
        entries = [replace(e, count=seed_counts[i + N_SPECIAL]) for i, e in enumerate(seed._entries)] if seed else []
        taken = {e.key for e in entries}
        by_pattern: dict[str, int] = {}  # two clusters can end with one template: merge them
        n = 0
        for cluster in sorted(miner.drain.clusters, key=lambda c: c.cluster_id):
            lines = per_cluster.get(cluster.cluster_id)
            parts = split_cluster(lines) if lines else [(cluster.get_template(), cluster.size)]
            for pattern, size in parts:
                if pattern in by_pattern:
                    i = by_pattern[pattern]
                    entries[i] = replace(entries[i], count=entries[i].count + size)
                    continue
                n += 1
                while f"T{n}" in taken:
                    n += 1
                by_pattern[pattern] = len(entries)
                entries.append(TemplateEntry(f"T{n}", render(pattern), size, pattern, token_wildcards=True))
        return cls(entries, fmt)

    # -- lookups ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    @property
    def entries(self) -> tuple[TemplateEntry, ...]:
        """The templates (ids 3..), in id order."""
        return self._entries

    def id_of(self, key: str) -> int:
        """Id of a key; UNK for keys this vocab has never seen (unseen, not an error)."""
        return self._ids.get(key, UNK)

    def key_of(self, tid: int) -> str:
        if not 0 <= tid < len(self.keys):
            raise KeyError(f"no template id {tid} (vocab has {len(self.keys)})")
        return self.keys[tid]

    def text_of(self, tid: int) -> str:
        if tid < N_SPECIAL:
            return self.key_of(tid)
        self.key_of(tid)  # range check
        return self._entries[tid - N_SPECIAL].text

    # -- matching (never changes the vocab) ---------------------------------------------------
    def _no_format(self, content: str) -> str:
        raise ArtifactError("this vocab has no masking (built from keys): it cannot match raw lines")

    def mask(self, content: str) -> str:
        """The content masked with the vocab's format (what the matcher and its cache see)."""
        return self._mask(content)

    def _lookup(self, masked: str) -> int:
        tid = self._matcher.find(masked)
        if len(masked) <= MAX_CACHED_LINE:  # bounded in entries and bytes
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # O(1) eviction; the working set refills within a few lines
            self._cache[masked] = tid
        return tid

    def match_masked(self, masked: str) -> int:
        """Template id of an already-masked content, UNK when no template fits."""
        tid = self._cache.get(masked)
        return self._lookup(masked) if tid is None else tid

    def match(self, content: str) -> int:
        """Template id of a raw message content (header stripped), UNK when no template fits."""
        masked = self._mask(content)
        tid = self._cache.get(masked)
        return self._lookup(masked) if tid is None else tid

    def match_many(self, contents: Iterable[str]) -> list[int]:
        match = self.match
        return [match(c) for c in contents]

    def candidates(self, content: str) -> list[int]:
        """Every template id that fits (most specific first): for checking ambiguity, not the hot path."""
        return self._matcher.find_all(self.mask(content))

    # -- persistence (JSON only: a vocab file is data, never code) ----------------------------
    def _doc(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "format": self.format_name,
            "masking_fingerprint": self.masking_fingerprint,
            "masking": None if self.masker is None else {
                "rules": [r.to_dict() for r in self.masker.rules], "merge_lists": self.masker.merge_lists},
            "specials": list(SPECIAL_KEYS),
            "templates": [{"id": i + N_SPECIAL, "key": e.key, "text": e.text, "count": e.count, "pattern": e.pattern,
                           "token_wildcards": e.token_wildcards} for i, e in enumerate(self._entries)],
        }

    def fingerprint(self) -> str:
        """sha256 over the canonical content (ids, keys, texts, counts, patterns, format, masking)."""
        return hashlib.sha256(_canonical(self._doc())).hexdigest()

    def save(self, path: str | Path) -> Path:
        doc = self._doc()
        doc["sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(p)  # atomic: a reader never sees half a vocab
        return p

    @classmethod
    def load(cls, path: str | Path, fmt: LogFormat | None = None) -> TemplateVocab:
        """Load and verify a template_vocab.json (sha256; masking rules vs their fingerprint).

        Matching uses the masking stored in the file; `fmt` (default: the built-in format of the
        stored name) only lends its masker's warm caches when its rules are the same.
        """
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"cannot read template vocab {p}: {e}") from None
        if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("version") != VERSION:
            raise ArtifactError(f"{p}: not a {KIND} v{VERSION} file")
        claimed = doc.pop("sha256", None)
        if claimed != hashlib.sha256(_canonical(doc)).hexdigest():
            raise ArtifactError(f"{p}: sha256 mismatch: the vocab file was modified or corrupted")
        if doc.get("specials") != list(SPECIAL_KEYS):
            raise ArtifactError(f"{p}: special tokens must be {list(SPECIAL_KEYS)}")
        try:
            rows = doc["templates"]
            entries = [TemplateEntry(str(r["key"]), str(r["text"]), int(r["count"]), str(r["pattern"]),
                                     bool(r.get("token_wildcards", False))) for r in rows]
            ids = [int(r["id"]) for r in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{p}: malformed template entry: {e}") from None
        if ids != list(range(N_SPECIAL, N_SPECIAL + len(entries))):
            raise ArtifactError(f"{p}: template ids must run 3..{N_SPECIAL + len(entries) - 1} in order")
        name = doc.get("format")
        masker = _stored_masker(p, doc, fmt or FORMATS.get(str(name)))
        return cls(entries, format_name=name, masker=masker)


def _stored_masker(p: Path, doc: dict[str, Any], fmt: LogFormat | None) -> Masker | None:
    """The masker a vocab file was made with; the format's own (warm caches) when it is the same."""
    fp, spec = doc.get("masking_fingerprint"), doc.get("masking")
    if fp is None:
        return None  # keys only: no matcher
    if not isinstance(spec, dict):
        raise ArtifactError(f"{p}: has a masking fingerprint but not the masking rules it was made with "
                            "(\"masking\"); re-create the vocab (logad train) to use it")
    if fmt is not None and fmt.masker.fingerprint == fp:
        return fmt.masker
    try:
        masker = Masker([MaskRule(**r) for r in spec["rules"]], bool(spec["merge_lists"]))
    except (KeyError, TypeError, ConfigError) as e:
        raise ArtifactError(f"{p}: invalid masking rules: {e}") from None
    if masker.fingerprint != fp:
        raise ArtifactError(f"{p}: masking rules do not match their fingerprint")
    return masker


class DriftMiner:
    """Counts templates among the lines the frozen vocab left UNK (a fresh, bounded Drain3 miner)."""

    def __init__(self, fmt: LogFormat, *, sim_th: float | None = None, depth: int | None = None,
                 max_clusters: int = 1000) -> None:
        self.fmt = fmt
        self._miner = new_miner(fmt, sim_th, depth, None, max_clusters)  # LRU-bounded memory
        self.lines = 0

    def observe(self, content: str) -> int:
        """Feed one raw content that matched nothing; returns its drift cluster id."""
        return self.observe_masked(self.fmt.masker.mask(content))

    def observe_masked(self, masked: str) -> int:
        self.lines += 1
        cluster, _ = self._miner.drain.add_log_message(masked)
        return int(cluster.cluster_id)

    def summary(self, top: int = 10) -> dict[str, Any]:
        clusters = sorted(self._miner.drain.clusters, key=lambda c: -c.size)
        return {
            "lines": self.lines,
            "templates": len(clusters),
            "created": self._miner.drain.clusters_counter,  # > templates once the LRU bound evicted some
            "top": [{"id": c.cluster_id, "template": render(c.get_template()), "count": c.size}
                    for c in clusters[:top]],
        }


def match_lines(vocab: TemplateVocab, fmt: LogFormat,
                lines: Iterable[bytes | str]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(session keys, template key) per raw line; UNK is "<unk>"; a rejected line gives
    ((), "rejected:<reason>"). `fmt` parses the lines; the vocab masks with its own rules.
    For `logad templates match`."""
    for raw in lines:
        rec = parse_line(raw, fmt)
        if isinstance(rec, Rejected):
            yield (), f"rejected:{rec.reason}"
        else:
            yield rec.session_keys, vocab.keys[vocab.match(rec.content)]
