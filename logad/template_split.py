"""Split a mined cluster where its lines disagree on a few constant words.

Drain3 merges lines by the share of equal tokens, so one similarity threshold cannot serve every
log: "VM Started" / "VM Paused" / "VM Resumed" differ in one token of many and merge at any usable
threshold, while "Invalid user alice" / "Invalid user bob" differ in one token of few and split at
a strict one. What tells a constant word from a variable is how the values of a position are
distributed, not how many tokens differ:

* a position whose values are a handful of plain words (no digits, no placeholders), at least one
  of them repeated, is a choice between constants: the cluster is split by it
  ("Failed password for ..." x135 / "Failed none for ..." x4);
* a position with many distinct values, or values that hold digits or placeholders, is a variable
  ("user webmaster", "user test", ... ; "broadcast_9_piece0").

Splitting repeats on each subgroup (whose positions are judged again on its own lines), picks the
position with the fewest values first, and works on distinct masked lines with their counts, so
its cost grows with the number of distinct lines, not with the number of lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from logad.masking import WILDCARD

# A position with more distinct plain words than this is a variable (user names, host names ...).
MAX_CONSTANT_CHOICES = 4


def _plain_word(token: str) -> bool:
    # Digits or a placeholder mark an identifier or a masked value, never a constant to split on.
    return "<" not in token and not any(c.isdigit() for c in token)


def _split_position(lines: list[tuple[tuple[str, ...], int]]) -> int | None:
    """The position to split on (fewest distinct plain words, leftmost on ties), or None."""
    best, best_n = None, MAX_CONSTANT_CHOICES + 1
    for j in range(len(lines[0][0])):
        values: Counter[str] = Counter()
        for toks, n in lines:
            values[toks[j]] += n
            if len(values) >= best_n:
                break
        if not 2 <= len(values) < best_n or not all(map(_plain_word, values)):
            continue
        if max(values.values()) < 2:  # every value once: a variable seen a few times, not a choice
            continue
        best, best_n = j, len(values)
    return best


def _split(lines: list[tuple[tuple[str, ...], int]]) -> list[list[tuple[tuple[str, ...], int]]]:
    # Depth-first with an explicit stack (a line may have thousands of tokens, so no recursion);
    # parts come out in order of first appearance: deterministic.
    out: list[list[tuple[tuple[str, ...], int]]] = []
    stack = [lines]
    while stack:
        group = stack.pop()
        j = _split_position(group)
        if j is None:
            out.append(group)
            continue
        parts: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for item in group:
            parts.setdefault(item[0][j], []).append(item)
        stack.extend(reversed(parts.values()))
    return out


def _pattern(lines: list[tuple[tuple[str, ...], int]]) -> str:
    first = lines[0][0]
    return " ".join(tok if all(t[j] == tok for t, _ in lines) else WILDCARD for j, tok in enumerate(first))


def split_cluster(masked_lines: Mapping[str, int]) -> list[tuple[str, int]]:
    """(token-wildcard pattern, line count) per subgroup of one cluster's distinct masked lines.

    The lines must have one token count (as Drain3's clusters do); their order of first appearance
    fixes the order of the result.
    """
    by_len: dict[int, list[tuple[tuple[str, ...], int]]] = {}
    for text, n in masked_lines.items():
        toks = tuple(text.split(" "))
        by_len.setdefault(len(toks), []).append((toks, n))
    out = []
    for lines in by_len.values():
        for part in _split(lines):
            out.append((_pattern(part), sum(n for _, n in part)))
    return out
