"""Log formats as data: header layout, timestamps, session keys and masking rules, per dataset.

A format is a frozen `LogFormat`; the built-ins are `FORMATS["hdfs"]` and `FORMATS["openstack"]`. A
third one is a TOML file given to `load_format(path)` (see `load_format` for the keys), not code.

Every regex here runs on the streaming hot path, including on hostile input (a 1 MB line of
"1.1.1.1..."), so each is written to be linear: no nested quantifiers over overlapping classes,
context checks as fixed-width lookarounds. tests/logad/test_formats_parse.py times them.
"""

from __future__ import annotations

import calendar
import re
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from logad.errors import ConfigError
from logad.masking import Masker, MaskRule

HEADER_FIELDS = ("timestamp", "level", "component", "content")  # named groups parse_line reads
_MISSING = object()

# -- masking building blocks (order matters: earlier rules see raw text, later ones see placeholders)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Characters that end a path (Loghub-2.0's path delimiters: a path is "/x/y" between them).
_PATH_CH = r"""[^\s/,!;:=|"'\[\](){}]"""
_PATH_START = r"""(?<![^\s,!;:=|"'\[\](){}])"""  # start of text or after a delimiter

REQ = MaskRule("req", r"req-" + _UUID, "<REQ>", "line")  # OpenStack request ids
# `"GET /v2/.../detail HTTP/1.1"`: the request target and protocol are one parameter (Loghub-2.0).
# `[^\s"]*` (not `\S*`) so that no two candidate starts scan the same text: '"/"/"/...' stays linear.
URL = MaskRule("url", r'/(?<![^\s"]/)[^\s"]* HTTP/\d(?:\.\d)?(?=")', "<URL>", "line")
UUID = MaskRule("uuid", r"(?<![\w-])" + _UUID + r"(?![\w-])", "<UUID>", needs="-")
# IPv4 with an optional leading "/" (HDFS writes "/10.250.19.102:54106"); the port stays a <NUM>
# because Loghub-2.0 templates keep "<*>:<*>".
IP = MaskRule("ip", r"(?<![\w.])/?\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)(?!\w)", "<IP>", needs=".")
PATH = MaskRule("path", _PATH_START + r"(?:/" + _PATH_CH + r"+)+/?", "<PATH>", needs="/")
HEX = MaskRule("hex", r"(?<![\w-])(?:0[xX][0-9a-fA-F]+|[0-9a-f]{16,})(?![\w-])", "<HEX>")
# Host names: 3+ lowercase dot-separated labels, the first with a digit ("cp-1.slowvm1.tcloud-pg0...");
# the digit keeps Python module paths ("nova.compute.manager") out.
HOST = MaskRule("host", r"(?<![\w.-])(?=[a-z-]*\d)[a-z0-9-]+(?:\.[a-z0-9-]+){2,}(?![\w.-])", "<HOST>", needs=".")
# Numbers, signed or decimal, with an optional unit ("64172MB", "15GB", "20ms"); "-" and ":" split
# dates and times into numbers, as Loghub-2.0 does ("<*>-<*>-<*> <*>:<*>:<*>").
NUM = MaskRule("num", r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[KMGT]i?B|ms|s)?(?![\w])", "<NUM>", needs="0123456789")
GENERIC = (UUID, IP, PATH, HEX, HOST, NUM)


@dataclass(frozen=True)
class LogFormat:
    """How to read one kind of log: header regex, timestamp, session keys, masking, Drain3 settings."""

    name: str  # "hdfs", "openstack", ...
    header: str  # regex with named groups: content (required), timestamp, level, component (optional)
    timestamp_formats: tuple[str, ...] = ()  # strptime formats tried in order; times are UTC
    session_keys: tuple[str, ...] = ()  # regexes over the content; group 1 if the regex has one, else the match
    masking: tuple[MaskRule, ...] = ()  # ordered masking rules (the one definition for this dataset)
    merge_lists: bool = True  # "<BLK> <BLK> <BLK>" -> "<BLK>" (see logad.masking)
    terminal_templates: tuple[str, ...] = ()  # template keys that end a session (may be empty)
    max_line_bytes: int = 65536  # longer raw lines are truncated (LogRecord.truncated)
    drain_sim_th: float = 0.4  # Drain3 similarity threshold used by fit() / DriftMiner
    drain_depth: int = 4  # Drain3 prefix-tree depth
    drain_max_children: int = 100  # Drain3 max children per tree node
    # compiled state, built once in __post_init__
    header_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    session_res: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    masker: Masker = field(init=False, repr=False, compare=False)
    _header_groups: tuple[str, ...] = field(init=False, repr=False, compare=False)
    full_header: bool = field(init=False, repr=False, compare=False)  # all of HEADER_FIELDS are groups
    # parse_timestamp's cache (parse_line peeks into it first: the hot path)
    ts_cache: dict[str, float | None] = field(init=False, repr=False, compare=False)
    _frac_split: bool = field(init=False, repr=False, compare=False)  # a format ends with ".%f"

    def __post_init__(self) -> None:
        where = f"format {self.name!r}"
        try:
            header_re = re.compile(self.header)
            session_res = tuple(re.compile(p) for p in self.session_keys)
        except re.error as e:
            raise ConfigError(f"{where}: invalid regex: {e}") from None
        if "content" not in header_re.groupindex:
            raise ConfigError(f"{where}: header regex needs a named group 'content'")
        if self.timestamp_formats and "timestamp" not in header_re.groupindex:
            raise ConfigError(f"{where}: timestamp_formats given but the header has no 'timestamp' group")
        if not session_res:
            raise ConfigError(f"{where}: at least one session_keys regex is needed")
        if any(rx.groups > 1 for rx in session_res):
            raise ConfigError(f"{where}: a session_keys regex may have at most one group (the key)")
        if self.max_line_bytes < 64:
            raise ConfigError(f"{where}: max_line_bytes must be >= 64, got {self.max_line_bytes}")
        if not 0.0 < self.drain_sim_th <= 1.0 or self.drain_depth < 3:
            raise ConfigError(f"{where}: need 0 < drain_sim_th <= 1 and drain_depth >= 3")
        groups = tuple(g for g in HEADER_FIELDS if g in header_re.groupindex)
        set_ = object.__setattr__  # frozen dataclass: compiled state is set once here
        set_(self, "header_re", header_re)
        set_(self, "session_res", session_res)
        set_(self, "masker", Masker(self.masking, self.merge_lists))
        set_(self, "_header_groups", groups)
        set_(self, "full_header", len(groups) == len(HEADER_FIELDS))
        set_(self, "ts_cache", {})
        set_(self, "_frac_split", any(f.endswith(".%f") for f in self.timestamp_formats))

    def header_fields(self, m: re.Match[str]) -> tuple[str | None, str, str, str]:
        """(timestamp text, level, component, content) of a header match; absent groups -> None / ""."""
        if self.full_header:
            ts, level, component, content = m.group(*HEADER_FIELDS)
            return ts, level or "", component or "", content
        d = m.groupdict()
        return d.get("timestamp"), d.get("level") or "", d.get("component") or "", d["content"]

    def find_session_keys(self, content: str) -> tuple[str, ...]:
        """Session ids named in the content (rule order, then order of appearance), without duplicates."""
        found: list[str] = []
        for rx in self.session_res:
            found.extend(rx.findall(content))  # findall returns group 1 when the regex has one group
        if len(found) > 1:
            return tuple(dict.fromkeys(found))
        return tuple(found)

    def parse_timestamp(self, text: str) -> float | None:
        """Seconds since the epoch (UTC) of a header timestamp, or None when no format fits.

        strptime costs ~10 us, so results are cached per whole second (HDFS repeats the same second
        hundreds of times; OpenStack's ".%f" fraction is split off and added back).
        """
        cache = self.ts_cache
        base: Any = cache.get(text, _MISSING)  # fast path: a whole-second timestamp seen before
        if base is not _MISSING:
            return cast(float | None, base)
        key, frac = text, 0.0
        if self._frac_split and "." in text:
            head, _, tail = text.rpartition(".")
            if head and tail.isdigit():
                key, frac = head, int(tail) / 10 ** len(tail)
                base = cache.get(key, _MISSING)
        if base is _MISSING:
            base = self._strptime(key, frac_split=key is not text)
            if base is None and key is not text:  # not a fraction after all: try the whole text
                key, frac = text, 0.0
                base = self._strptime(text, frac_split=False)
            if len(cache) >= 65536:
                cache.clear()
            cache[key] = base
        return None if base is None else base + frac

    def _strptime(self, text: str, frac_split: bool) -> float | None:
        for f in self.timestamp_formats:
            if frac_split and f.endswith(".%f"):
                f = f[:-3]
            try:
                return float(calendar.timegm(time.strptime(text, f)))
            except ValueError:
                continue
        return None


def _hdfs() -> LogFormat:
    return LogFormat(
        name="hdfs",
        # 081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_3886... terminating
        header=r"(?P<timestamp>\d{6} \d{6}) (?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>[^\s:]+): (?P<content>.*)",
        timestamp_formats=("%y%m%d %H%M%S",),
        session_keys=(r"blk_-?\d+",),  # every block named in the line; each block gets the event
        # Block ids first and as a line rule: unique per line, they would flood the token cache.
        masking=(MaskRule("blk", r"blk_-?\d+", "<BLK>", "line"), *GENERIC),
        # No terminal template: deletions come in several forms and orders, and traces are often cut
        # (data/README.md); sessions close on gaps and idleness instead.
        terminal_templates=(),
        # After this masking every remaining token is a constant, and lines that differ in a constant
        # word are different events ("to spawn" / "to destroy", "VM Started" / "VM Paused"): Drain3
        # may only merge lines that agree on nearly every token. 0.95 tolerates one odd token in 20+.
        # (OpenStack 2k: GA 1.0 at 0.95, 0.98 at 0.9, 0.37 at 0.7; HDFS 1.0 at 0.4..0.95.)
        drain_sim_th=0.95,
        drain_depth=4,
    )


def _openstack() -> LogFormat:
    return LogFormat(
        name="openstack",
        # nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:00.008 25746 INFO nova.osapi_compute.wsgi.server
        #   [req-... - - -] 10.11.10.1 "GET /v2/... HTTP/1.1" status: 200 len: 1893 time: 0.2477829
        header=(
            r"(?P<logrecord>\S+) (?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) (?P<pid>\d+) "
            r"(?P<level>[A-Z]+) (?P<component>\S+) \[(?P<addr>[^\]]*)\] (?P<content>.*)"
        ),
        timestamp_formats=("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"),
        # The VM instance: "[instance: <uuid>]", also "for instance <uuid>" / "Cannot stop instance <uuid>".
        session_keys=(r"\binstance:? (" + _UUID + r")(?![\w-])",),
        masking=(REQ, URL, *GENERIC),
        # No terminal template: "VM Stopped" ends every GraphLog session but also occurs mid-session
        # (stop/start, shelve), and "Deleted allocation" is followed by more events.
        terminal_templates=(),
        drain_sim_th=0.95,  # see _hdfs
        drain_depth=4,
    )


FORMATS: dict[str, LogFormat] = {"hdfs": _hdfs(), "openstack": _openstack()}

_TOML_KEYS = {f.name for f in fields(LogFormat) if f.init} - {"masking"} | {"mask"}
_MASK_KEYS = {"name", "pattern", "placeholder", "scope", "needs"}


def load_format(name_or_path: str | Path) -> LogFormat:
    """A built-in format by name, or one read from a TOML file.

    TOML keys are LogFormat's fields; masking rules are an array of tables:
        name = "myapp"
        header = '(?P<timestamp>\\S+ \\S+) (?P<level>\\w+) (?P<content>.*)'
        timestamp_formats = ["%Y-%m-%d %H:%M:%S"]
        session_keys = ['session=(\\w+)']
        [[mask]]
        name = "num"
        pattern = '(?<![\\w.])\\d+(?![\\w])'
        placeholder = "<NUM>"
    Unknown keys, wrong types and invalid regexes raise ConfigError.
    """
    if isinstance(name_or_path, str) and name_or_path in FORMATS:
        return FORMATS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown log format {str(name_or_path)!r}: not one of {sorted(FORMATS)} nor a TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"format file {path} is not valid TOML: {e}") from None
    return format_from_dict(data, origin=str(path))


def format_from_dict(data: dict[str, Any], origin: str = "format config") -> LogFormat:
    unknown = set(data) - _TOML_KEYS
    if unknown:
        raise ConfigError(f"{origin}: unknown keys {sorted(unknown)} (known: {sorted(_TOML_KEYS)})")
    for required in ("name", "header", "session_keys"):
        if required not in data:
            raise ConfigError(f"{origin}: missing key {required!r}")
    rules = []
    for i, m in enumerate(data.get("mask", [])):
        if not isinstance(m, dict) or set(m) - _MASK_KEYS or not {"name", "pattern", "placeholder"} <= set(m):
            raise ConfigError(f"{origin}: mask #{i} needs name, pattern, placeholder (optional: scope, needs)")
        if not all(isinstance(v, str) for v in m.values()):
            raise ConfigError(f"{origin}: mask #{i}: values must be strings")
        rules.append(MaskRule(**m))
    kw: dict[str, Any] = {k: v for k, v in data.items() if k != "mask"}
    types = {"name": str, "header": str, "merge_lists": bool, "max_line_bytes": int, "drain_sim_th": float,
             "drain_depth": int, "drain_max_children": int}
    for k, typ in types.items():
        if k in kw:
            v = kw[k]
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                v = kw[k] = float(v)
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                raise ConfigError(f"{origin}: {k} must be {typ.__name__}, got {v!r}")
    for k in ("timestamp_formats", "session_keys", "terminal_templates"):
        if k in kw:
            if not isinstance(kw[k], list) or not all(isinstance(x, str) for x in kw[k]):
                raise ConfigError(f"{origin}: {k} must be a list of strings")
            kw[k] = tuple(kw[k])
    return LogFormat(masking=tuple(rules), **kw)
