"""`logad templates pending | accept | reject`: people's review of statements the vocab does not know.

    pending --model M [--logs PATH...]
        the decisions in force (template_decisions.jsonl beside the bundle: accepted, rejected,
        promoted by votes) and, with --logs, every pending statement of those logs: its key, lines,
        sessions, first and last seen, an example line, what it is read as (logad.pending)
    accept KEY [--as TEMPLATE_KEY] / reject KEY / forget KEY, with --by and --why
        -> one decision appended to the file; the scorer reads it again within scorer.reload_every_s
           and `logad detect` at start. accept: the statement counts as its reading (an alias: the
           known statement it resembles; a new one: left out; --as: that template); reject: it always
           alerts; forget: back to pending.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from logad.errors import LogadError

ART = Path("artifacts")


def _decisions_path(model: Path) -> Path:
    """The bundle's decisions file (drift.decisions_file, default template_decisions.jsonl in it)."""
    from logad.template_decisions import decisions_path
    from logad_cli.main import settings

    if not (model / "template_vocab.json").is_file():
        raise LogadError(f"--model {model}: not a model bundle (no template_vocab.json)")
    return decisions_path(model, settings().drift.decisions_file)


def pending(
    model: Annotated[Path, typer.Option(help="model bundle")] = ART / "models" / "hdfs",
    logs: Annotated[Optional[list[Path]], typer.Option("--logs", help="raw log files or folders to read")] = None,
    log_format: Annotated[Optional[str], typer.Option("--format", help="override the bundle's format")] = None,
) -> None:
    """Statements the model's vocab does not know: decisions in force and, with --logs, those seen there."""
    from logad.alerts import iso_time
    from logad.template_decisions import read_decisions

    path = _decisions_path(model)
    decided = read_decisions(path)
    con = Console()
    rows = pending_in_logs(model, logs, log_format) if logs else []
    seen = {r["key"] for r in rows}
    table = Table(title=f"pending statements ({path})")
    for col in ("key", "status", "lines", "sessions", "first seen", "example", "read as", "decided"):
        table.add_column(col)
    for r in rows:
        d = decided.get(r["key"])
        table.add_row(r["key"], d.action if d else "pending", f"{r['lines']:,}", f"{r['sessions']:,}",
                      "" if r["first_seen"] is None else iso_time(r["first_seen"]), r["text"] or "", r["counts_as"],
                      f"{d.by} {iso_time(d.at)}" if d else "")
    for k, d in decided.items():
        if k not in seen:
            table.add_row(k, d.action, "", "", "", "", d.target or "", f"{d.by} {iso_time(d.at)} {d.why}")
    if not table.rows:
        con.print("no pending statements" + ("" if logs else " decided (pass --logs to look through logs)"))
        return
    con.print(table)


def pending_in_logs(model: Path, paths: list[Path], log_format: str | None) -> list[dict]:
    """Every pending statement of the logs: key, lines, sessions, first/last seen, example, reading."""
    from logad.artifacts import bundle_format
    from logad.config import DriftConfig
    from logad.drift import DriftVocab
    from logad.format_files import load_format
    from logad.parse import ParseStats
    from logad.pending import PendingTemplates
    from logad.template_decisions import read_decisions
    from logad.readers import iter_file_records
    from logad.records import LogRecord
    from logad.templates import TemplateVocab

    vocab = TemplateVocab.load(model / "template_vocab.json")
    fmt = load_format(log_format) if log_format else bundle_format(model, vocab.format_name)
    dv = DriftVocab(vocab, DriftConfig(), pending=True)
    pend = PendingTemplates(vocab, decisions=read_decisions(_decisions_path(model)))  # for the readings shown
    rows: dict[int, dict] = {}
    for _, _, rec in iter_file_records(paths, fmt, ParseStats()):
        if not isinstance(rec, LogRecord):
            continue
        tid = dv.match(rec.content)
        if tid < dv.pending.base:
            continue
        r = rows.setdefault(tid, {"lines": 0, "sessions": set(), "first_seen": None, "last_seen": None})
        r["lines"] += 1
        r["sessions"].update(rec.session_keys[:1])
        t = rec.timestamp
        if t is not None:
            r["first_seen"] = t if r["first_seen"] is None else min(r["first_seen"], t)
            r["last_seen"] = t if r["last_seen"] is None else max(r["last_seen"], t)
    out = []
    for tid, r in sorted(rows.items(), key=lambda kv: -kv[1]["lines"]):
        key = dv.pending.key_of(tid)
        out.append({"key": key, "lines": r["lines"], "sessions": len(r["sessions"]), "first_seen": r["first_seen"],
                    "last_seen": r["last_seen"], "text": dv.examples.get(tid), "counts_as": pend.counts_as(key)})
    return out


def _decide(model: Path, key: str, action: str, target: str | None, by: str | None, why: str) -> None:
    from logad.pending import PendingIds
    from logad.template_decisions import Decision, append_decision
    from logad.templates import UNK, TemplateVocab

    path = _decisions_path(model)
    vocab = TemplateVocab.load(model / "template_vocab.json")
    PendingIds(vocab).id_of(key)  # a key this vocab cannot have is an error, not a silent no-op
    if target is not None and vocab.id_of(target) == UNK:
        raise LogadError(f"--as {target}: the model's vocab has no template with that key")
    d = Decision(key, action, target=target, by=by or getpass.getuser(), at=time.time(), why=why)
    append_decision(path, d)
    Console().print(f"{key}: {action}" + (f" as {target}" if target else "") + f" ({path})")


def accept(
    key: Annotated[str, typer.Argument(help="pending statement key (alias:... or new:..., see `templates pending`)")],
    model: Annotated[Path, typer.Option(help="model bundle")] = ART / "models" / "hdfs",
    as_: Annotated[Optional[str], typer.Option("--as", help="template key it counts as (default: its reading)")] = None,
    by: Annotated[Optional[str], typer.Option(help="who decides (default: the user)")] = None,
    why: Annotated[str, typer.Option(help="why, for whoever reads the decisions next")] = "",
) -> None:
    """Accept a pending statement: it stops alerting and counts as its reading (or --as a template)."""
    _decide(model, key, "accept", as_, by, why)


def _decision(action: str, doc: str):
    """A command that records `action` on a statement, with who and why (reject, forget)."""

    def command(
        key: Annotated[str, typer.Argument(help="pending statement key")],
        model: Annotated[Path, typer.Option(help="model bundle")] = ART / "models" / "hdfs",
        by: Annotated[Optional[str], typer.Option(help="who decides (default: the user)")] = None,
        why: Annotated[str, typer.Option(help="why")] = "",
    ) -> None:
        _decide(model, key, action, None, by, why)

    command.__name__, command.__doc__ = action, doc
    return command


reject = _decision("reject", "Reject a pending statement: every window holding it alerts, and votes never promote it.")
forget = _decision("forget", "Undo the decision on a statement (accepted, rejected or promoted): it is pending again.")


def register(templates_app: typer.Typer) -> None:
    for fn in (pending, accept, reject, forget):
        templates_app.command(fn.__name__)(fn)
