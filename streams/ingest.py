"""Ingest: raw log records -> templated events, one bundle record per events partition per batch; bad input -> dead letter.

    raw records (bytes: one line or newline-separated lines), consumed in batches (streams/ingest_loop.py)
      -> split lines [-> multi-line formats: entries of the record (logad.readers.entries; an entry
         never spans records, its position is its first line's)]
      -> logad.parse.parse_fields(origin = the record key, else "topic/partition")
                                                 -> fields | Rejected          (Rejected -> dead letter)
      -> TemplateVocab.match(content) -> template id (UNK when nothing matches; UNK -> DriftMiner)
      -> per (raw partition, session id): [(tid, ts, pos), ...] in arrival order
      -> events topic: per raw partition, ONE bundle record per events partition per batch holding
         every session of that partition (streams/codec.py), partition = the sessions' key partition

      -> per raw topic: counts for the input guard (streams/guard.py); its problem rides on the bundles

These are exactly the steps of logad.detect_files, so the stream decides like `logad detect`:
`Ingestor._reference_lines` takes them for every format; `_fast_lines`, its fast path for all-ASCII
records of the built-in formats' shape, inlines parse_fields and is tested equal to it. The origin
is what session_from_path and session_window_s name sessions from: offline the file path, here the
record key (a shipper keys records by file or container). JSON input: each line of a record is one
JSON object (Vector, Fluent Bit, Filebeat ship one per record). `Ingestor.process` is pure (no
Kafka): the unit tests call it directly.

Why a batched aiokafka consumer inside a Faust service and not a Faust agent: measured on this
2-core box against the local broker, 16,252 one-line raw records: a Faust agent with
`stream.take(2000, within=0.2)` consumed 4.0k records/s, `AIOKafkaConsumer.getmany(max_records=2000)`
175k records/s. Faust's cost is per record, and the raw topic has one record per line. The events
topic has one bundle per events partition per batch, so the session agent stays a Faust agent and
its per-record cost is paid a few times per batch (one record per session per batch measured ~5.5k
records/s through the agent: ~10k lines/s at 1 line per record, see bench/README.md).
At-least-once: offsets are committed only after every events / dead-letter record of the batch is
acknowledged; a crash re-reads the batch, and the session agent drops the re-delivered events by
their raw positions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from logad.config import GuardConfig
from logad.formats import LogFormat
from logad.parse import ParseStats, parse_fields
from logad.readers import entries
from logad.records import Rejected
from logad.templates import UNK, DriftMiner, TemplateVocab
from streams.codec import LINE_BITS, MAX_LINES_PER_RECORD, encode_bundles, encode_dead_letter
from streams.guard import StreamGuard
from streams.kafka_clients import key_partition

log = logging.getLogger("logad.ingest")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What ingest needs of a consumed raw record (an aiokafka ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # Kafka timestamp (ms): when the line arrived (raw topics use LogAppendTime)


@dataclass
class IngestOutput:
    bundles: list[tuple[int, bytes]] = field(default_factory=list)  # (events partition, bundle record): produced
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (raw key, dead-letter record)
    lines: int = 0
    sessions: int = 0  # (raw partition, session) groups in the batch: table writes downstream
    lines_by_topic: Counter[str] = field(default_factory=Counter)  # raw topic -> lines
    source: str = ""
    groups: dict[str, dict[str, list[tuple]]] = field(default_factory=dict)  # raw partition -> session -> events
    arrival: dict[str, dict[str, float]] = field(default_factory=dict)  # raw partition -> session -> last arrival
    clocks: dict[str, float] = field(default_factory=dict)  # raw partition -> input clock after this batch
    health: dict[str, list[int]] = field(default_factory=dict)  # raw topic -> [lines, unparsed, records, unknown]


CLOCK_EVERY_S = 0.05  # an events partition with no sessions in a batch still gets the clock this often


class Ingestor:
    """Parse, template and coalesce raw records; pure and synchronous (one per worker, not thread-safe)."""

    def __init__(self, fmt: LogFormat, vocab: TemplateVocab, *, max_record_bytes: int, max_line_bytes: int,
                 drift: DriftMiner | None = None, partitions: int = 1, guard: GuardConfig | None = None) -> None:
        self.fmt = fmt
        self.vocab = vocab
        self.max_record_bytes = max_record_bytes
        self.max_line_bytes = max_line_bytes
        self.drift = drift
        self.partitions = partitions  # of the events topic
        self.stats = ParseStats()  # per line, as `logad detect` reports them
        self.counters: Counter[str] = Counter()  # records, events, unk, non_utf8, dead_<reason>
        self._rp: dict[tuple[str, int], str] = {}  # (topic, partition) -> "topic/partition", one str each
        self._clock_sent: dict[tuple[str, int], float] = {}  # (raw partition, events partition) -> wall time
        self._now = 0.0  # wall time of the batch being processed
        self.guard = StreamGuard(guard or GuardConfig(), fmt.name)  # input health per raw topic
        # The fast path's parts (see _fast_lines), for formats with one header regex, one session-key
        # rule and timestamps (the built-ins); None: every record takes the reference path.
        self._fast = ((fmt.header_re.match, fmt.session_res[0].findall, fmt.ts_cache)
                      if fmt.full_header and len(fmt.session_res) == 1 and fmt.timestamp_formats else None)

    def _dead(self, out: IngestOutput, r: RawRecord, reason: str, value: bytes | None, line: int | None = None,
              detail: str = "") -> None:
        self.counters[f"dead_{reason}"] += 1
        out.dead.append((r.key, encode_dead_letter(reason, r.topic, r.partition, r.offset, value, line, detail)))

    def rp_name(self, topic: str, partition: int) -> str:
        rp = self._rp.get((topic, partition))
        if rp is None:
            rp = self._rp[(topic, partition)] = f"{topic}/{partition}"
        return rp

    def process(self, records: Iterable[RawRecord], clocks: dict[str, float] | None = None,
                now: float | None = None) -> IngestOutput:
        """A batch of raw records -> one bundle per (raw partition, events partition) + dead letters.

        Each bundle carries the input clock of its raw partition: `clocks[rp]` when given (the
        caller read rp to its end: the wall time), else the latest arrival time in the batch.
        Events partitions without sessions get a clock-only bundle (at most every CLOCK_EVERY_S)."""
        now = time.time() if now is None else now
        out = IngestOutput(source=self.fmt.name)
        groups = out.groups  # raw partition -> session -> [(tid, ts, pos)]
        self._now = now
        for r in records:
            try:
                self._record(r, out, groups)
            except Exception as e:  # a bug or an input we did not foresee: never lose the record silently
                self._dead(out, r, "error", r.value, detail=f"{type(e).__name__}: {e}")
                n = self.counters["dead_error"]
                if n <= 5 or n % 1000 == 0:  # bounded logs when every record fails the same way
                    log.exception("ingest failed on %s/%d@%d (%d records so far)", r.topic, r.partition, r.offset, n)
        for topic, (lines, unparsed, ok, unk) in out.health.items():
            self.guard.add(topic, lines, unparsed, ok, unk, now)
        src, problem, n = self.fmt.name, self.problem_of, self.partitions
        for rp, clock in (clocks or {}).items():
            out.clocks[rp] = max(clock, out.clocks.get(rp, clock))
        for rp, sessions in groups.items():
            arrival = out.arrival[rp]
            by_part: dict[int, list[tuple[str, list, float]]] = {}
            # the partition Kafka's default partitioner gives each session id's UTF-8 bytes: the
            # session table is co-partitioned with the events topic (streams.kafka_clients)
            for sid, rows in sessions.items():
                p = key_partition(sid.encode(), n)
                lst = by_part.get(p)
                if lst is None:
                    by_part[p] = [(sid, rows, arrival[sid])]
                else:
                    lst.append((sid, rows, arrival[sid]))
            out.sessions += len(sessions)
            clock = out.clocks[rp]
            hold = problem(rp)
            for p, items in by_part.items():
                out.bundles += [(p, v) for v in encode_bundles(src, rp, items, clock=clock, hold=hold)]
                self._clock_sent[(rp, p)] = now
            out.bundles += self.clock_bundles({rp: clock}, now, skip=set(by_part))
        out.bundles += self.clock_bundles({rp: c for rp, c in out.clocks.items() if rp not in groups}, now)
        self.counters["events_records"] += len(out.bundles)
        return out

    def clock_bundles(self, clocks: dict[str, float], now: float, skip: set[int] | None = None
                      ) -> list[tuple[int, bytes]]:
        """Clock-only bundles for the events partitions not in `skip` whose clock is older than
        CLOCK_EVERY_S: the session agents close idle sessions on this clock, so it must advance
        in every partition that data arrives for, or not. (A silent input sends nothing: once every
        raw partition is ingested and committed to its end, the session agents close idle sessions
        at the wall time they checked that; streams/app.py `tick`.)"""
        out = []
        for rp, clock in clocks.items():
            for p in range(self.partitions):
                if (skip and p in skip) or now - self._clock_sent.get((rp, p), 0.0) < CLOCK_EVERY_S:
                    continue
                self._clock_sent[(rp, p)] = now
                out += [(p, v) for v in encode_bundles(self.fmt.name, rp, [], clock=clock, hold=self.problem_of(rp))]
        return out

    def problem_of(self, rp: str) -> str:
        """The input guard's problem with the raw topic of raw partition `rp` ("" = healthy)."""
        return self.guard.problem(rp.rpartition("/")[0])

    def _record(self, r: RawRecord, out: IngestOutput, groups: dict[str, dict[str, list[tuple]]]) -> None:
        self.counters["records"] += 1
        value = r.value
        if not value:
            self._dead(out, r, "empty", value)
            return
        if len(value) > self.max_record_bytes:
            self._dead(out, r, "too_large", value, detail=f"{len(value)} bytes > ingest.max_record_bytes "
                                                          f"{self.max_record_bytes}")
            return
        # An all-ASCII record of a fast-path format is split into str lines of ONE decode (_fast_lines);
        # any other into bytes lines (_reference_lines).
        fast = self._fast is not None and value.isascii()
        lines: list = value.decode("ascii").split("\n") if fast else value.split(b"\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # "a\nb\n": the final newline ends a line, it does not start one
        if len(lines) > MAX_LINES_PER_RECORD:
            self._dead(out, r, "too_many_lines", value, detail=f"{len(lines)} lines > {MAX_LINES_PER_RECORD}")
            return
        rp = self.rp_name(r.topic, r.partition)
        sessions = groups.get(rp)
        if sessions is None:
            sessions = groups[rp] = {}
            out.arrival[rp] = {}
        # Arrival time: the record's Kafka timestamp, never later than now (a producer's fast clock).
        t_arr = r.timestamp / 1000.0 if r.timestamp is not None and r.timestamp > 0 else self._now
        if t_arr > self._now:
            t_arr = self._now
        if t_arr > out.clocks.get(rp, 0.0):
            out.clocks[rp] = t_arr
        (self._fast_lines if fast else self._reference_lines)(r, lines, out, sessions, out.arrival[rp], t_arr)

    def _reference_lines(self, r: RawRecord, lines: list[bytes], out: IngestOutput,
                         sessions: dict[str, list[tuple]], seen: dict[str, float], t_arr: float) -> None:
        """The reference path, for every format: the steps of logad.detect_files on the record's
        lines. Entries (multi-line formats join continuation lines; an entry's position is its
        first line's) -> logad.parse.parse_fields with the record key as origin -> vocab match ->
        (tid, ts, pos) appended to each of its sessions."""
        fmt, limit, match, drift = self.fmt, self.max_line_bytes, self.vocab.match, self.drift
        known = len(self.vocab)  # ids from here on are pending statements (logad.pending): no template fits
        origin = r.key.decode("utf-8", "replace") if r.key else self.rp_name(r.topic, r.partition)
        base = r.offset << LINE_BITS
        ok = events = unk = truncated = non_utf8 = unparsed = 0
        if not r.value.isascii():  # type: ignore[union-attr]
            for line in lines:
                if not line.isascii():
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        non_utf8 += 1  # parsed anyway, with U+FFFD (as `logad detect` does)
        for entry, i, n in entries(lines, fmt, self.stats):
            f = parse_fields(entry, fmt, limit, origin)
            if type(f) is Rejected:
                self.stats.rejected[f.reason] += 1
                unparsed += n
                self._dead(out, r, f.reason, entry if isinstance(entry, bytes) else entry.encode("utf-8", "replace"),
                           line=i, detail=f.detail)
                continue
            ts, _level, _component, content, keys, trunc = f
            truncated += trunc
            ok += 1
            tid = match(content)
            if tid == UNK or tid >= known:
                unk += 1
                if drift is not None:
                    drift.observe(content)
            ev = (tid, ts, base | i)
            for key in keys:
                rows = sessions.get(key)
                if rows is None:
                    sessions[key] = [ev]
                else:
                    rows.append(ev)
                seen[key] = t_arr
            events += len(keys)
        self._tally(r.topic, out, len(lines), unparsed, ok, events, unk, truncated, non_utf8)

    def _fast_lines(self, r: RawRecord, lines: list[str], out: IngestOutput,
                    sessions: dict[str, list[tuple]], seen: dict[str, float], t_arr: float) -> None:
        """A fast path of _reference_lines (the reference), for all-ASCII records of a format with one
        header regex, one session-key rule and timestamps (single-line by construction: full_header):
        parse_fields inlined on the str lines, each step as parse_fields takes it, with locals only
        and counters added once per record. A line off that path (NULs, over-long, no header, no
        key, a timestamp not cached yet, blank) goes to parse_fields itself, which decides. Same
        events, dead letters, stats and counters as the reference (tests/streams/test_ingest_paths.py);
        ~20% more lines/s through Ingestor.process on the HDFS sample."""
        fmt, limit, match, drift = self.fmt, self.max_line_bytes, self.vocab.match, self.drift
        known = len(self.vocab)  # ids from here on are pending statements (logad.pending): no template fits
        header, findall, ts_cache = self._fast  # type: ignore[misc]
        base = r.offset << LINE_BITS
        ok = events = unk = truncated = 0
        for i, piece in enumerate(lines):
            text = piece.rstrip("\r")
            m = header(text) if len(piece) <= limit and "\x00" not in text else None
            if m is not None:
                ts_text, content = m.group("timestamp", "content")
                keys = findall(content)
                ts = ts_cache.get(ts_text) if ts_text is not None else None
                if ts is None or not keys:
                    m = None
                elif len(keys) > 1:
                    keys = dict.fromkeys(keys)
            if m is None:
                line = piece.encode("ascii")
                f = parse_fields(line, fmt, limit)
                if type(f) is Rejected:
                    self.stats.rejected[f.reason] += 1
                    self._dead(out, r, f.reason, line, line=i, detail=f.detail)
                    continue
                ts, _level, _component, content, keys, trunc = f
                truncated += trunc
            ok += 1
            tid = match(content)
            if tid == UNK or tid >= known:
                unk += 1
                if drift is not None:
                    drift.observe(content)
            ev = (tid, ts, base | i)
            for key in keys:
                rows = sessions.get(key)
                if rows is None:
                    sessions[key] = [ev]
                else:
                    rows.append(ev)
                seen[key] = t_arr
            events += len(keys)
        self._tally(r.topic, out, len(lines), len(lines) - ok, ok, events, unk, truncated, 0)

    def _tally(self, topic: str, out: IngestOutput, n: int, unparsed: int, ok: int, events: int, unk: int,
               truncated: int, non_utf8: int) -> None:
        """A record's counts, once per record: batch output, parse stats, counters, guard counts."""
        out.lines += n
        out.lines_by_topic[topic] += n
        h = out.health.get(topic)
        if h is None:
            out.health[topic] = [n, unparsed, ok, unk]
        else:
            h[0] += n
            h[1] += unparsed
            h[2] += ok
            h[3] += unk
        st = self.stats
        st.lines += n
        st.records += ok
        st.truncated += truncated
        c = self.counters
        c["events"] += events
        if unk:
            c["unk"] += unk
        if non_utf8:
            c["non_utf8"] += non_utf8
