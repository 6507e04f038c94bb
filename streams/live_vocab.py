"""Whether a new bundle's vocab extends the running one: the condition for the worker to take it
without a restart (its events keep their meaning: every template keeps its id).
"""

from __future__ import annotations

from typing import Any


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
