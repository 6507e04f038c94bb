"""The `logad` command line. Thin: every command parses options and calls training/, streams/ or logad/.

Any LogadError becomes one line `error: <message>` on stderr and exit code 2 (no traceback).
Stream commands import streams/ lazily so offline commands never load faust/aiokafka.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from logad.errors import LogadError
from logad_cli.feedback import feedback as feedback_cmd
from logad_cli.templates_review import register as register_review

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="logad: streaming log anomaly detection (Drain3 templates + next-template transformer).")
templates_app = typer.Typer(no_args_is_help=True, help="Template vocab tools.")
app.add_typer(templates_app, name="templates")
register_review(templates_app)  # templates pending | accept | reject | forget (logad_cli/templates_review.py)
console = Console(stderr=True)

ART = Path("artifacts")
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file (also $LOGAD_CONFIG).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: section.field=value (repeatable).")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]


_GLOBAL: dict = {"config": None, "set": []}


def _version(value: bool) -> None:
    if value:
        from logad import __version__

        typer.echo(f"logad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(config: ConfigOpt = None, set_: SetOpt = None,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Global options: settings file and overrides apply to every command that uses settings."""
    _GLOBAL["config"], _GLOBAL["set"] = config, list(set_ or [])
    if config is not None or set_:
        settings()  # validate early: a bad file or key fails before any work starts


def settings(config: Path | None = None, overrides: list[str] | None = None):
    """Settings with precedence CLI (--set) > env (LOGAD_*) > TOML (--config / $LOGAD_CONFIG) > defaults."""
    from logad.config import load_settings, parse_overrides

    return load_settings(config or _GLOBAL["config"], cli=parse_overrides((overrides or []) + _GLOBAL["set"]))


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------------------- offline
@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="hdfs | openstack | all | raw")] = "all",
    out_root: Annotated[Path, typer.Option(help="Datasets are written to <out-root>/{hdfs_pretrain,openstack_finetune}.")] = ART,
    raw: Annotated[Optional[list[Path]], typer.Option(help="raw log files or folders (dataset=raw; repeatable)")] = None,
    log_format: Annotated[Optional[Path], typer.Option("--format", help="format file of --raw")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="session_id,label CSV for --raw")] = None,
    split: Annotated[str, typer.Option(help="dataset=raw: auto | time | hash")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="output folder (dataset=raw)")] = None,
) -> None:
    """Build train/val/test parquet splits and the template vocab (the shipped datasets, or raw logs
    with a format file; `logad train` does this and trains in one go)."""
    from training import datasets

    jobs = []
    if dataset in ("hdfs", "all"):
        jobs.append(("hdfs", lambda: datasets.prepare_hdfs(out_root / "hdfs_pretrain")))
    if dataset in ("openstack", "all"):
        jobs.append(("openstack", lambda: datasets.prepare_openstack(out_root / "openstack_finetune")))
    if dataset == "raw":
        if not raw or out is None or log_format is None:
            raise LogadError("prepare raw needs --raw PATH, --format FILE and --out FOLDER")
        if split not in ("auto", "time", "hash"):
            raise LogadError(f"--split must be auto, time or hash, got {split!r}")
        from logad.format_files import load_format
        from training.train import prepare_from_logs

        s = settings()
        fmt = load_format(log_format)
        jobs.append((fmt.name, lambda: prepare_from_logs(fmt, list(raw), out, labels, split_by=split,
                                                        gap_s=s.sessions.gap_s, guard=s.guard)[1]))
    if not jobs:
        raise LogadError(f"unknown dataset {dataset!r} (hdfs | openstack | all | raw)")
    for name, job in jobs:
        info = job()
        table = Table(title=f"{name}: {info['split_rule']}")
        for col in ("split", "sessions", "normal", "anomaly", "events", "unseen template rate"):
            table.add_column(col)
        for split_name, c in info["counts"].items():
            table.add_row(split_name, str(c["sessions"]), str(c["normal"]), str(c["anomaly"]), str(c["events"]),
                          f"{c['unseen_template_rate']:.4f}")
        Console().print(table)
        for k in ("lines", "rejected"):
            if k in info:
                Console().print(f"{k}: {info[k]}")
        Console().print(f"templates: {info['n_templates']}")


@app.command()
def train(
    log_format: Annotated[Path, typer.Option("--format", help="the log format file (TOML) describing the logs")],
    logs: Annotated[list[Path], typer.Option("--logs", help="log files or folders (gzip ok); repeatable")],
    out: Annotated[Path, typer.Option(help="model bundle folder to write")],
    labels: Annotated[Optional[Path], typer.Option(help="CSV session_id,label (Normal|Anomaly): anomalous sessions never train; enables P/R/F1")] = None,
    init: Annotated[Optional[Path], typer.Option(help="fine-tune from this bundle (e.g. artifacts/models/hdfs) instead of training from scratch")] = None,
    epochs: Annotated[float, typer.Option(help="passes over the training windows")] = 20.0,
    max_samples: Annotated[int, typer.Option(help="cap on training windows (bounds CPU time)")] = 60_000,
    percentile: Annotated[float, typer.Option(help="calibration: flag at most (100-p)% of normal validation sessions")] = 99.5,
    instability: Annotated[float, typer.Option(help="calibration: tolerate this rate of dropped/duplicated/swapped lines")] = 0.02,
    split: Annotated[str, typer.Option(help="auto (by time when every session has one) | time | hash (of the session id)")] = "auto",
    seed: Annotated[int, typer.Option()] = 1337,
    keep_work: Annotated[bool, typer.Option(help="keep <out>/.work (checkpoints)")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    device: DeviceOpt = "auto",
) -> None:
    """Raw logs -> a calibrated model bundle: parse, mine templates, sessions and splits, train, calibrate, report."""
    from training.train import TrainOptions, train_bundle

    s = settings()
    opts = TrainOptions(epochs=epochs, max_samples=max_samples, percentile=percentile, instability=instability,
                        seed=seed, device=device, keep_work=keep_work, split_by=split)
    report = train_bundle(log_format, logs, out, labels, init, opts, s.sessions, s.guard, progress=progress)
    m = report["test"]["model"]
    table = Table(title=f"{report['format']}: test split ({report['test']['sessions']} sessions, "
                        f"{report['test']['anomaly']} anomalous)")
    for col in ("detector", "precision", "recall", "F1"):
        table.add_column(col)
    table.add_row("logad", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}")
    for k, b in report["test"].get("baselines", {}).items():
        table.add_row(k, f"{b['precision']:.3f}", f"{b['recall']:.3f}", f"{b['f1']:.3f}")
    Console().print(table)
    Console().print(report["test"]["statement"])
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    Console().print(f"bundle: {out} (report: {out / 'report.md'}); {report['seconds']['total_s']:.0f} s")


@app.command("eval-parser")
def eval_parser(
    dataset: Annotated[str, typer.Option(help="built-in sample: hdfs | openstack")] = "hdfs",
    out_dir: Annotated[Path, typer.Option()] = ART / "metrics" / "parsing",
    log_format: Annotated[Optional[str], typer.Option("--format", help="format file or built-in name")] = None,
    log: Annotated[Optional[Path], typer.Option(help="raw log to mine (with --format)")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="Loghub structured CSV with EventTemplate (with --format)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="JSON result file (with --format)")] = None,
    loghub_table: Annotated[bool, typer.Option("--loghub-table", help="the 8-system table of data/loghub_2k")] = False,
) -> None:
    """Parsing accuracy (GA, FGA, PA vs Loghub-2.0 truth) of our template mining, beside plain Drain3.

    --format F --log L --truth T [--out J]: any log; --loghub-table: the eight Loghub 2k samples with
    formats/loghub (writes loghub_2k.json and .md to --out-dir); else --dataset's built-in sample.
    """
    from training import parser_eval as pe

    if loghub_table:
        if log_format or log or truth:
            raise LogadError("--loghub-table takes no --format/--log/--truth")
        table = pe.write_loghub_table(out_dir)
        sys.stdout.write(pe.table_markdown(table))
        return
    if log_format or log or truth:
        if not (log_format and log and truth):
            raise LogadError("--format, --log and --truth go together")
        result = pe.evaluate(log_format, log, truth)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        _print_json(result)
        return
    _print_json(pe.main(dataset, out_dir))


@templates_app.command("match")
def templates_match(
    file: Annotated[Path, typer.Argument(help="raw log file (gzip ok)")],
    vocab: Annotated[Path, typer.Option(help="template_vocab.json")],
    log_format: Annotated[Optional[str], typer.Option("--format", help="defaults to the vocab's format")] = None,
) -> None:
    """Print each line's session key(s) and template key (or UNK), tab-separated."""
    from logad.format_files import load_format
    from logad.templates import TemplateVocab, match_lines
    from logad.parse import open_lines

    from logad.artifacts import bundle_format

    v = TemplateVocab.load(vocab)
    # a bundle's vocab reads lines with the bundle's format file; a loose vocab names a built-in one
    fmt = load_format(log_format) if log_format else bundle_format(vocab.parent, v.format_name)
    out = sys.stdout
    for keys, key in match_lines(v, fmt, open_lines(file)):
        out.write(f"{','.join(keys)}\t{key}\n")


@templates_app.command("drift")
def templates_drift(
    paths: Annotated[list[Path], typer.Argument(help="raw log files or folders (gzip ok)")],
    model: Annotated[Path, typer.Option(help="model bundle")] = ART / "models" / "hdfs",
    log_format: Annotated[Optional[str], typer.Option("--format", help="override the bundle's format")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the report as JSON")] = None,
) -> None:
    """Which log statements changed (reworded) or appeared (new) against the bundle, since when, how often."""
    from logad.alerts import iso_time
    from logad.drift import drift_report

    rep = drift_report(paths, model, settings().drift, log_format)
    if out:
        out.write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
    Console().print(f"{rep['lines']:,} lines, {rep['parsed']:,} parsed: {rep['exact']:,} known statements, "
                    f"{rep['reworded_lines']:,} reworded, {rep['new_lines']:,} new")
    for kind, title in (("reworded", "reworded statements (counted as the known one)"),
                        ("new", "new statements (unseen: they count as anomalous)")):
        if not rep[kind]:
            continue
        table = Table(title=title)
        for col in ("lines", "sessions", "first seen", "statement") + (("counted as",) if kind == "reworded" else ()):
            table.add_column(col)
        for r in rep[kind]:
            first = "" if r["first_seen"] is None else iso_time(r["first_seen"])
            row = [f"{r['lines']:,}", f"{r['sessions']:,}", first, r.get("seen_as", r["template"])]
            if kind == "reworded":
                row.append(f"{r['template_key']}: {r['template']}")
            table.add_row(*row)
        Console().print(table)


def _train_cfg(**kw):
    from training.loop import TrainConfig

    return TrainConfig(**{k: v for k, v in kw.items() if v is not None})


@app.command()
def pretrain(
    data: Annotated[Path, typer.Option(help="prepared dataset folder")] = ART / "hdfs_pretrain",
    out: Annotated[Path, typer.Option(help="shipped model folder (copy of best)")] = ART / "models" / "hdfs",
    work: Annotated[Path, typer.Option(help="run folder: checkpoints, best, last")] = ART / "checkpoints" / "hdfs",
    max_samples: Annotated[int, typer.Option()] = 1_000_000,
    checkpoint_every: Annotated[int, typer.Option(help="samples between checkpoints")] = 1_000_000,
    eval_every: Annotated[int, typer.Option()] = 50_000,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    warmup_samples: Annotated[int, typer.Option()] = 20_000,
    early_stop_patience: Annotated[int, typer.Option(help="0 = off")] = 0,
    n_layer: Annotated[int, typer.Option()] = 2,
    n_head: Annotated[int, typer.Option()] = 4,
    n_embd: Annotated[int, typer.Option()] = 128,
    dropout: Annotated[float, typer.Option()] = 0.1,
    window: Annotated[int, typer.Option(help="window length L (= model context)")] = 64,
    stride: Annotated[int, typer.Option(help="window stride S")] = 32,
    seed: Annotated[int, typer.Option()] = 1337,
    resume: Annotated[Optional[Path], typer.Option(help="checkpoint folder to resume from")] = None,
    augment: Annotated[float, typer.Option(help="train on windows perturbed at this drop/dup/swap rate")] = 0.0,
    metrics_dir: Annotated[Optional[Path], typer.Option(help="diagnostics folder (default artifacts/metrics/hdfs)")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Pretrain the next-template transformer (HDFS by default)."""
    from logad.windows import WindowRule
    from training.pretrain import pretrain as run

    cfg = _train_cfg(max_samples=max_samples, checkpoint_every=checkpoint_every, eval_every=eval_every,
                     batch_size=batch_size, lr=lr, warmup_samples=warmup_samples,
                     early_stop_patience=early_stop_patience, seed=seed, device=device, augment=augment)
    report = run(data, out, work, {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "dropout": dropout},
                 cfg, WindowRule(window, stride), resume=resume, metrics_dir=metrics_dir)
    _print_json({"test_topk": report["test"]["topk_accuracy"], "val_topk": report["val"]["topk_accuracy"],
                 "coverage": report["coverage"], "samples": report.get("samples")})


@app.command()
def finetune(
    data: Annotated[Path, typer.Option()] = ART / "openstack_finetune",
    init: Annotated[Optional[Path], typer.Option(help="pretrained checkpoint; default: the one at --init-epochs")] = None,
    pretrain_work: Annotated[Path, typer.Option(help="pretraining run folder to pick the checkpoint from")] = ART / "checkpoints" / "hdfs",
    init_epochs: Annotated[float, typer.Option(help="take the HDFS checkpoint after this many epochs' worth of samples")] = 2.0,
    out: Annotated[Path, typer.Option()] = ART / "models" / "openstack",
    work: Annotated[Path, typer.Option()] = ART / "checkpoints" / "openstack",
    max_samples: Annotated[int, typer.Option()] = 500_000,
    checkpoint_every: Annotated[int, typer.Option()] = 250_000,
    eval_every: Annotated[int, typer.Option()] = 25_000,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option()] = 3e-4,
    warmup_samples: Annotated[int, typer.Option()] = 10_000,
    early_stop_patience: Annotated[int, typer.Option()] = 2,
    seed: Annotated[int, typer.Option()] = 1337,
    compare_scratch: Annotated[bool, typer.Option(help="also train from scratch, same budget, and report")] = True,
    augment: Annotated[float, typer.Option(help="train on windows perturbed at this drop/dup/swap rate")] = 0.0,
    metrics_dir: Annotated[Optional[Path], typer.Option(help="diagnostics folder (default artifacts/metrics/openstack)")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Fine-tune the pretrained model on OpenStack (embedding/output resized to the new vocab)."""
    from training.pretrain import checkpoint_for_epochs, finetune as run

    cfg = _train_cfg(max_samples=max_samples, checkpoint_every=checkpoint_every, eval_every=eval_every,
                     batch_size=batch_size, lr=lr, warmup_samples=warmup_samples, betas=(0.9, 0.98),
                     early_stop_patience=early_stop_patience, seed=seed, device=device, augment=augment)
    init_path = init or checkpoint_for_epochs(pretrain_work, init_epochs)
    results = run(data, init_path, out, work, cfg, compare_scratch=compare_scratch, metrics_dir=metrics_dir)
    from logad.artifacts import write_json

    write_json(Path(metrics_dir or ART / "metrics" / "openstack") / "transfer.json", results)
    _print_json(results)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Option(help="model folder")] = ART / "models" / "hdfs",
    data: Annotated[Optional[Path], typer.Option(help="dataset the model was trained on")] = None,
    percentile: Annotated[float, typer.Option()] = 99.5,
    methods: Annotated[str, typer.Option(help="comma-separated score methods with a threshold "
                                         "(default topk_miss,count_l1,count_excess; count_tail for count_l1 "
                                         "when --instability > 0)")] = "",
    unseen_rate_max: Annotated[float, typer.Option(help="hard rule: unseen-template rate above this is anomalous")] = 0.05,
    topk: Annotated[int, typer.Option(help="DeepLog top-k for topk_miss")] = 9,
    instability: Annotated[float, typer.Option(help="log instability R to tolerate: count_tail expects drops/"
                                               "duplicates at this rate; thresholds fitted on validation "
                                               "sessions perturbed at R as well as clean ones")] = 0.0,
    device: DeviceOpt = "auto",
) -> None:
    """Fit thresholds on normal validation windows; writes thresholds.json into the model folder."""
    from training.calibrate import calibrate as run

    data = data or _default_data(model)
    th = run(model, data, percentile, [m.strip() for m in methods.split(",") if m.strip()] or None, unseen_rate_max,
             topk, device, instability=instability)
    table = Table(title=f"validation sessions by threshold percentile (chosen: {percentile})")
    for col in ("percentile", "FPR", "precision", "recall", "F1", "F1 @2.93%"):
        table.add_column(col)
    for r in th["extra"]["percentile_table"]:
        table.add_row(f"{r['percentile']}", f"{r['fpr']:.4f}", f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                      f"{r['f1']:.4f}", f"{r['f1_at_prevalence']:.4f}")
    Console().print(table)
    _print_json(th["values"])


def _default_data(model: Path) -> Path:
    """The dataset a bundle was trained on: <bundle>/data for bundles made by `logad train`, else the
    shipped models' prepared datasets."""
    if (model / "data" / "test.parquet").is_file():
        return model / "data"
    name = model.name
    return ART / ("openstack_finetune" if name == "openstack" else "hdfs_pretrain")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option()] = ART / "models" / "hdfs",
    data: Annotated[Optional[Path], typer.Option(help="prepared dataset folder (test split)")] = None,
    sequences: Annotated[Optional[Path], typer.Option(help="evaluate a sequence file instead")] = None,
    label: Annotated[Optional[str], typer.Option(help="label of a plain sequence file: Normal | Anomaly")] = None,
    partial: Annotated[bool, typer.Option("--partial", help="with --sequences: sequences may be cut short")] = False,
    instability: Annotated[float, typer.Option(help="perturbation rate R (drop/duplicate/swap)")] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    name: Annotated[Optional[str], typer.Option(help="metrics folder name (default: model folder name)")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """P/R/F1, PR-AUC, baselines, plots and recommendations."""
    from training.evaluate import evaluate as run, evaluate_file

    if sequences is not None:
        _print_json(evaluate_file(model, sequences, label, device, partial=partial))
        return
    r = run(model, data or _default_data(model), name or model.name, instability=instability, seed=seed, device=device)
    table = Table(title=f"{r['dataset']} test (R={instability}): model vs baselines")
    for col in ("detector", "precision", "recall", "F1", "PR-AUC", "FPR", "F1 @2.93%"):
        table.add_column(col)
    for n, m in [("model", r["model"])] + list(r["baselines"].items()):
        table.add_row(n, *(f"{m[k]:.4f}" for k in ("precision", "recall", "f1", "pr_auc", "fpr", "f1_at_hdfs_prevalence")))
    Console().print(table)
    Console().print(r["statement"])
    for rec in r["recommendations"]:
        Console().print(f"- {rec}")


@app.command()
def robustness(
    model: Annotated[Path, typer.Option()] = ART / "models" / "hdfs",
    data: Annotated[Optional[Path], typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 0,
    name: Annotated[Optional[str], typer.Option()] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Instability benchmark: model and baselines for R in {0, .01, .02, .05, .1} (table, JSON, plot)."""
    from training.robustness import robustness as run

    r = run(model, data or _default_data(model), name or model.name, seed=seed, device=device)
    table = Table(title=f"{r['dataset']}: F1 under log instability (seed {seed})")
    for col in ("R", "detector", "precision", "recall", "F1", "FPR", "F1 @2.93%"):
        table.add_column(col)
    for row in r["rows"]:
        table.add_row(f"{row['R']}", row["detector"], *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1", "fpr", "f1_at_hdfs_prevalence")))
    Console().print(table)


@app.command("report")
def report_cmd(
    metrics_dir: Annotated[Path, typer.Option(help="where robustness / early / learning-curve / eval-parser wrote")] = ART / "metrics",
) -> None:
    """The shipped models' measured figures on one page, each with the command that measures it."""
    from training.summary import summary

    table = Table(title="logad: measured figures (from the reports under " + str(metrics_dir) + ")")
    for col in ("what", "measured", "command"):
        table.add_column(col)
    for f in summary(metrics_dir):
        table.add_row(f.what, f.value, f.command)
    Console().print(table)


@app.command()
def early(
    model: Annotated[Path, typer.Option()] = ART / "models" / "hdfs",
    data: Annotated[Optional[Path], typer.Option()] = None,
    name: Annotated[Optional[str], typer.Option()] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Early detection on the test split: share of a session seen at the first alert; incremental FAR."""
    from logad.artifacts import write_json
    from logad.detector import Detector
    from training.data import load_split
    from training.early import early_report

    det = Detector.load(model, device, cache_size=1 << 16)  # prefixes repeat across sessions
    data = data or _default_data(model)
    rep = early_report(det, load_split(data, "test"), normal_train=load_split(data, "train"))
    out = ART / "metrics" / (name or model.name)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "early_detection.json", rep)
    _print_json(rep)


@app.command("learning-curve")
def learning_curve(
    fractions: Annotated[str, typer.Option(help="comma-separated fractions of the normal training sessions, each in (0, 1]")] = "0.01,0.1,1",
    budget_samples: Annotated[int, typer.Option(help="training windows per run, the same for every run")] = 18_000,
    seed: Annotated[int, typer.Option(help="subset draw, data order and init")] = 1337,
    eval_seed: Annotated[int, typer.Option(help="first perturbation seed of the test split")] = 0,
    eval_seeds: Annotated[int, typer.Option(help="perturbed evaluations (seeds eval-seed, eval-seed+1, ...), averaged")] = 3,
    replicates: Annotated[int, typer.Option(help="the curve again with seed+1, ...; a difference counts only if all agree")] = 2,
    instability: Annotated[float, typer.Option(help="R of the perturbed evaluation")] = 0.02,
    calibrate_like: Annotated[Path, typer.Option(help="calibrate every run with this calibrated model's settings (percentile, instability, methods)")] = ART / "models" / "openstack",
    out: Annotated[Path, typer.Option(help="learning_curve.{json,md,png} go here")] = ART / "metrics" / "openstack",
    data: Annotated[Path, typer.Option(help="prepared OpenStack dataset")] = ART / "openstack_finetune",
    init: Annotated[Path, typer.Option(help="pretrained (HDFS) model bundle")] = ART / "models" / "hdfs",
    work: Annotated[Path, typer.Option(help="run folders (subsets, checkpoints, models)")] = ART / "checkpoints" / "learning_curve",
    device: DeviceOpt = "auto",
) -> None:
    """Fine-tune from HDFS vs train from scratch on 1/10/100% of the OpenStack normal training sessions."""
    from training.learning_curve import CurveConfig, calibration_like, learning_curve as run

    try:
        fracs = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError:
        raise LogadError(f"--fractions must be comma-separated numbers, got {fractions!r}") from None
    cfg = CurveConfig(fractions=fracs, budget_samples=budget_samples, seed=seed, eval_seed=eval_seed,
                      eval_seeds=eval_seeds, replicates=replicates,
                      instability=instability, calibration=calibration_like(calibrate_like), device=device)
    report = run(data, init, out, work, cfg)
    table = Table(title=f"OpenStack learning curve ({budget_samples:,} samples per run)")
    for col in ("fraction", "sessions", "init", "best val loss", "F1 clean", f"F1 R={instability:g}"):
        table.add_column(col)
    for r in report["rows"]:
        table.add_row(f"{r['fraction']:.0%}", f"{r['train_sessions']}", r["init"], f"{r['best_val_loss']:.4f}",
                      f"{r['clean']['f1']:.3f}", f"{r['perturbed']['f1']:.3f}")
    Console().print(table)
    Console().print(report["verdict"])


@app.command()
def score(
    model: Annotated[Path, typer.Option()],
    sequences: Annotated[Path, typer.Option(help="sequence CSV (gzip ok) or plain sequence file")],
    out: Annotated[Path, typer.Option(help="output CSV")],
    label: Annotated[Optional[str], typer.Option(help="label for a plain file: Normal | Anomaly")] = None,
    partial: Annotated[bool, typer.Option("--partial", help="sequences may be cut short (e.g. taken from the head of a log)")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Per-session scores of a labelled sequence file: session_id,label,score,is_anomaly,<methods>."""
    from training.evaluate import score_file

    res = score_file(model, sequences, label, out, device, partial=partial)
    typer.echo(f"scored {len(res)} sessions, {sum(r.is_anomaly for r in res)} anomalous -> {out}")


@app.command()
def detect(
    paths: Annotated[list[Path], typer.Argument(help="raw log files or folders (gzip ok)")],
    model: Annotated[Path, typer.Option(help="model bundle (its format file says how to read the logs)")] = ART / "models" / "hdfs",
    log_format: Annotated[Optional[str], typer.Option("--format", help="override the bundle's format: hdfs | openstack | a TOML file")] = None,
    out: Annotated[Optional[Path], typer.Option(help="alerts JSONL (default: stdout)")] = None,
    sessions_out: Annotated[Optional[Path], typer.Option(help="CSV session_id,score,is_anomaly: one row per scored session")] = None,
    order: Annotated[str, typer.Option(help="time: events in time order across lines and files (stable) | file: as read")] = "time",
    evidence: Annotated[int, typer.Option(help="raw lines quoted per alert (file and line number), 0 = none")] = 5,
    device: DeviceOpt = "auto",
) -> None:
    """Offline detection on raw logs: alerts as JSON lines (the streaming alert schema).

    Fails (exit 2, with the rates) when most lines do not parse or match no template of the model:
    a wrong format or the model of another system would otherwise flag every session."""
    from logad.detect_files import detect_paths
    from logad.feedback import feedback_path

    if order not in ("time", "file"):
        raise LogadError(f"--order must be time or file, got {order!r}")
    s = settings()
    summary = detect_paths(paths, model, log_format, out, s.sessions, device, sessions_out=sessions_out,
                           guard=s.guard, order=order, evidence=evidence, drift=s.drift,
                           feedback=feedback_path(model, s.scorer.feedback_file))
    console.print(summary)


app.command("feedback")(feedback_cmd)  # logad_cli/feedback.py


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets redacted)."""
    from logad.config import redacted

    _print_json(redacted(settings()))


# ------------------------------------------------------------------------------------------ stream
# Kafka/Faust commands. Each imports streams/ inside the command, so offline commands never load
# faust or aiokafka. Broker address and credentials come from settings (LOGAD_KAFKA_*), never flags.
ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="model bundle (default: scorer.model_dir)")]
AppIdOpt = Annotated[str, typer.Option("--app-id", help="Faust app id = consumer group prefix; one per deployment")]


def _model_dir(s, model: Path | None) -> Path:
    """The bundle of a stream command: --model, else scorer.model_dir (LOGAD_SCORER_MODEL_DIR)."""
    return model or Path(s.scorer.model_dir)


def _raw_topic(s, model_dir: Path, topic: str | None) -> str:
    """--topic, else the raw topic of the bundle's source (its format's name; topics.raw / raw_by_source)."""
    from streams.session_processor import model_format
    from streams.topics import raw_topic

    return topic or raw_topic(s, model_format(model_dir).name)


@app.command("create-topics")
def create_topics_cmd(
    source: Annotated[str, typer.Option(help="source (log format name) whose raw topic to create; all = the "
                                             "configured bundle's source and every topics.raw_by_source name")] = "all",
    model: ModelOpt = None,
) -> None:
    """Create the pipeline's topics with explicit partition counts (idempotent)."""
    import asyncio

    from streams.topics import partition_plan, raw_topic
    from streams.worker import prepare

    s = settings()
    if source == "all":
        from streams.session_processor import model_format

        sources = list(dict.fromkeys([model_format(_model_dir(s, model)).name, *s.topics.raw_by_source]))
    else:
        sources = [source]
    raws = list(dict.fromkeys(raw_topic(s, src) for src in sources))
    created = asyncio.run(prepare(s, raws))
    for name, n in partition_plan(s, raws).items():
        typer.echo(f"{name}\t{n} partition(s){'  (created)' if name in created else ''}")


@app.command()
def worker(
    model: ModelOpt = None,
    app_id: AppIdOpt = "logad",
    topic: Annotated[Optional[str], typer.Option(help="raw topic (default: the raw topic of the bundle's source)")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Faust data dir (default: a temp dir per app id)")] = None,
) -> None:
    """Streaming worker: ingest (raw -> events) + sessions (events -> windows); metrics on web.host:web.port.

    Reads the raw lines with the bundle's log format (any format with a session rule)."""
    from streams.worker import run_worker

    s = settings()
    run_worker(s, app_id=app_id, model_dir=_model_dir(s, model), raw_topic=topic, datadir=data_dir)


@app.command()
def scorer(
    model: ModelOpt = None,
    group: Annotated[str, typer.Option(help="consumer group on the windows topic")] = "logad-scorer",
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda (default: scorer.device)")] = None,
) -> None:
    """Scoring worker: windows -> model (dynamic batches) -> scores + alerts topics."""
    from streams.scorer_process import run_scorer

    s = settings()
    run_scorer(s, model_dir=_model_dir(s, model), group=group, device=device or s.scorer.device)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="raw log file (gzip ok)")],
    topic: Annotated[Optional[str], typer.Option(help="raw topic (default: the raw topic of the format's source)")] = None,
    rate: Annotated[Optional[float], typer.Option(help="lines per second")] = None,
    speed: Annotated[Optional[float], typer.Option(help="replay K times faster than the log's timestamps")] = None,
    max_: Annotated[bool, typer.Option("--max", help="as fast as possible (the default)")] = False,
    lines_per_record: Annotated[int, typer.Option(help="newline-joined lines per Kafka record (multi-line formats: "
                                                       "whole entries, never split)")] = 1,
    partition: Annotated[int, typer.Option(help="partition to write (one: keeps the file order)")] = 0,
    model: ModelOpt = None,
    log_format: Annotated[Optional[str], typer.Option("--format", help="format of the file: hdfs | openstack | a TOML "
                                                                       "file (default: the bundle's)")] = None,
    key: Annotated[Optional[str], typer.Option(help="record key (default: the file path for formats that name "
                                                    "sessions from it, else none)")] = None,
    progress: Annotated[bool, typer.Option(help="tqdm progress bar")] = True,
) -> None:
    """Publish a log file's lines, in order, to a raw topic."""
    import asyncio

    from logad.format_files import load_format
    from streams.replay import Pace, default_key, replay as run
    from streams.session_processor import model_format
    from streams.topics import raw_topic

    if max_ and (rate is not None or speed is not None):
        raise LogadError("choose one of --rate, --speed, --max")
    s = settings()
    fmt = load_format(log_format) if log_format else model_format(_model_dir(s, model))
    res = asyncio.run(run(s, file, topic or raw_topic(s, fmt.name), Pace(rate, speed),
                          lines_per_record=lines_per_record, partition=partition, fmt=fmt,
                          key=key.encode() if key is not None else default_key(file, fmt), progress=progress))
    typer.echo(f"published {res['lines']} lines in {res['records']} records in {res['seconds']} s "
               f"({res['lines_per_s']:.0f} lines/s)")


@app.command()
def alerts(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new alerts")] = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest alert (default: the newest)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON, one alert per line")] = False,
    topic: Annotated[Optional[str], typer.Option(help="alerts topic (default: topics.alerts)")] = None,
) -> None:
    """Print alerts (session, top reasons, surprising templates) or their raw JSON."""
    import asyncio

    from streams.alerts_cli import print_alerts

    s = settings()
    try:
        asyncio.run(print_alerts(s, topic or s.topics.alerts, follow=follow, from_beginning=from_beginning,
                                 as_json=as_json))
    except KeyboardInterrupt:
        pass


@app.command()
def notify() -> None:
    """Deliver alerts from the alerts topic to Alertmanager, a webhook (Slack-compatible) and/or PagerDuty.

    Targets and their options are settings (`[notify]`, LOGAD_NOTIFY_*): alertmanager_url, webhook_url,
    pagerduty_routing_key, quiet_s (an Alertmanager alert resolves after this long without a new
    alert of its session), tries / backoff_s (then the alert goes to the dead-letter topic with the
    reason). Offsets are committed after delivery: at-least-once, duplicates dropped by alert id."""
    from streams.notify import run_notify

    run_notify(settings())


@app.command("evaluate-stream")
def evaluate_stream(
    labels: Annotated[Path, typer.Option(help="session labels CSV: session_id,label (or BlockId,Label; "
                                              "label Normal | Anomaly | 0 | 1)")],
    alerts_topic: Annotated[Optional[str], typer.Option(help="default: topics.alerts")] = None,
    scores_topic: Annotated[Optional[str], typer.Option(help="default: topics.scores")] = None,
    offline: Annotated[Optional[Path], typer.Option(help="raw log file: also compare with `logad detect` on it")] = None,
    model: ModelOpt = None,
    wait: Annotated[float, typer.Option(help="first wait up to this many seconds for the pipeline to drain (0: no wait)")] = 0.0,
    app_id: AppIdOpt = "logad",
    scorer_group: Annotated[str, typer.Option(help="the scorer's consumer group (for --wait)")] = "logad-scorer",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    raw_topic: Annotated[Optional[str], typer.Option(help="raw topic (default: the raw topic of the bundle's source)")] = None,
    delay: Annotated[bool, typer.Option(help="detection delay of alerted anomalous sessions (reads the raw topic)")] = True,
    complete_traces: Annotated[Optional[Path], typer.Option(help="sequence CSV of the sessions' full traces (BlockId,"
                                                                 "EventSequence; .gz ok): also report the figures over "
                                                                 "the sessions whose whole trace is in the sample")] = None,
) -> None:
    """Session-level precision/recall/F1 of the stream's alerts, detection delay, agreement with offline detection."""
    import asyncio

    from streams.evaluate_stream import evaluate, print_report, wait_drained

    s = settings()
    model_dir = _model_dir(s, model)
    raw = _raw_topic(s, model_dir, raw_topic)
    if wait > 0:
        asyncio.run(wait_drained(s, app_id=app_id, scorer_group=scorer_group, timeout_s=wait, raw_topic=raw))
    report = evaluate(s, labels, alerts_topic=alerts_topic, scores_topic=scores_topic, offline=offline,
                      model_dir=model_dir, raw_topic=raw, delay=delay, complete_traces=complete_traces)
    if as_json:
        _print_json(report)
    else:
        print_report(report)


def main() -> None:
    try:
        app()
    except LogadError as e:
        sys.stderr.write(f"error: {' '.join(str(e).split())}\n")  # one line, no markup, no traceback
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
