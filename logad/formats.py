"""Log formats as data: header layout, timestamps, session keys and masking rules, per dataset.

A format is a frozen `LogFormat`; the built-ins are `FORMATS["hdfs"]` and `FORMATS["openstack"]`. A
third one is a TOML file given to `logad.format_files.load_format(path)`, not code.

Every regex here runs on the streaming hot path, including on hostile input (a 1 MB line of
"1.1.1.1..."), so each is written to be linear: no nested quantifiers over overlapping classes,
context checks as fixed-width lookarounds. tests/logad/test_formats_parse.py times them.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

from logad.default_masks import _UUID, DEFAULT_MASKS
from logad.errors import ConfigError
from logad.logformat import loghub_regex
from logad.masking import Masker, MaskRule

HEADER_FIELDS = ("timestamp", "level", "component", "content")  # named groups parse_line reads
_MISSING = object()

# -- masking building blocks (order matters: earlier rules see raw text, later ones see placeholders).
# The generic rules are logad.default_masks' (what format files get by default); the built-ins add
# OpenStack's request ids and URLs in front of them.
REQ = MaskRule("req", r"req-" + _UUID, "<REQ>", "line")  # OpenStack request ids
# `"GET /v2/.../detail HTTP/1.1"`: the request target and protocol are one parameter (Loghub-2.0).
# `[^\s"]*` (not `\S*`) so that no two candidate starts scan the same text: '"/"/"/...' stays linear.
URL = MaskRule("url", r'/(?<![^\s"]/)[^\s"]* HTTP/\d(?:\.\d)?(?=")', "<URL>", "line")
GENERIC = DEFAULT_MASKS


INPUTS = ("text", "json")  # what one raw line is: a plain log line, or a JSON object from a log shipper
TIME_EPOCH, TIME_EPOCH_MS, TIME_ISO = "epoch", "epoch_ms", "iso8601"  # named timestamp formats
_FIELD_ROLES = ("content", "level", "component")  # header groups read by role (any capitalisation)


@dataclass(frozen=True)
class JsonFields:
    """Where the parts of a JSON log record are (dotted paths into nested objects, "" = absent).

    Vector, Fluent Bit and Filebeat ship records such as {"message": "...", "@timestamp": "...",
    "log": {"file": {"path": "..."}}}: map those names here and the records are read as they are.
    """

    message: str = "message"  # the log message (then parsed with header/log_format when one is given)
    timestamp: str = ""  # event time: ISO 8601 text, epoch seconds/ms, or text in timestamp_formats
    level: str = ""  # severity
    component: str = ""  # logger / service name
    session: str = ""  # session id (e.g. a trace id); one of the session rules
    path: str = ""  # the file or container the line came from (session_from_path applies to it)

    def paths(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v.split(".")) for k, v in vars(self).items() if v}


@dataclass(frozen=True)
class LogFormat:
    """How to read one kind of log: header, timestamp, session rule, masking, Drain3 settings.

    Session rules (at most one; commands that only parse need none):
      session_keys       regexes over the content (every id named in the line: HDFS blocks)
      session_field      a header field (or, for JSON input, `json.session`): a trace id, a pid
      session_from_path  a regex over the line's origin, group 1: the file path offline, the Kafka
                         record key in the stream (one file or container per session)
      session_window_s   no session id at all: fixed time windows per origin (BGL-style logs)
    """

    name: str  # "hdfs", "openstack", "myapp", ...
    header: str = ""  # regex with named groups: content (required), timestamp, level, component
    log_format: str = ""  # alternative to header: Loghub syntax '<Date> <Time> <Level> <Content>'
    timestamp_fields: tuple[str, ...] = ()  # header fields joined by a space into the timestamp text
    timestamp_formats: tuple[str, ...] = ()  # strptime formats (or epoch | epoch_ms | iso8601), in order; UTC
    session_keys: tuple[str, ...] = ()  # regexes over the content; group 1 if the regex has one, else the match
    session_field: str = ""  # header field holding the session id
    session_from_path: str = ""  # regex over the origin (file path / record key); group 1 (or the match) is the id
    session_window_s: float = 0.0  # > 0: sessions are fixed windows of this many seconds per origin
    multiline: bool = False  # a line that does not match the header continues the previous entry
    max_entry_lines: int = 1000  # continuation lines kept per entry; more are counted and dropped
    input: str = "text"  # "text" | "json" (one JSON object per line; see JsonFields)
    json: JsonFields | None = None  # field mapping of JSON input
    masking: tuple[MaskRule, ...] = ()  # ordered masking rules (the one definition for this dataset)
    merge_lists: bool = True  # "<BLK> <BLK> <BLK>" -> "<BLK>" (see logad.masking)
    terminal_templates: tuple[str, ...] = ()  # template keys that end a session (may be empty)
    max_line_bytes: int = 65536  # longer raw lines are truncated (LogRecord.truncated)
    drain_sim_th: float = 0.4  # Drain3 similarity threshold used by fit() / DriftMiner
    drain_depth: int = 4  # Drain3 prefix-tree depth
    drain_max_children: int = 100  # Drain3 max children per tree node
    source_text: str = field(default="", compare=False, repr=False)  # the TOML it was read from ("" = built in)
    # compiled state, built once in __post_init__
    header_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    session_res: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    path_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    masker: Masker = field(init=False, repr=False, compare=False)
    _header_groups: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _roles: dict[str, str] = field(init=False, repr=False, compare=False)  # role -> header group name
    json_paths: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    full_header: bool = field(init=False, repr=False, compare=False)  # the built-ins' fast path applies
    # parse_timestamp's cache (parse_line peeks into it first: the hot path)
    ts_cache: dict[str, float | None] = field(init=False, repr=False, compare=False)
    _frac_split: bool = field(init=False, repr=False, compare=False)  # a format ends with ".%f"

    def __post_init__(self) -> None:
        where = f"format {self.name!r}"
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise ConfigError(f"{where}: name must be 1-64 letters, digits, '_', '.', '-' (it names topics and files)")
        if self.input not in INPUTS:
            raise ConfigError(f"{where}: input must be one of {INPUTS}, got {self.input!r}")
        if self.header and self.log_format:
            raise ConfigError(f"{where}: give header (a regex) or log_format (Loghub syntax), not both")
        header = self.header
        if self.log_format:
            header = loghub_regex(self.log_format)[0]
        if not header:
            if self.input != "json":
                raise ConfigError(f"{where}: a header regex or a log_format is needed (or input = \"json\")")
            header = r"(?P<content>.*)"  # JSON: the message is the content
        try:
            header_re = re.compile(header, re.DOTALL if self.multiline else 0)
            session_res = tuple(re.compile(p) for p in self.session_keys)
            path_re = re.compile(self.session_from_path) if self.session_from_path else None
        except re.error as e:
            raise ConfigError(f"{where}: invalid regex: {e}") from None
        groups = header_re.groupindex
        roles = {}
        for role in _FIELD_ROLES:
            found = [g for g in groups if g.lower() == role]
            if len(found) > 1:
                raise ConfigError(f"{where}: header fields {found} all read as the {role}: keep one")
            if found:
                roles[role] = found[0]
        if "content" not in roles:
            raise ConfigError(f"{where}: the header needs a content field (<Content> or (?P<content>...))")
        ts_fields = self.timestamp_fields or (("timestamp",) if "timestamp" in groups else ())
        for f in ts_fields + ((self.session_field,) if self.session_field and self.input != "json" else ()):
            if f not in groups:
                raise ConfigError(f"{where}: {f!r} is not a header field (fields: {', '.join(groups) or 'none'})")
        jf = self.json if self.input == "json" else None
        if self.input == "json" and jf is None:
            object.__setattr__(self, "json", jf := JsonFields())
        if self.input != "json" and self.json is not None:
            raise ConfigError(f"{where}: [json] field mapping given but input is not \"json\"")
        if self.timestamp_formats and not ts_fields and not (jf and jf.timestamp):
            raise ConfigError(f"{where}: timestamp_formats given but no timestamp field "
                              "(set timestamp_fields, a (?P<timestamp>...) group, or json.timestamp)")
        if self.session_field and self.input == "json" and self.session_field not in groups:
            raise ConfigError(f"{where}: for JSON input name the session id field as json.session")
        rules = [n for n, on in (("session_keys", bool(session_res)), ("session_field", bool(self.session_field)),
                                 ("json.session", bool(jf and jf.session)),
                                 ("session_from_path", path_re is not None),
                                 ("session_window_s", self.session_window_s != 0)) if on]
        if len(rules) > 1:
            raise ConfigError(f"{where}: choose one session rule, got {', '.join(rules)}")
        if any(rx.groups > 1 for rx in session_res) or (path_re is not None and path_re.groups > 1):
            raise ConfigError(f"{where}: a session regex may have at most one group (the key)")
        if self.session_window_s < 0 or (self.session_window_s and not (ts_fields or (jf and jf.timestamp))):
            raise ConfigError(f"{where}: session_window_s needs a positive number of seconds and a timestamp")
        if self.max_line_bytes < 64:
            raise ConfigError(f"{where}: max_line_bytes must be >= 64, got {self.max_line_bytes}")
        if self.max_entry_lines < 1:
            raise ConfigError(f"{where}: max_entry_lines must be >= 1, got {self.max_entry_lines}")
        if not 0.0 < self.drain_sim_th <= 1.0 or self.drain_depth < 3:
            raise ConfigError(f"{where}: need 0 < drain_sim_th <= 1 and drain_depth >= 3")
        std = tuple(g for g in HEADER_FIELDS if g in groups)
        set_ = object.__setattr__  # frozen dataclass: compiled state is set once here
        set_(self, "timestamp_fields", tuple(ts_fields))
        set_(self, "header_re", header_re)
        set_(self, "session_res", session_res)
        set_(self, "path_re", path_re)
        set_(self, "masker", Masker(self.masking, self.merge_lists))
        set_(self, "_header_groups", std)
        set_(self, "_roles", roles)
        set_(self, "json_paths", jf.paths() if jf else {})
        # The built-ins' fast path: the four standard groups, content-regex session keys, plain text.
        set_(self, "full_header", len(std) == len(HEADER_FIELDS) and self.timestamp_fields == ("timestamp",)
             and bool(session_res) and self.input == "text" and not self.multiline)
        set_(self, "ts_cache", {})
        set_(self, "_frac_split", any(f.endswith(".%f") for f in self.timestamp_formats))

    # -- what a format can do -----------------------------------------------------------------
    @property
    def session_rule(self) -> str:
        """The session rule in force ("" when the format only parses)."""
        if self.session_res:
            return "session_keys"
        if self.session_field:
            return "session_field"
        if self.json is not None and self.json.session:
            return "json.session"
        if self.path_re is not None:
            return "session_from_path"
        if self.session_window_s:
            return "session_window_s"
        return ""

    def require_sessions(self) -> None:
        """Raise ConfigError when the format cannot group lines into sessions (train, detect, stream)."""
        if not self.session_rule:
            raise ConfigError(f"format {self.name!r} has no session rule: set one of session_keys, session_field, "
                              "session_from_path, session_window_s (or json.session)")

    def header_fields(self, m: re.Match[str]) -> tuple[str | None, str, str, str]:
        """(timestamp text, level, component, content) of a header match; absent groups -> None / ""."""
        if self.full_header:
            ts, level, component, content = m.group(*HEADER_FIELDS)
            return ts, level or "", component or "", content
        roles = self._roles
        tsf = self.timestamp_fields
        if not tsf:
            ts = None
        elif len(tsf) == 1:
            ts = m.group(tsf[0])
        else:
            parts = m.group(*tsf)
            ts = None if None in parts else " ".join(parts)
        level = m.group(roles["level"]) or "" if "level" in roles else ""
        component = m.group(roles["component"]) or "" if "component" in roles else ""
        return ts, level, component, m.group(roles["content"]) or ""

    def find_session_keys(self, content: str) -> tuple[str, ...]:
        """Session ids named in the content (rule order, then order of appearance), without duplicates."""
        found: list[str] = []
        for rx in self.session_res:
            found.extend(rx.findall(content))  # findall returns group 1 when the regex has one group
        if len(found) > 1:
            return tuple(dict.fromkeys(found))
        return tuple(found)

    def key_from_origin(self, origin: str) -> str | None:
        """The session id session_from_path finds in an origin (file path or record key), or None."""
        if self.path_re is None:
            return None
        m = self.path_re.search(origin)
        if m is None:
            return None
        return m.group(1) if self.path_re.groups else m.group(0)

    def window_key(self, origin: str, ts: float) -> str:
        """The session of a fixed time window: origin + the window's start (epoch seconds)."""
        w = self.session_window_s
        start = int(ts // w * w) if w >= 1 else ts // w * w
        return f"{origin or self.name}@{start}"

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
        for f in self.timestamp_formats or (TIME_ISO, TIME_EPOCH):
            if f in (TIME_EPOCH, TIME_EPOCH_MS, TIME_ISO):
                t = named_time(text, f)
                if t is not None:
                    return t
                continue
            if frac_split and f.endswith(".%f"):
                f = f[:-3]
            try:
                if "%z" in f or "%Z" in f:
                    return datetime.strptime(text, f).timestamp()
                return float(calendar.timegm(time.strptime(text, f)))
            except ValueError:
                continue
        return None


def named_time(value: str | float | int, kind: str) -> float | None:
    """Epoch seconds of an `epoch` / `epoch_ms` number or an ISO 8601 text; None when it is not one."""
    try:
        if kind == TIME_ISO:
            if not isinstance(value, str):
                return None
            d = datetime.fromisoformat(value.strip())
            if d.tzinfo is None:
                d = d.replace(tzinfo=timezone.utc)  # times without a zone are UTC, as strptime formats
            return d.timestamp()
        x = float(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if x != x or x in (float("inf"), float("-inf")):
        return None
    return x / 1000.0 if kind == TIME_EPOCH_MS else x


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
