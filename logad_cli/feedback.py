"""`logad feedback ALERT_ID --normal | --anomaly | --undo`: people's verdicts on alerts.

    ALERT_ID --(--alerts FILE: JSONL of envelopes | --bootstrap SERVERS: a scan of the alerts topic)-->
      the alert envelope (its window's ids, n_context, vocab fingerprint, model version)
      -> a verdict record appended to the bundle's feedback file (logad.feedback), checked against
         the bundle's vocab (--model)
    --undo needs no alert: it revokes the verdict in force for that alert id.
The scorer picks the file up within scorer.reload_every_s; `logad detect` reads it at start.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer

from logad.errors import LogadError


def find_in_file(path: Path, alert_id: str) -> dict | None:
    """The envelope with id `alert_id` in a JSONL file of alert envelopes (the last one wins)."""
    if not path.is_file():
        raise LogadError(f"--alerts {path}: no such file")
    found = None
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise LogadError(f"--alerts {path} line {n}: not JSON ({e}): expected one alert envelope per line") from None
            if isinstance(doc, dict) and doc.get("id") == alert_id:
                found = doc
    return found


def find_on_topic(settings: Any, bootstrap: str, topic: str, alert_id: str) -> dict | None:
    """The envelope with id `alert_id` on the alerts topic (read from its beginning to its end, no
    consumer group)."""
    import asyncio

    from logad.config import cross_check
    from streams.alerts_cli import read_topic

    s = cross_check(dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka, bootstrap_servers=bootstrap)))

    async def scan() -> dict | None:
        found = None
        async for r in read_topic(s, topic):
            if r.value and alert_id.encode() in r.value:  # cheap filter before decoding
                try:
                    doc = orjson.loads(r.value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and doc.get("id") == alert_id:
                    found = doc
        return found

    return asyncio.run(scan())


def describe(v: Any) -> str:
    return f"{v.verdict} verdict on alert {v.alert_id} (session {v.session_id}, by {v.by} at {v.at})"


def feedback(
    alert_id: Annotated[str, typer.Argument(help="the alert's id (its envelope's `id`)")],
    normal: Annotated[bool, typer.Option("--normal", help="the window is normal: it joins what the detector "
                                                          "treats as normal, so the same window does not alert again")] = False,
    anomaly: Annotated[bool, typer.Option("--anomaly", help="a confirmed anomaly (kept for evaluation; it replaces "
                                                            "a normal verdict on the same window)")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="revoke the verdict in force for this alert")] = False,
    by: Annotated[Optional[str], typer.Option(help="who gives the verdict (default: $USER)")] = None,
    why: Annotated[str, typer.Option(help="why, in words (kept with the verdict)")] = "",
    model: Annotated[Optional[Path], typer.Option("--model", help="the bundle that scored the alert "
                                                                  "(default: scorer.model_dir)")] = None,
    alerts: Annotated[Optional[Path], typer.Option("--alerts", help="JSONL of alert envelopes (as `logad detect "
                                                                    "--out` or a subscriber writes them)")] = None,
    bootstrap: Annotated[Optional[str], typer.Option("--bootstrap", help="Kafka brokers host:port,...: find the "
                                                                         "alert on the alerts topic")] = None,
    topic: Annotated[Optional[str], typer.Option(help="alerts topic for --bootstrap (default: topics.alerts)")] = None,
) -> None:
    """Record a verdict on an alert: --normal (the window becomes normal for the detector, stream and
    `logad detect` alike), --anomaly (a confirmed anomaly) or --undo (revoke the verdict in force)."""
    from logad.alerts import vocab_tag
    from logad.feedback import (ANOMALY, NORMAL, append_record, feedback_path, read_feedback, undo_record,
                                verdict_from_alert)
    from logad_cli.main import settings as load_settings

    if normal + anomaly + undo != 1:
        raise LogadError("give exactly one of --normal, --anomaly, --undo")
    if not alert_id.strip():
        raise LogadError("ALERT_ID is empty")
    who = by or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    s = load_settings()
    model_dir = model or Path(s.scorer.model_dir)
    path = feedback_path(model_dir, s.scorer.feedback_file)
    current = read_feedback(path)
    if undo:
        v = current.verdict_of(alert_id)
        if v is None:
            raise LogadError(f"no verdict on alert {alert_id} is in force in {path}: nothing to undo")
        append_record(path, undo_record(alert_id, who, why))
        typer.echo(f"revoked the {describe(v)} -> {path}")
        return
    if (alerts is None) == (bootstrap is None):
        raise LogadError("say where the alert is: --alerts FILE or --bootstrap SERVERS")
    if alerts is not None:
        alert = find_in_file(alerts, alert_id)
        where = str(alerts)
    else:
        t = topic or s.topics.alerts
        alert = find_on_topic(s, bootstrap, t, alert_id)  # type: ignore[arg-type]
        where = f"topic {t} at {bootstrap}"
    if alert is None:
        raise LogadError(f"alert {alert_id} is not in {where}")
    from logad.config import SessionConfig
    from streams.session_processor import load_session_rules  # the bundle's vocab, checked, without the weights

    vocab = load_session_rules(model_dir, None, SessionConfig())[0]
    v = verdict_from_alert(alert, NORMAL if normal else ANOMALY, vocab, vocab_tag(vocab), who, why)
    before = current.latest(v.pattern)
    append_record(path, v.record())
    typer.echo(f"recorded the {describe(v)} -> {path}")
    if before is not None and before.verdict != v.verdict:
        typer.echo(f"this revokes the {describe(before)} for the same window")
    if v.verdict == NORMAL:
        typer.echo(f"the scorer applies it within scorer.reload_every_s ({s.scorer.reload_every_s:g} s); "
                   "`logad detect` applies it from its next run")
