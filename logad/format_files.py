"""Format files: a TOML file (or the dict read from one) -> a LogFormat, every key checked.

The keys are LogFormat's fields (logad.formats), their types read off its annotations, so a new
field needs no second list here; unknown keys, wrong types and invalid regexes raise ConfigError
naming the key. `load_format` also answers the built-in formats by name.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from logad.default_masks import DEFAULT_MASKS
from logad.errors import ConfigError
from logad.formats import FORMATS, JsonFields, LogFormat
from logad.masking import MaskRule

_TOML_KEYS = ({f.name for f in fields(LogFormat) if f.init} - {"masking", "source_text"}) | {"mask", "default_masks"}
_MASK_KEYS = {"name", "pattern", "placeholder", "scope", "needs"}
# The type each TOML key must have, read off LogFormat's fields (so a new field needs no second list).
_HINTS = typing.get_type_hints(LogFormat)
_TYPES: dict[str, type] = {f.name: _HINTS[f.name] for f in fields(LogFormat)
                           if f.init and _HINTS[f.name] in (str, int, float, bool) and f.name != "source_text"}
_TYPES["default_masks"] = bool
_LISTS = tuple(f.name for f in fields(LogFormat) if f.init and _HINTS[f.name] == tuple[str, ...])
EXAMPLE = """name = "myapp"
log_format = '<Date> <Time> <Level> \\[<Thread>\\] <Component>: <Content>'
timestamp_fields = ["Date", "Time"]
timestamp_formats = ["%Y-%m-%d %H:%M:%S,%f"]
session_keys = ['request_id=(\\w+)']"""


def load_format(name_or_path: str | Path) -> LogFormat:
    """A built-in format by name, or one read from a TOML file.

    TOML keys are LogFormat's fields (see docs in README "Your own logs"), e.g.
        name = "myapp"
        log_format = '<Date> <Time> <Level> \\[<Thread>\\] <Component>: <Content>'
        timestamp_fields = ["Date", "Time"]
        timestamp_formats = ["%Y-%m-%d %H:%M:%S,%f"]
        session_field = "Thread"
        multiline = true
        [[mask]]                       # optional, applied before logad's default masks
        name = "order"
        pattern = 'ORD-\\d+'
        placeholder = "<ORDER>"
    `[json]` maps the fields of JSON input (input = "json"). Unknown keys, wrong types and invalid
    regexes raise ConfigError naming the key.
    """
    if isinstance(name_or_path, str) and name_or_path in FORMATS:
        return FORMATS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown log format {str(name_or_path)!r}: not one of {sorted(FORMATS)} nor a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"format file {path} cannot be read: {e}") from None
    return format_from_text(text, origin=str(path))


def format_from_text(text: str, origin: str = "format config") -> LogFormat:
    """A format from the text of a TOML format file (as stored in a model bundle)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"format file {origin} is not valid TOML: {e}") from None
    fmt = format_from_dict(data, origin=origin)
    object.__setattr__(fmt, "source_text", text)
    return fmt


def _json_fields(value: Any, origin: str) -> JsonFields:
    known = {f.name for f in fields(JsonFields)}
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: [json] must be a table of field paths")
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"{origin}: unknown keys {sorted(unknown)} in [json] (known: {sorted(known)})")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ConfigError(f"{origin}: json.{k} must be a string (a dotted field path), got {v!r}")
    return JsonFields(**value)


def format_from_dict(data: dict[str, Any], origin: str = "format config") -> LogFormat:
    unknown = set(data) - _TOML_KEYS
    if unknown:
        raise ConfigError(f"{origin}: unknown keys {sorted(unknown)} (known: {sorted(_TOML_KEYS)})")
    if "name" not in data:
        raise ConfigError(f"{origin}: missing key 'name'. A minimal format file:\n{EXAMPLE}")
    if "header" not in data and "log_format" not in data and data.get("input") != "json":
        raise ConfigError(f"{origin}: missing key 'log_format' (or 'header', or input = \"json\"). A minimal "
                          f"format file:\n{EXAMPLE}")
    rules = []
    masks = data.get("mask", [])
    if not isinstance(masks, list):
        raise ConfigError(f"{origin}: mask must be an array of tables ([[mask]])")
    for i, m in enumerate(masks):
        if not isinstance(m, dict) or set(m) - _MASK_KEYS or not {"name", "pattern", "placeholder"} <= set(m):
            raise ConfigError(f"{origin}: mask #{i} needs name, pattern, placeholder (optional: scope, needs)")
        if not all(isinstance(v, str) for v in m.values()):
            raise ConfigError(f"{origin}: mask #{i}: values must be strings")
        rules.append(MaskRule(**m))
    kw: dict[str, Any] = {k: v for k, v in data.items() if k not in ("mask", "default_masks")}
    for k, typ in _TYPES.items():
        if k in data:
            v = data[k]
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, typ) or (typ in (int, float) and isinstance(v, bool)):
                raise ConfigError(f"{origin}: {k} must be {typ.__name__}, got {v!r}")
            if k in kw:
                kw[k] = v
    for k in _LISTS:
        if k in kw:
            if not isinstance(kw[k], list) or not all(isinstance(x, str) for x in kw[k]):
                raise ConfigError(f"{origin}: {k} must be a list of strings")
            kw[k] = tuple(kw[k])
    if "json" in kw:
        kw["json"] = _json_fields(kw["json"], origin)
    # A format file gets logad's generic masks after its own rules (numbers, ids, addresses...):
    # what a newcomer needs; `default_masks = false` leaves exactly the file's rules.
    if data.get("default_masks", True):
        from logad.default_masks import DEFAULT_SIM_TH

        own = {r.name for r in rules}
        rules += [r for r in DEFAULT_MASKS if r.name not in own]
        kw.setdefault("drain_sim_th", DEFAULT_SIM_TH)
    return LogFormat(masking=tuple(rules), **kw)
