"""Loghub log-format strings -> a header regex: `'<Date> <Time> <Level> \\[<Process>\\] <Component>: <Content>'`.

The Loghub / logparser benchmark describes a log by its header: `<Field>` placeholders between
literal text, where the literal text is itself regex syntax (`\\[`, `(\\[<PID>\\])?`) and a run of
spaces matches any run of whitespace. The benchmark turns each field into `(?P<Field>.*?)`; on a
line that does not match, k lazy fields separated by spaces backtrack in O(n^k), which a 64 KiB
hostile line turns into minutes. Here each field is bounded by what follows it instead, so every
field is scanned once per start position:

    field before a space           -> \\S*        one token (Loghub's formats never put spaces there)
    field before a literal char c  -> [^c\\n]*    up to the next c (`\\[<Time>\\]`: any text up to `]`)
    field before a regex construct -> .{0,256}?  e.g. `<Component>(\\[<PID>\\])?:` (bounded: linear)
    the last field                 -> .*          the rest of the line (normally <Content>)

On the formats of the Loghub benchmark this matches the same lines, with the same <Content>, as
the benchmark's own regex (tests/logad/test_logformat.py).
"""

from __future__ import annotations

import re

from logad.errors import ConfigError

_FIELD = re.compile(r"<([^<>]+)>")
_SPACES = re.compile(r" +")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _field_pattern(following: str) -> str:
    """The pattern of a field given the literal regex text right after it ('' at the end)."""
    if not following:
        return ".*"
    c = following[0]
    if c == " ":
        return r"\S*"
    if c == "\\" and len(following) > 1 and not following[1].isalnum():
        lit = following[1]  # an escaped literal such as \[ \| \.
    elif c.isalnum() or c in ":,;-=@#/'\"!%&~_<>":
        lit = c
    else:
        return r".{0,256}?"  # a group, class or quantifier: the engine decides, within a bounded span
    return "[^" + re.escape(lit) + r"\n]*"


def loghub_regex(log_format: str) -> tuple[str, tuple[str, ...]]:
    """(anchored regex source with one named group per field, field names in order).

    Raises ConfigError for: no `<Content>` field, a field name that is not an identifier, a field
    named twice, two fields with nothing between them, or literal text that is not a valid regex.
    """
    if not isinstance(log_format, str) or not log_format.strip():
        raise ConfigError("log_format must be a non-empty string such as '<Date> <Time> <Level> <Content>'")
    parts = _FIELD.split(log_format)  # [literal, field, literal, field, ..., literal]
    names = tuple(parts[1::2])
    if "Content" not in names:
        raise ConfigError(f"log_format {log_format!r} needs a <Content> field (the message)")
    for name in names:
        if not _IDENT.match(name):
            raise ConfigError(f"log_format field <{name}> must be a name of letters, digits and _")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"log_format names field <{dup[0]}> twice")
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(_SPACES.sub(r"\\s+", part))
            continue
        following = _SPACES.sub(" ", parts[i + 1])
        if not following and i + 1 < len(parts) - 1:
            raise ConfigError(f"log_format fields <{part}> and <{parts[i + 2]}> need text between them")
        out.append(f"(?P<{part}>{_field_pattern(following)})")
    source = "^" + "".join(out) + "$"
    try:
        re.compile(source)
    except re.error as e:
        raise ConfigError(f"log_format {log_format!r} is not a valid pattern: {e}") from None
    return source, names
