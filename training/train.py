"""`logad train`: raw logs of any system -> a calibrated, self-describing model bundle, in one command.

    format file + PATH... --logad.readers--> records (files, folders, .gz, multi-line, JSON)
      --TemplateVocab.fit--> frozen vocab (mined from every parsed line: alerts can then name the
                             templates of anomalous lines too; what counts as normal is decided by
                             the normal training sessions alone, below)
      --vocab.match--> events in time order --session rule + gap_s--> sessions
      --labels (optional)--> split: train = normal only; val = normal + some anomalies; test = rest
         (--init BUNDLE: its vocab seeds the new one when the masking agrees: its templates keep
                             their ids, new ones are appended, so a running worker can pick the
                             new bundle up without a restart)
      --transformer (from scratch, or --init BUNDLE with the embedding resized)--> weights
      --calibrate (normal reference + thresholds at instability R)--> thresholds.json
      --report--> <out>/report.json + report.md (P/R/F1 beside baselines when labels mark anomalies)

The bundle holds the format file verbatim (format.toml), so every consumer (`logad detect`, the
worker) reads the logs exactly as training did. The prepared splits stay in <out>/data/ (template
ids only) for `logad evaluate --model <out>`.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from logad.artifacts import read_json, write_format, write_json
from logad.config import GuardConfig, SessionConfig
from logad.errors import ConfigError
from logad.format_files import load_format
from logad.formats import LogFormat
from logad.guard import check_input
from logad.parse import ParseStats
from logad.readers import iter_file_records, time_order
from logad.records import LogRecord
from logad.windows import WindowRule
from logad.templates import UNK, TemplateVocab
from training.prepare import Session, SplitRule, read_labels, split_sessions, write_dataset

MIN_NORMAL_SESSIONS = 10  # fewer cannot give a train, a validation and a test split


@dataclass(frozen=True)
class TrainOptions:
    epochs: float = 20.0  # passes over the training windows (the budget grows with the data ...)
    max_samples: int = 60_000  # ... up to this many windows (bounds the time on a CPU)
    min_samples: int = 5_000  # ... and at least this many (tiny data still converges)
    batch_size: int = 64  # windows per optimizer step
    lr: float = 0.0  # peak learning rate; 0 = 1e-3 from scratch, 3e-4 fine-tuning
    window: int = 64  # window length L (= model context) when training from scratch
    stride: int = 32  # window stride S when training from scratch
    n_layer: int = 2  # transformer blocks (from scratch)
    n_head: int = 4  # attention heads (from scratch)
    n_embd: int = 64  # width (from scratch)
    percentile: float = 99.5  # calibration: the detector flags at most (100 - p)% of normal val sessions
    instability: float = 0.02  # calibration: tolerate this rate of dropped/duplicated/swapped lines
    split: SplitRule = field(default_factory=SplitRule)  # train/val/test shares
    split_by: str = "auto"  # time: oldest sessions train, newest test | hash: by session id | auto: time when timed
    seed: int = 1337  # data order, init, splits' hash salt is split.seed
    device: str = "auto"  # auto | cpu | cuda
    keep_work: bool = False  # keep <out>/.work (checkpoints) after training

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.max_samples < 1 or self.min_samples < 1 or self.batch_size < 1:
            raise ConfigError("train: epochs, max_samples, min_samples and batch_size must be positive")
        if not 50.0 <= self.percentile <= 100.0:
            raise ConfigError(f"train: percentile must be in [50, 100], got {self.percentile}")
        if self.split_by not in ("auto", "time", "hash"):
            raise ConfigError(f"train: split must be auto, time or hash, got {self.split_by!r}")
        if not 0.0 <= self.instability < 0.5:
            raise ConfigError(f"train: instability must be in [0, 0.5), got {self.instability}")


def read_logs(fmt: LogFormat, paths: list[Path], stats: ParseStats, progress: bool = True
              ) -> list[tuple[float | None, tuple[str, ...], str]]:
    """(event time, session keys, content) of every parsed entry, in input order."""
    out = []
    bar = tqdm(desc="reading logs", unit=" lines", disable=not progress, mininterval=1.0, dynamic_ncols=True)
    last = 0
    for _origin, _line, rec in iter_file_records(paths, fmt, stats):
        if isinstance(rec, LogRecord):
            out.append((rec.timestamp, rec.session_keys, rec.content))
        if stats.lines - last >= 10_000:
            bar.update(stats.lines - last)
            last = stats.lines
    bar.update(stats.lines - last)
    bar.close()
    return out


def build_sessions(records: list[tuple[float | None, tuple[str, ...], str]], tids: list[int],
                   vocab: TemplateVocab, gap_s: float, origin: str) -> list[Session]:
    """Sessions in time order (logad.readers.time_order, as `logad detect` orders events), then per
    session key; an event-time gap over `gap_s` starts a new session under the same key (the
    stream's rule), named "<key>#2", "#3", ..."""
    order = time_order([r[0] for r in records])
    pieces: dict[str, list[list[Any]]] = defaultdict(list)  # key -> [[keys, first_ts, last_ts], ...]
    for i in order:
        ts, keys, _ = records[i]
        k = vocab.keys[tids[i]]
        for key in keys:
            runs = pieces[key]
            if runs and not (ts is not None and runs[-1][2] is not None and ts - runs[-1][2] > gap_s):
                run = runs[-1]
                run[0].append(k)
                if ts is not None:
                    run[1] = ts if run[1] is None else run[1]
                    run[2] = ts
            else:
                runs.append([[k], ts, ts])
    out = []
    for key, runs in pieces.items():
        for j, (keys, first, last) in enumerate(runs):
            out.append(Session(key if j == 0 else f"{key}#{j + 1}", origin, keys, 0, first, last))
    return out


def apply_labels(sessions: list[Session], labels: dict[str, int]) -> dict[str, int]:
    """Label sessions from `session_id,label` (a gap-split piece takes its key's label); counts."""
    counts = {"labelled_anomaly": 0, "labelled_normal": 0, "unlabelled": 0}
    for s in sessions:
        lab = labels.get(s.session_id, labels.get(s.session_id.split("#", 1)[0]))
        if lab is None:
            counts["unlabelled"] += 1  # logs a user trains on are normal unless the labels say otherwise
        else:
            s.label = lab
            counts["labelled_anomaly" if lab else "labelled_normal"] += 1
    return counts


def train_bundle(format_path: str | Path, logs: list[Path], out: str | Path, labels: str | Path | None = None,
                 init: str | Path | None = None, opts: TrainOptions = TrainOptions(),
                 sessions_cfg: SessionConfig = SessionConfig(), guard: GuardConfig = GuardConfig(),
                 progress: bool = True) -> dict:
    """Build the bundle at `out`; returns the report (also written to <out>/report.json)."""
    from training.calibrate import calibrate

    t0 = time.time()
    out = Path(out)
    fmt = load_format(format_path)
    fmt.require_sessions()
    if init is not None and not Path(init).is_dir():
        raise ConfigError(f"--init {init}: no such model bundle")
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise ConfigError(f"{out} exists and is not a model bundle: choose an empty or new folder")
    steps: dict[str, float] = {}
    seed, not_kept = init_vocab(init, fmt)

    stats = ParseStats()
    vocab, info, unk, label_counts = prepare_from_logs(fmt, logs, out / "data", labels, opts.split, opts.split_by,
                                                       sessions_cfg.gap_s, guard, stats, steps, progress, seed=seed)
    data_dir = out / "data"

    t = time.time()
    train_info = _train_model(fmt, vocab, data_dir, out, init, opts, progress)
    manifest = read_json(out / "manifest.json", "model manifest")
    manifest["log_format"] = write_format(out, fmt) or {"name": fmt.name}  # a built-in format has no file
    manifest["training_data"] = {"lines": stats.as_dict(), "templates": len(vocab.entries),
                                 "split_rule": info["split_rule"], "counts": info["counts"], **label_counts}
    write_json(out / "manifest.json", manifest)
    steps["train_s"] = time.time() - t

    t = time.time()
    th = calibrate(out, data_dir, opts.percentile, None, instability=opts.instability, device=opts.device)
    steps["calibrate_s"] = time.time() - t

    t = time.time()
    report = _report(out, data_dir, fmt, stats, unk, info, th, train_info, label_counts, opts)
    steps["report_s"] = time.time() - t
    steps["total_s"] = time.time() - t0
    report["seconds"] = {k: round(v, 1) for k, v in steps.items()}
    if not_kept:
        report["warnings"].append(not_kept)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    return report


def init_vocab(init: str | Path | None, fmt: LogFormat) -> tuple[TemplateVocab | None, str]:
    """(the vocab of the --init bundle, "") to seed the new one with: its templates keep their ids,
    new ones are appended (an id-extension, which a running worker picks up without a restart); or
    (None, why not) when its masking is not the format's (its patterns would not match)."""
    if init is None:
        return None, ""
    from logad.artifacts import load_bundle

    base = load_bundle(init).vocab
    if base.masker is None or base.masking_fingerprint != fmt.masker.fingerprint:
        return None, (f"the vocab of --init {init} was made with other masking than format {fmt.name!r}: its "
                      "template ids are not kept, so running workers need a restart to take this bundle")
    return base, ""


def prepare_from_logs(fmt: LogFormat, logs: list[Path], data_dir: Path, labels: str | Path | None,
                      rule: SplitRule = SplitRule(), split_by: str = "auto", gap_s: float = SessionConfig.gap_s,
                      guard: GuardConfig = GuardConfig(), stats: ParseStats | None = None,
                      steps: dict[str, float] | None = None, progress: bool = True, seed: TemplateVocab | None = None
                      ) -> tuple[TemplateVocab, dict, int, dict[str, int]]:
    """Raw logs -> <data_dir>/{train,val,test}.parquet + template_vocab.json + split.json (`logad
    prepare raw`, and the first half of `logad train`). Returns (vocab, split info, lines that
    matched no mined template, label counts). `seed`: a vocab whose templates keep their ids (lines
    matching one count for it; the rest are mined and appended)."""
    fmt.require_sessions()
    stats = stats if stats is not None else ParseStats()
    steps = steps if steps is not None else {}
    t = time.time()
    records = read_logs(fmt, logs, stats, progress)
    check_input(stats, 0, guard, f"{len(logs)} input path(s) with format {fmt.name!r}")
    steps["read_s"] = time.time() - t
    if not records:
        raise ConfigError("no log lines parsed: check the format file against the logs")
    t = time.time()
    vocab = TemplateVocab.fit((r[2] for r in records), fmt, seed=seed)
    tids = vocab.match_many(r[2] for r in records)
    unk = sum(1 for x in tids if x == UNK)
    steps["templates_s"] = time.time() - t
    sessions = build_sessions(records, tids, vocab, gap_s, ",".join(p.name for p in logs)[:200])
    label_counts = apply_labels(sessions, read_labels(labels)) if labels is not None else {}
    n_normal = sum(s.label == 0 for s in sessions)
    if n_normal < MIN_NORMAL_SESSIONS:
        raise ConfigError(f"{n_normal} normal sessions found (need >= {MIN_NORMAL_SESSIONS}): more logs, or a session "
                          f"rule ({fmt.session_rule}) that groups lines into more sessions")
    split = split_sessions(sessions, rule, {"auto": None, "time": True, "hash": False}[split_by])
    if data_dir.exists():
        shutil.rmtree(data_dir)
    info = write_dataset(data_dir, split, vocab, {"dataset": fmt.name, "format": fmt.name,
                                                 "inputs": [str(p) for p in logs], "lines": stats.as_dict(),
                                                 **label_counts})
    if info["counts"]["val"]["normal"] == 0 or info["counts"]["train"]["sessions"] == 0:
        raise ConfigError("the split left no normal sessions for training or validation: give more sessions")
    return vocab, info, unk, label_counts


def _train_model(fmt: LogFormat, vocab: TemplateVocab, data_dir: Path, out: Path, init: str | Path | None,
                 opts: TrainOptions, progress: bool) -> dict:
    from logad.artifacts import load_bundle
    from logad.model import ModelConfig, NextTokenTransformer, resize_vocab
    from training.data import examples, load_split
    from training.loop import TrainConfig, train
    from training.pretrain import publish

    splits = {s: load_split(data_dir, s) for s in ("train", "val")}
    if init is not None:
        base = load_bundle(init)
        rule = base.rule
        model = resize_vocab(base.model, base.vocab.keys, vocab.keys, seed=opts.seed)
        init_info = {"init": str(init), "init_version": base.version}
    else:
        rule = WindowRule(opts.window, opts.stride)
        model = NextTokenTransformer(ModelConfig(vocab_size=len(vocab), block_size=rule.length, n_layer=opts.n_layer,
                                                 n_head=opts.n_head, n_embd=opts.n_embd))
        init_info = {"init": None}
    train_ex = examples(splits["train"], rule, vocab.BOS)
    val_ex = examples(splits["val"], rule, vocab.BOS, label=0)
    budget = int(min(opts.max_samples, max(opts.min_samples, opts.epochs * len(train_ex))))
    budget = max(opts.batch_size, budget // opts.batch_size * opts.batch_size)
    lr = opts.lr or (3e-4 if init is not None else 1e-3)
    cfg = TrainConfig(lr=lr, batch_size=opts.batch_size, max_samples=budget, warmup_samples=max(1, budget // 20),
                      eval_every=max(opts.batch_size, budget // 8), checkpoint_every=10 * budget,
                      early_stop_patience=3, seed=opts.seed, device=opts.device)
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    meta = {"dataset": fmt.name, "train_windows": len(train_ex), "epoch_samples": len(train_ex),
            "stage": "finetune" if init is not None else "scratch", **init_info}
    run = train(model, train_ex, val_ex, vocab, rule, cfg, work, meta=meta, progress=progress)
    publish(work / "best", out)
    if not opts.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return {"train_windows": len(train_ex), "val_windows": len(val_ex), "samples": run.samples,
            "best_val_loss": run.best_val, "stopped_early": run.stopped_early, "seconds": round(run.seconds, 1),
            "train_config": {k: v for k, v in asdict(cfg).items() if k in ("lr", "batch_size", "max_samples")},
            **init_info}


def _report(out: Path, data_dir: Path, fmt: LogFormat, stats: ParseStats, unk: int, info: dict, th: dict,
            train_info: dict, label_counts: dict, opts: TrainOptions) -> dict:
    from training.evaluate import evaluate

    test = info["counts"]["test"]
    res = evaluate(out, data_dir, fmt.name, metrics_dir=out / "report", device=opts.device,
                   write=test["anomaly"] > 0 and test["normal"] > 0)
    rep: dict[str, Any] = {
        "format": fmt.name, "session_rule": fmt.session_rule, "lines": stats.as_dict(),
        "templates": len(read_json(data_dir / "template_vocab.json", "vocab")["templates"]),
        "unmatched_training_lines": unk, "split_rule": info["split_rule"], "counts": info["counts"],
        "labels": label_counts, "training": train_info,
        "calibration": {"percentile": th["percentile"], "instability": th.get("instability", opts.instability),
                        "methods": list(th["values"])},
        "test": {"sessions": test["sessions"], "normal": test["normal"], "anomaly": test["anomaly"],
                 "model": res["model"]},
    }
    rep["warnings"] = warnings(info, th, unk)
    if test["anomaly"] > 0 and test["normal"] > 0:
        rep["test"]["baselines"] = {k: {m: v[m] for m in ("precision", "recall", "f1")}
                                    for k, v in res["baselines"].items()}
        rep["test"]["statement"] = res["statement"]
    else:
        rep["test"]["statement"] = (f"no labelled anomalies in the test split: {res['model']['fpr']:.2%} of its "
                                    f"{test['normal']} held-out normal sessions are flagged")
    return rep


def warnings(info: dict, th: dict, unk: int) -> list[str]:
    """What a person should know before trusting the bundle."""
    out = []
    extra = th.get("extra", {})
    target = 1.0 - float(extra.get("target_percentile", th["percentile"])) / 100.0
    rate = float(extra.get("joint_normal_flag_rate", 0.0))
    if rate > target + 1e-9:
        out.append(f"calibration could not reach its target: {rate:.1%} of the normal validation sessions are still "
                   f"flagged (target {target:.1%}). The validation sessions differ from the training ones (with a "
                   "split by time: the newest logs behave differently); train on logs that cover the behaviour "
                   "you call normal, or use --split hash when time order does not matter")
    if info["counts"]["train"]["sessions"] < 100:
        out.append(f"only {info['counts']['train']['sessions']} training sessions: thresholds rest on few "
                   "examples; more normal logs make them steadier")
    if unk:
        out.append(f"{unk} training lines matched no mined template (they count as unseen events)")
    return out


def report_markdown(r: dict) -> str:
    """The report as a page a person reads."""
    m = r["test"]["model"]
    lines = [f"# logad model report: {r['format']}", "",
             f"Sessions by `{r['session_rule']}`; {r['lines']['lines']:,} lines read, {r['lines']['records']:,} parsed, "
             f"{r['templates']} templates mined.", "",
             f"Split: {r['split_rule']}.", "",
             "| split | sessions | normal | anomalous |", "|---|---|---|---|"]
    for s in ("train", "val", "test"):
        c = r["counts"][s]
        lines.append(f"| {s} | {c['sessions']:,} | {c['normal']:,} | {c['anomaly']:,} |")
    t = r["training"]
    lines += ["", f"Transformer: {'fine-tuned from ' + str(t['init']) if t.get('init') else 'trained from scratch'}, "
                  f"{t['samples']:,} windows, best validation loss {t['best_val_loss']:.4f}.",
              f"Calibration: percentile {r['calibration']['percentile']}, instability "
              f"{r['calibration']['instability']}.", "", "## Test split", "",
              "| detector | precision | recall | F1 |", "|---|---|---|---|",
              f"| logad | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |"]
    for k, b in r["test"].get("baselines", {}).items():
        lines.append(f"| {k} (baseline) | {b['precision']:.3f} | {b['recall']:.3f} | {b['f1']:.3f} |")
    lines += ["", r["test"]["statement"], ""]
    if r.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in r["warnings"]] + [""]
    lines += [f"Time (s): {r.get('seconds', {})}", ""]
    return "\n".join(lines)
