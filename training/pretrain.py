"""`logad pretrain` (HDFS) and `logad finetune` (OpenStack): thin wiring of data, model and loop.

Run folder layout (`--work`, not committed):
    <work>/checkpoints/checkpoint_<samples>/   sample-based checkpoints (bundle + optimizer/RNG state)
    <work>/best/ , <work>/last/                best by validation loss, and the final state
The shipped bundle (`--out`, e.g. artifacts/models/hdfs) is a copy of `best` without training state.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

from logad.artifacts import load_bundle, sha256_file
from logad.errors import ArtifactError
from logad.model import ModelConfig, NextTokenTransformer, pick_device, resize_vocab
from logad.windows import WindowRule
from logad.templates import TemplateVocab
from training.data import examples, load_split
from training.diagnostics import write_diagnostics
from training.loop import TrainConfig, train


def _dataset(data_dir: Path):
    vocab = TemplateVocab.load(data_dir / "template_vocab.json")
    splits = {s: load_split(data_dir, s) for s in ("train", "val", "test")}
    hashes = {s: sha256_file(data_dir / f"{s}.parquet") for s in splits}
    return vocab, splits, hashes


def publish(best: Path, out: Path) -> None:
    """Copy the bundle files of `best` (not its training state) to the shipped model folder."""
    out.mkdir(parents=True, exist_ok=True)
    for f in ("weights.safetensors", "manifest.json", "template_vocab.json"):
        shutil.copy2(best / f, out / f)
    for stale in ("thresholds.json", "reference.safetensors"):  # belong to the previous weights
        (out / stale).unlink(missing_ok=True)


def pretrain(data_dir: str | Path, out: str | Path, work: str | Path, model_cfg: dict | None = None,
             train_cfg: TrainConfig = TrainConfig(), rule: WindowRule = WindowRule(),
             metrics_dir: str | Path | None = None, resume: str | Path | None = None,
             name: str = "hdfs", extra_checkpoint_epochs: float = 2.0) -> dict:
    data_dir, out, work = Path(data_dir), Path(out), Path(work)
    vocab, splits, hashes = _dataset(data_dir)
    cfg = ModelConfig(vocab_size=len(vocab), block_size=rule.length, **(model_cfg or {}))
    model = NextTokenTransformer(cfg)
    train_ex = examples(splits["train"], rule, vocab.BOS)
    val_ex = examples(splits["val"], rule, vocab.BOS, label=0)
    if extra_checkpoint_epochs:
        # The checkpoint fine-tuning starts from: `extra_checkpoint_epochs` epochs' worth of samples.
        train_cfg = replace(train_cfg, extra_checkpoints=tuple(train_cfg.extra_checkpoints)
                            + (int(extra_checkpoint_epochs * len(train_ex)),))
    meta = {"dataset": name, "data_hashes": hashes, "train_windows": len(train_ex),
            "epoch_samples": len(train_ex), "stage": "pretrain"}
    run = train(model, train_ex, val_ex, vocab, rule, train_cfg, work, resume=resume, meta=meta)
    publish(work / "best", out)
    best = load_bundle(out)
    report = write_diagnostics(metrics_dir or Path("artifacts/metrics") / name, "training", best.model,
                               splits, rule, vocab, pick_device("cpu"), run,
                               {"model_config": cfg.to_dict(), "train_config": asdict(train_cfg)})
    return report


def checkpoint_for_epochs(work: str | Path, epochs: float) -> Path:
    """The checkpoint of a pretraining run closest to `epochs` epochs' worth of samples."""
    ckpts = sorted(Path(work, "checkpoints").glob("checkpoint_*"))
    if not ckpts:
        raise ArtifactError(f"no checkpoints under {Path(work, 'checkpoints')}: run `logad pretrain` first")
    target = None
    best_gap = float("inf")
    for c in ckpts:
        m = load_bundle(c).manifest
        gap = abs(m["samples"] - epochs * m["epoch_samples"])
        if gap < best_gap:
            target, best_gap = c, gap
    return target


def finetune(data_dir: str | Path, init: str | Path | None, out: str | Path, work: str | Path,
             train_cfg: TrainConfig, metrics_dir: str | Path | None = None, name: str = "openstack",
             compare_scratch: bool = True) -> dict:
    """Fine-tune from a pretrained bundle (resized to the new vocab); optionally also train the same
    architecture from scratch on the same split and budget, and report both."""
    data_dir, out, work = Path(data_dir), Path(out), Path(work)
    vocab, splits, hashes = _dataset(data_dir)
    results: dict = {}
    runs = [("finetuned", init)] + ([("scratch", None)] if compare_scratch else [])
    for kind, init_path in runs:
        if init_path is not None:
            base = load_bundle(init_path)
            rule = base.rule
            model = resize_vocab(base.model, base.vocab.keys, vocab.keys, seed=train_cfg.seed)
            init_info = {"init": str(init_path), "init_sha256": base.weights_sha256,
                         "init_samples": base.manifest.get("samples")}
        else:
            ref = load_bundle(init) if init is not None else None
            rule = ref.rule if ref else WindowRule()
            mcfg = {k: v for k, v in (ref.model.cfg.to_dict() if ref else {}).items() if k != "vocab_size"}
            model = NextTokenTransformer(ModelConfig(vocab_size=len(vocab), **mcfg) if mcfg
                                         else ModelConfig(vocab_size=len(vocab), block_size=rule.length))
            init_info = {"init": None}
        train_ex = examples(splits["train"], rule, vocab.BOS)
        val_ex = examples(splits["val"], rule, vocab.BOS, label=0)
        meta = {"dataset": name, "data_hashes": hashes, "train_windows": len(train_ex),
                "epoch_samples": len(train_ex), "stage": kind, **init_info}
        run = train(model, train_ex, val_ex, vocab, rule, train_cfg, work / kind, meta=meta)
        best = load_bundle(work / kind / "best")
        diag = write_diagnostics(metrics_dir or Path("artifacts/metrics") / name, f"training_{kind}",
                                 best.model, splits, rule, vocab, pick_device("cpu"), run)
        results[kind] = {"best_val_loss": run.best_val, "samples": run.samples,
                         "stopped_early": run.stopped_early, "seconds": run.seconds,
                         "val_topk": diag["val"]["topk_accuracy"], "test_topk": diag["test"]["topk_accuracy"]}
    publish(work / "finetuned" / "best", out)
    if compare_scratch:
        ft, sc = results["finetuned"], results["scratch"]
        delta = sc["best_val_loss"] - ft["best_val_loss"]
        results["transfer_helps"] = bool(delta > 0.01)
        results["verdict"] = (
            f"fine-tuned val loss {ft['best_val_loss']:.4f} vs from-scratch {sc['best_val_loss']:.4f} "
            f"(same split, same budget of {train_cfg.max_samples} samples): "
            + ("pretraining on HDFS helps" if delta > 0.01 else
               "no meaningful difference: HDFS and OpenStack share no template keys, so only the "
               "transformer blocks transfer" if abs(delta) <= 0.01 else "pretraining hurts here")
        )
    return results
