"""`logad evaluate-stream`: score the stream's decisions against session labels, and against `logad detect`.

    scores topic  -> sessions scored (deduped by event id)
    alerts topic  -> alerts (deduped by alert id) -> alerted sessions
    labels CSV    -> session-level precision / recall / F1 (a labelled session never scored counts as
                     "not alerted", and is reported): session_id,label for any source (HDFS's
                     BlockId,Label too; `logad detect --sessions-out` CSVs name it is_anomaly)
    --offline FILE -> logad.detect_files.detect_file on the same file: alert-id sets compared (equal when
                     stream and offline decide identically, which is the design goal)
    raw topic     -> detection delay of every alerted anomalous session (`detection_delay`):
                     lines and seconds from its first anomalous event to its first alert
Early alerts (`"early": true`, scorer.early_alerts) count as alerts for P/R/F1 and the delay, and are
left out of the offline comparison (`logad detect` decides at close).
`wait_drained` is what the demo and the tests wait on: every raw record ingested, every events
record handled, no session open in the worker, every window scored.
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from logad.config import Settings
from logad.errors import BrokerError, ParseError
from logad.eval_metrics import prf
from streams.evaluate_traces import ALL_REASON, complete_report, read_full_traces


ID_COLUMNS = ("session_id", "sessionid", "session", "blockid", "block_id", "id")
LABEL_COLUMNS = ("label", "is_anomaly", "anomaly")
ANOMALY = frozenset({"anomaly", "abnormal", "anomalous", "1", "true", "yes"})
NORMAL = frozenset({"normal", "0", "false", "no", "-"})


def read_labels(path: str | Path) -> dict[str, int]:
    """Session labels CSV -> {session: 1 anomaly | 0 normal}. The header names the columns
    (session_id / BlockId / ..., label / is_anomaly); without known names: id first, label second.
    A label that is neither normal nor anomalous is an error naming the row."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read labels {p}: {getattr(e, 'strerror', None) or e}") from None
    if not rows or len(rows[0]) < 2:
        raise ParseError(f"{p}: expected a header like session_id,label")
    header = [h.strip().lower() for h in rows[0]]
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), 0)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), 1 if id_col != 1 else 0)
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) <= max(id_col, label_col) or not row[id_col]:
            continue
        value = row[label_col].strip().lower()
        if value not in ANOMALY and value not in NORMAL:
            raise ParseError(f"{p}:{n}: label {row[label_col]!r} is neither normal (Normal, 0) nor anomalous "
                             "(Anomaly, 1)")
        out[row[id_col]] = 1 if value in ANOMALY else 0
    return out


async def read_events(settings: Settings, topic: str, *, with_time: bool = False) -> list[dict]:
    """The envelopes on a topic (a scores bundle gives each of its envelopes, an alert record its
    one); `with_time`: each also gets "_kafka_ts" (its record's timestamp, s)."""
    from streams.alerts_cli import read_topic
    from streams.codec import CodecError, decode_envelopes

    out = []
    async for r in read_topic(settings, topic, from_beginning=True, follow=False):
        try:
            docs = decode_envelopes(r.value)
        except CodecError:
            continue
        for doc in docs:
            if with_time and isinstance(doc, dict):
                doc["_kafka_ts"] = r.timestamp / 1000.0
            out.append(doc)
    return out


# --------------------------------------------------------------------------- detection delay
DELAY_DEFINITION = (
    "per alerted anomalous session: its first anomalous event is the first event whose template never "
    "occurred in normal training sessions (UNK or unseen); for a session without one (anomalous by counts or "
    "order), the first scored event of its first alerting window. Lines = the session's events after that "
    "one, up to the last event of the first alerting window; seconds = the first alert's Kafka timestamp "
    "minus the Kafka arrival time of the raw record holding that event (includes the idle timeout that "
    "closes the window)")


async def session_events(settings: Settings, topic: str, model_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Session -> [(template id, arrival time of its raw record)] in stream order, from the raw
    topic, read as the worker's ingest reads it (streams.ingest.Ingestor: any format, record keys
    as origins, multi-line entries within a record)."""
    from streams.alerts_cli import read_topic
    from streams.ingest import Ingestor, RawRecord
    from streams.session_processor import load_session_rules

    vocab, fmt, _ = load_session_rules(model_dir, None, settings.sessions)
    ing = Ingestor(fmt, vocab, max_record_bytes=settings.ingest.max_record_bytes,
                   max_line_bytes=settings.ingest.max_line_bytes)
    out: dict[str, list[tuple[int, float]]] = {}
    async for r in read_topic(settings, topic, from_beginning=True, follow=False):
        t = r.timestamp / 1000.0
        res = ing.process([RawRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)], now=t)
        for sessions in res.groups.values():
            for sid, rows in sessions.items():
                out.setdefault(sid, []).extend((tid, t) for tid, _, _ in rows)
    return out


def detection_delay(alerts: dict[str, dict], truth: dict[str, int], events: dict[str, list[tuple[int, float]]],
                    unseen: set[int]) -> dict[str, Any]:
    """See DELAY_DEFINITION. `unseen`: template ids never seen in normal training (incl. UNK)."""
    first_alert: dict[str, dict] = {}
    for a in alerts.values():
        sid = a.get("subject")
        if truth.get(sid) != 1 or sid not in events:
            continue
        if sid not in first_alert or a.get("_kafka_ts", 0.0) < first_alert[sid].get("_kafka_ts", 0.0):
            first_alert[sid] = a
    rows = []
    for sid, a in first_alert.items():
        evs = events[sid]
        win = a["data"]["window"]
        first = next((i for i, (tid, _) in enumerate(evs) if tid in unseen), None)
        how = "unseen_template"
        if first is None or first >= win["end"]:
            first, how = win["start"] + win["n_context"], "window_start"
        first = min(first, len(evs) - 1)
        rows.append({"session": sid, "first_anomalous_event": first, "by": how, "alert_window_end": win["end"],
                     "lines": max(0, win["end"] - 1 - first),
                     "seconds": round(a.get("_kafka_ts", float("nan")) - evs[first][1], 3)})
    rows.sort(key=lambda r: r["session"])

    def stats(xs: list[float]) -> dict[str, float]:
        if not xs:
            return {}
        xs = sorted(xs)
        pick = lambda q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]  # noqa: E731
        return {"median": pick(0.5), "p90": pick(0.9), "max": xs[-1], "mean": round(sum(xs) / len(xs), 3)}

    return {"definition": DELAY_DEFINITION, "sessions": len(rows),
            "by_unseen_template": sum(r["by"] == "unseen_template" for r in rows),
            "lines": stats([r["lines"] for r in rows]), "seconds": stats([r["seconds"] for r in rows]),
            "examples": rows[:10]}


def dedupe(events: list[dict]) -> dict[str, dict]:
    return {e["id"]: e for e in events if isinstance(e, dict) and "id" in e}


def offline_alerts(file: str | Path, model_dir: str | Path, settings: Settings) -> dict[str, dict]:
    from logad.detect_files import detect_file

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "alerts.jsonl"
        detect_file(file, model_dir, None, out, settings.sessions, device="cpu")
        return dedupe([orjson.loads(line) for line in out.read_bytes().splitlines() if line.strip()])


def compare(stream: dict[str, dict], offline: dict[str, dict]) -> dict[str, Any]:
    s_ids, o_ids = set(stream), set(offline)
    s_sess = {e["subject"] for e in stream.values()}
    o_sess = {e["subject"] for e in offline.values()}
    union = s_ids | o_ids
    return {
        "alerts_equal": s_ids == o_ids, "alert_jaccard": len(s_ids & o_ids) / len(union) if union else 1.0,
        "only_stream": sorted(s_ids - o_ids)[:20], "only_offline": sorted(o_ids - s_ids)[:20],
        "offline_alerts": len(o_ids), "sessions_equal": s_sess == o_sess,
        "sessions_only_stream": sorted(s_sess - o_sess)[:20], "sessions_only_offline": sorted(o_sess - s_sess)[:20],
    }


def evaluate(settings: Settings, labels: str | Path, *, alerts_topic: str | None = None,
             scores_topic: str | None = None, offline: str | Path | None = None,
             model_dir: str | Path | None = None, raw_topic: str | None = None, delay: bool = True,
             complete_traces: str | Path | None = None) -> dict[str, Any]:
    """The report (see the module docstring). `complete_traces`: a sequence CSV of the sessions' full
    traces; the report then also has "complete": the figures over the sessions whose whole trace is
    in the sample (streams/evaluate_traces.py; reads the raw topic, needs the model)."""
    alerts_t = alerts_topic or settings.topics.alerts
    scores_t = scores_topic or settings.topics.scores
    alert_records = asyncio.run(read_events(settings, alerts_t, with_time=True))
    score_records = asyncio.run(read_events(settings, scores_t))
    alerts, scores = dedupe(alert_records), dedupe(score_records)
    truth = read_labels(labels)
    scored_sessions = {e["subject"] for e in scores.values()}
    alerted = {e["subject"] for e in alerts.values()}
    names = sorted(truth)
    metrics = prf([truth[n] for n in names], [int(n in alerted) for n in names])
    report: dict[str, Any] = {
        "alerts_topic": alerts_t, "scores_topic": scores_t,
        "alert_records": len(alert_records), "alerts": len(alerts), "alerted_sessions": len(alerted),
        "early_alerts": sum(bool(a.get("data", {}).get("early")) for a in alerts.values()),
        "score_records": len(score_records), "windows_scored": len(scores), "sessions_scored": len(scored_sessions),
        "labelled_sessions": len(truth), "labelled_not_scored": len(set(truth) - scored_sessions),
        "scored_not_labelled": len(scored_sessions - set(truth)),
        "models": sorted({e.get("data", {}).get("model_version", "?") for e in scores.values()}),
        **{k: metrics[k] for k in ("precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn")},
    }
    if offline is not None:
        if model_dir is None:
            raise BrokerError("--offline needs the model (--model)")
        # `logad detect` decides at close: early alerts (scorer.early_alerts) have no offline twin
        at_close = {k: a for k, a in alerts.items() if not a.get("data", {}).get("early")}
        report["offline"] = compare(at_close, offline_alerts(offline, model_dir, settings))
    report["all_reason"] = ALL_REASON
    if complete_traces is not None and model_dir is None:
        raise BrokerError("--complete-traces needs the model (--model): the sample's traces are read with its vocab")
    if (delay or complete_traces is not None) and model_dir is not None:
        from streams.session_processor import load_session_rules
        from streams.topics import raw_topic as raw_topic_of

        vocab, fmt, _ = load_session_rules(model_dir, None, settings.sessions)
        topic = raw_topic or raw_topic_of(settings, fmt.name)
        events = asyncio.run(session_events(settings, topic, model_dir))
        if delay:
            report["delay"] = delay_report(alerts, truth, model_dir, len(vocab), topic, events)
        if complete_traces is not None:
            sample = {sid: [vocab.key_of(tid) for tid, _ in evs] for sid, evs in events.items() if sid in truth}
            full = read_full_traces(complete_traces, {sid for sid, label in truth.items() if label})
            report["complete"] = {"traces": str(complete_traces), **complete_report(truth, alerted, sample, full)}
    return report


def delay_report(alerts: dict[str, dict], truth: dict[str, int], model_dir: str | Path, vocab_size: int,
                 topic: str, events: dict[str, list[tuple[int, float]]]) -> dict[str, Any]:
    from logad.detector import load_reference
    from logad.templates import TemplateVocab

    ref, _ = load_reference(model_dir, vocab_size)
    unseen = {i for i, seen in enumerate(ref.seen.tolist()) if not seen} | {TemplateVocab.UNK}
    return {"raw_topic": topic, **detection_delay(alerts, truth, events, unseen)}


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stream evaluation (sessions)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("sessions_scored", "windows_scored", "alerts", "alert_records", "alerted_sessions", "labelled_sessions",
              "labelled_not_scored", "tp", "fp", "fn", "tn"):
        table.add_row(k, str(report[k]))
    for k in ("precision", "recall", "f1", "fpr"):
        table.add_row(k, f"{report[k]:.4f}")
    console = Console()
    console.print(table)
    console.print(figures_text(report))
    off = report.get("offline")
    if off:
        verdict = "identical" if off["alerts_equal"] else f"DIFFERENT (jaccard {off['alert_jaccard']:.3f})"
        console.print(f"offline `logad detect`: {off['offline_alerts']} alerts; stream vs offline alert ids: {verdict}; "
                      f"alerted sessions {'identical' if off['sessions_equal'] else 'different'}")
        if not off["alerts_equal"]:
            console.print(f"  only in stream: {off['only_stream'][:5]}  only offline: {off['only_offline'][:5]}")
    d = report.get("delay")
    if d and d.get("sessions"):
        li, se = d["lines"], d["seconds"]
        console.print(f"detection delay over {d['sessions']} alerted anomalous sessions ({d['by_unseen_template']} "
                      f"by an unseen template): lines median {li['median']} (p90 {li['p90']}, max {li['max']}); "
                      f"seconds median {se['median']:.2f} (p90 {se['p90']:.2f}, max {se['max']:.2f})")
        console.print(f"  (definition: {d['definition']})", style="dim")
    elif d is not None:
        console.print("detection delay: no alerted anomalous session to measure")


FEW_ANOMALOUS = 10  # below this many anomalous sessions a recall figure says little (each one moves it 10%+)


def figures_text(report: dict[str, Any]) -> str:
    """The headline figures in plain lines: over all labelled sessions, and (with --complete-traces)
    over the sessions whose whole trace is in the sample, each with its count and why."""
    def fig(r: dict[str, Any], n: int, anomalous: int) -> str:
        return (f"{n} sessions ({anomalous} anomalous): precision {r['precision']:.3f}, recall {r['recall']:.3f} "
                f"({r['tp']}/{r['tp'] + r['fn']}), F1 {r['f1']:.3f}, false alarms {r['fp']}")
    lines = ["all labelled sessions (what the sample's cut allows): "
             + fig(report, report["labelled_sessions"], report["tp"] + report["fn"]),
             f"  {report.get('all_reason', ALL_REASON)}"]
    c = report.get("complete")
    if c:
        lines += ["sessions whose whole trace is in the sample (measures the detector): "
                  + fig(c, c["sessions"], c["anomalous"]),
                  f"  {c['reason']} ({c['left_out_cut']} anomalous sessions left out as cut by the sample"
                  + (f", {c['left_out_no_trace']} with no full trace in {Path(c['traces']).name}"
                     if c.get("left_out_no_trace") else "") + ")"]
        if c["anomalous"] < FEW_ANOMALOUS:
            lines.append(f"  only {c['anomalous']} anomalous session(s) whole in this sample: too few to judge recall "
                         "by; the detector's figures on whole traces are the bundle's test figures (`logad report`)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- draining
async def group_lag(settings: Settings, group: str, topic: str) -> tuple[int, int]:
    """(end offsets summed, lag of `group` on `topic`); lag counts uncommitted partitions fully."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka_clients import admin_kwargs, consumer_kwargs

    from streams.alerts_cli import topic_partitions

    parts = await topic_partitions(settings, topic)
    if not parts:
        return 0, 0
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings.kafka, group_id=None))
    admin = AIOKafkaAdminClient(**admin_kwargs(settings.kafka))
    await consumer.start()
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        lag = 0
        for tp in tps:
            om = committed.get(tp)
            done = om.offset if om is not None and om.offset >= 0 else 0
            lag += max(0, end[tp] - done)
        return sum(end.values()), lag
    finally:
        await consumer.stop()
        await admin.close()


async def drained(settings: Settings, *, app_id: str, scorer_group: str, raw_topic: str) -> dict[str, Any]:
    """One look at every stage; "done" when nothing is left anywhere."""
    from streams.prometheus import scrape

    raw_end, raw_lag = await group_lag(settings, f"{app_id}-ingest", raw_topic)
    ev_end, ev_lag = await group_lag(settings, app_id, settings.topics.events)
    win_end, win_lag = await group_lag(settings, scorer_group, settings.topics.windows)
    m = scrape(f"http://{settings.web.host}:{settings.web.port}/metrics")
    open_sessions = m.get("logad_open_sessions")
    state = {"raw": raw_end, "raw_lag": raw_lag, "events": ev_end, "events_lag": ev_lag, "windows": win_end,
             "windows_lag": win_lag, "open_sessions": open_sessions, "caught_up": m.get("logad_caught_up")}
    state["done"] = (raw_end > 0 and raw_lag == 0 and ev_lag == 0 and win_lag == 0 and win_end > 0
                     and open_sessions == 0 and state["caught_up"] == 1)
    return state


def default_raw_topic(settings: Settings) -> str:
    """The raw topic of the configured bundle's source (scorer.model_dir)."""
    from streams.session_processor import model_format
    from streams.topics import raw_topic

    return raw_topic(settings, model_format(settings.scorer.model_dir).name)


async def wait_drained(settings: Settings, *, app_id: str, scorer_group: str, timeout_s: float,
                       raw_topic: str | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """Until every stage is drained twice in a row (or BrokerError after timeout_s); `raw_topic`
    defaults to the configured bundle's."""
    raw = raw_topic or default_raw_topic(settings)
    deadline = time.monotonic() + timeout_s
    streak, state = 0, {}
    while time.monotonic() < deadline:
        try:
            state = await drained(settings, app_id=app_id, scorer_group=scorer_group, raw_topic=raw)
        except KafkaError as e:  # a fresh broker may not have a group coordinator yet
            state = {"done": False, "error": str(e)}
        streak = streak + 1 if state["done"] else 0
        if streak >= 2:
            return state
        await asyncio.sleep(poll_s)
    raise BrokerError(f"pipeline not drained after {timeout_s:g} s: {state}")
