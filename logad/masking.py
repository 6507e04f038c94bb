"""Masking: replace variable parts of a log message (ids, addresses, numbers...) by typed placeholders.

The same `Masker` (built from a LogFormat's rules) runs before Drain3 during offline mining and in
front of the frozen matcher online, so training and streaming see identical masked text.

content --line rules--> --split on whitespace--> token rules (cached per token) --> list merge
        --> "Receiving block <BLK> src: <IP>:<NUM> dest: <IP>:<NUM>"

Why two scopes: regex masking is the hot path's main cost (~1 us per rule and line in CPython).
Most variable values sit inside one whitespace token and tokens repeat massively (the same IPs,
ports, sizes), so token rules run once per distinct token and are then a dict lookup. Rules that
may span whitespace, or that remove unique ids early (so the token cache stays small), are `line`
rules and run on the whole content first.

Placeholders are typed (`<IP>`, `<NUM>`) so Drain3 keeps different kinds of values apart; when a
template is shown or compared with Loghub templates it is rendered with Loghub's `<*>`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from logad.errors import ConfigError

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]*>|<\*>")  # typed placeholders and Loghub/Drain3 `<*>`
_TYPED_RE = re.compile(r"<[A-Z][A-Z0-9_]*>")
# "<IP>,<IP>" inside one token (a comma-separated list without spaces) is one list parameter.
_INTRA_LIST_RE = re.compile(r"(<[A-Z][A-Z0-9_]*>)(?:,\1)+")
SCOPES = ("line", "token")
WILDCARD = "<*>"
# Only short strings are cached: caches stay bounded in bytes (worst case ~30 MB tokens + ~80 MB lines)
# even under a flood of unique long lines, and long lines do not repeat anyway.
MAX_CACHED_TOKEN = 256
MAX_CACHED_LINE = 2048


@dataclass(frozen=True, slots=True)
class MaskRule:
    """One ordered masking rule: every match of `pattern` becomes `placeholder`."""

    name: str  # short name, e.g. "ip" (documentation and error messages)
    pattern: str  # Python regex; must not match the empty string; keep it linear (no nested quantifiers)
    placeholder: str  # typed placeholder, e.g. "<IP>"
    scope: str = "token"  # "token": cannot span whitespace (cached per token); "line": whole content, first
    # Speed hint for token rules: characters of which every match contains at least one ("." for an
    # IP); tokens without any skip the regex. Must be a true necessary condition; "" = always run.
    needs: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"name": self.name, "pattern": self.pattern, "placeholder": self.placeholder, "scope": self.scope}
        if self.needs:
            d["needs"] = self.needs
        return d


def compile_rule(rule: MaskRule) -> re.Pattern[str]:
    """Validate one rule and compile it; raise ConfigError naming the rule."""
    if not re.fullmatch(r"<[A-Z][A-Z0-9_]*>", rule.placeholder):
        raise ConfigError(f"mask rule {rule.name!r}: placeholder {rule.placeholder!r} must look like <NAME>")
    if rule.scope not in SCOPES:
        raise ConfigError(f"mask rule {rule.name!r}: scope must be one of {SCOPES}, got {rule.scope!r}")
    try:
        rx = re.compile(rule.pattern)
    except re.error as e:
        raise ConfigError(f"mask rule {rule.name!r}: invalid regex: {e}") from None
    if rx.search("") is not None:
        raise ConfigError(f"mask rule {rule.name!r}: pattern matches the empty string")
    return rx


def _guard(needs: str) -> Callable[[str], bool] | None:
    """A fast "may the rule match this token?" test: `in` for one character, a char class for more."""
    if not needs:
        return None
    if len(needs) == 1:
        return lambda tok: needs in tok
    rx = re.compile("[" + re.escape(needs) + "]")
    return lambda tok: rx.search(tok) is not None


class _TokenCache(dict[str, str]):
    """token -> masked token; computes misses itself so `map(cache.__getitem__, tokens)` stays in C.

    Bounded by clearing when full: O(1), no LRU bookkeeping on the hot path, and the working set of
    tokens refills within a few thousand lines.
    """

    def __init__(self, rules: list[tuple[re.Pattern[str], str, Callable[[str], bool] | None]], max_size: int) -> None:
        super().__init__()
        self._rules = rules
        self._max = max_size

    def __missing__(self, token: str) -> str:
        masked = token
        for rx, placeholder, may_match in self._rules:
            if may_match is None or may_match(masked):
                masked = rx.sub(placeholder, masked)
        if "," in masked:
            masked = _INTRA_LIST_RE.sub(r"\1", masked)
        if len(token) <= MAX_CACHED_TOKEN:
            if len(self) >= self._max:
                self.clear()
            self[token] = masked
        return masked


def _merge_lists(masked: str) -> str:
    """Collapse a whitespace-separated run of the same masked item into one parameter.

    "to delete <BLK> <BLK> <BLK>" -> "to delete <BLK>"; "to <IP>:<NUM>, <IP>:<NUM>" -> "to <IP>:<NUM>":
    a list of values of one kind is one variable, whatever its length (else Drain3 would make one
    template per list length).
    """
    out: list[str] = []
    prev = ""
    for tok in masked.split(" "):
        core = tok.rstrip(",")
        if core == prev and "<" in core:
            out[-1] = tok
            continue
        out.append(tok)
        prev = core
    return " ".join(out)


class Masker:
    """Applies a format's rules: the `line` rules first (in their order), then the `token` rules (in
    theirs) on each whitespace token, then the list merge. See the module docstring for why."""

    def __init__(self, rules: Iterable[MaskRule], merge_lists: bool = True, token_cache_size: int = 100_000,
                 line_cache_size: int = 20_000) -> None:
        self.rules: tuple[MaskRule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"mask rule names must be unique, got {names}")
        self.merge_lists = merge_lists
        compiled = [(compile_rule(r), r.placeholder, r.scope, _guard(r.needs)) for r in self.rules]
        self._line_rules = [(rx, ph) for rx, ph, scope, _ in compiled if scope == "line"]
        self._tokens = _TokenCache([(rx, ph, g) for rx, ph, scope, g in compiled if scope == "token"], token_cache_size)
        self._token_get = self._tokens.__getitem__
        # After the line rules (which remove unique ids) many lines repeat exactly (HDFS: 2 in 3), so
        # a second cache skips the token pass for them.
        self._lines: dict[str, str] = {}
        self._line_cache_size = line_cache_size
        self.fingerprint = masking_fingerprint(self.rules, merge_lists)

    def mask(self, content: str) -> str:
        """Masked, whitespace-normalised content (tokens joined by single spaces)."""
        for rx, placeholder in self._line_rules:
            content = rx.sub(placeholder, content)
        masked = self._lines.get(content)
        if masked is not None:
            return masked
        masked = " ".join(map(self._token_get, content.split()))
        if self.merge_lists and ("> <" in masked or ">, <" in masked):
            masked = _merge_lists(masked)
        if len(content) <= MAX_CACHED_LINE:
            if len(self._lines) >= self._line_cache_size:
                self._lines.clear()
            self._lines[content] = masked
        return masked

    def mask_template(self, template: str) -> str:
        """Mask a reference template text (Loghub `<*>` kept) so it can be matched against masked lines."""
        return self.mask(template)


def render(masked_template: str) -> str:
    """Loghub-style text of a masked template: every placeholder -> `<*>`, `<*><*>` runs merged."""
    text = _TYPED_RE.sub(WILDCARD, masked_template)
    while "<*><*>" in text:
        text = text.replace("<*><*>", WILDCARD)
    return text


def masking_fingerprint(rules: Iterable[MaskRule], merge_lists: bool = True) -> str:
    """sha256 over the ordered rules: a vocab records it so it is never used with other masking."""
    payload = {"rules": [r.to_dict() for r in rules], "merge_lists": merge_lists}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
