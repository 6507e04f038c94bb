"""The training loop shared by `logad pretrain` and `logad finetune`.

AdamW, linear warmup then cosine decay, gradient clipping, bf16 autocast on CUDA (fp32 on CPU),
sample-based checkpoints (`checkpoint_1M`, ...), `best` by validation loss, early stopping, exact
resume, DistributedDataParallel under torchrun (rank 0 writes). The data order is a pure function of
(seed, epoch), and checkpoints store optimizer and RNG state, so resuming from any checkpoint gives
the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from logad.artifacts import load_bundle, read_json, save_bundle
from logad.errors import ConfigError
from logad.model import IGNORE, NextTokenTransformer, autocast, pick_device
from logad.scoring import collate
from logad.windows import WindowRule
from logad.templates import TemplateVocab
from training.data import Example



@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    weight_decay: float = 0.01  # AdamW weight decay (matrices only)
    batch_size: int = 64  # windows per optimizer step (per process under DDP)
    max_samples: int = 400_000  # training budget in windows (samples)
    warmup_samples: int = 20_000  # linear warmup length
    grad_clip: float = 1.0  # max global gradient norm
    eval_every: int = 50_000  # samples between validation evaluations
    checkpoint_every: int = 1_000_000  # samples between named checkpoints (checkpoint_1M, ...)
    extra_checkpoints: tuple[int, ...] = ()  # further sample counts to checkpoint at (e.g. 2 epochs)
    early_stop_patience: int = 0  # stop after this many evals without val improvement; 0 = never
    augment: float = 0.0  # per-event drop/duplicate/swap probability applied to training windows (0 = off)
    seed: int = 1337  # data order, dropout and init
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_samples", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train {name} must be >= 1, got {getattr(self, name)}")


def samples_name(n: int) -> str:
    """1_000_000 -> '1M', 250_000 -> '250k', 17_408 -> '17408'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def lr_at(samples: int, cfg: TrainConfig) -> float:
    if samples < cfg.warmup_samples:
        return cfg.lr * (samples + 1) / cfg.warmup_samples
    progress = min(1.0, (samples - cfg.warmup_samples) / max(1, cfg.max_samples - cfg.warmup_samples))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def augment_example(ex: Example, rate: float, seed: int, pos: int) -> Example:
    """Perturb the events of one training window (LogRobust-style instability), same window rule."""
    from logad.scoring import window_example  # local: keeps the import graph of this module small
    from training.perturb import perturb

    x, y = ex
    rng = random.Random(seed * 1_000_003 + pos)
    if x and x[0] == TemplateVocab.BOS:  # first window of a session: x = [BOS] + ids[:-1], y = ids
        return window_example(perturb(list(y), rate, rng), 0, TemplateVocab.BOS)
    ids = list(x) + [y[-1]]  # later window: x = ids[:-1], y = ids[1:] with context targets ignored
    ctx = next((i for i, t in enumerate(y) if t != IGNORE), len(y)) + 1
    new = perturb(ids, rate, rng)
    if len(new) < 2:  # nothing left to predict: keep the window as it was
        return ex
    return window_example(new, max(1, min(ctx, len(new) - 1)), TemplateVocab.BOS)


class Order:
    """Position -> example index in an endless sequence of seeded epoch permutations."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self._cache = n, seed, {}

    def __call__(self, pos: int) -> int:
        epoch, off = divmod(pos, self.n)
        if epoch not in self._cache:
            self._cache = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))}
        return int(self._cache[epoch][off])


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


@torch.no_grad()
def evaluate_loss(model: NextTokenTransformer, examples: Sequence[Example], pad: int,
                  device: torch.device, batch_size: int = 256) -> float:
    """Mean NLL per scored target over the examples."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = collate(examples[i:i + batch_size], pad)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            _, loss = model(x, y)
        n = int((y != -100).sum())
        total += float(loss) * n
        count += n
    return total / count if count else float("nan")


def _save_state(path: Path, opt: torch.optim.Optimizer, info: dict) -> None:
    tensors = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v.detach().cpu().reshape(-1) if v.dim() == 0 else v.detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file(tensors, str(path / "train_state.safetensors"))
    (path / "train_state.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))


def _load_state(path: Path, opt: torch.optim.Optimizer) -> dict:
    info = read_json(path / "train_state.json", "training state")
    tensors = load_file(str(path / "train_state.safetensors"))
    sd = opt.state_dict()
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, idx, k = name.split(".", 2)
            state.setdefault(int(idx), {})[k] = v.reshape(()) if k == "step" else v
    sd["state"] = state
    opt.load_state_dict(sd)
    torch.set_rng_state(tensors["rng.cpu"])
    return info


@dataclass
class RunResult:
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    train_curve: list[dict] = field(default_factory=list)  # (samples, loss) every few steps
    best_val: float = float("inf")
    samples: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def train(model: NextTokenTransformer, train_ex: Sequence[Example], val_ex: Sequence[Example],
          vocab: TemplateVocab, rule: WindowRule, cfg: TrainConfig, out_dir: str | Path,
          resume: str | Path | None = None, meta: dict | None = None, progress: bool = True) -> RunResult:
    """Train; writes out_dir/checkpoints/checkpoint_*, out_dir/best and returns the history."""
    if not train_ex:
        raise ConfigError("no training windows (is the train split empty?)")
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    device = pick_device(cfg.device)
    if ddp:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            torch.cuda.set_device(device)
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = make_optimizer(model, cfg)
    result = RunResult()
    step = 0
    if resume is not None:
        rp = Path(resume)
        loaded = load_bundle(rp, device)
        model.load_state_dict(loaded.model.state_dict())
        info = _load_state(rp, opt)
        step, result.best_val = info["step"], info["best_val"]
        result.history, result.train_curve = info["history"], info["train_curve"]
        bad_evals = info["bad_evals"]
    else:
        bad_evals = 0
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    order = Order(len(train_ex), cfg.seed)
    per_step = cfg.batch_size * world
    total_steps = math.ceil(cfg.max_samples / per_step)
    marks = sorted({m for m in cfg.extra_checkpoints if m > 0})
    meta = {**(meta or {}), "train_config": asdict(cfg), "world_size": world}
    bar = tqdm(total=total_steps, initial=step, disable=not progress or rank != 0, unit="step",
               dynamic_ncols=True, mininterval=1.0)
    t0, ema = time.time(), None

    def checkpoint(path: Path, samples: int) -> None:
        save_bundle(path, model, vocab, rule, {**meta, "samples": samples, "best_val_loss": result.best_val})
        _save_state(path, opt, {"step": step, "samples": samples, "best_val": result.best_val,
                                "bad_evals": bad_evals, "history": result.history,
                                "train_curve": result.train_curve})

    while step < total_steps:
        samples = step * per_step
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(samples, cfg)
        base = step * per_step + rank * cfg.batch_size
        batch = [train_ex[order(base + i)] for i in range(cfg.batch_size)]
        if cfg.augment > 0:  # seeded by sample position: resume stays exact
            batch = [augment_example(ex, cfg.augment, cfg.seed, base + i) for i, ex in enumerate(batch)]
        x, y = collate(batch, vocab.PAD)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            _, loss = net(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        samples = step * per_step
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if step % 10 == 0:
            result.train_curve.append({"samples": samples, "loss": ema})
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", samples_s=f"{samples / max(1e-9, time.time() - t0):.0f}", refresh=False)
        crossed = lambda every: samples // every > (samples - per_step) // every  # noqa: E731
        last = step == total_steps
        if crossed(cfg.eval_every) or last:
            val = evaluate_loss(model, val_ex, vocab.PAD, device) if val_ex else float("nan")
            improved = val < result.best_val - 1e-5
            result.history.append({"samples": samples, "step": step, "train_loss": ema, "val_loss": val,
                                   "lr": lr_at(samples, cfg)})
            if improved:
                result.best_val, bad_evals = val, 0
                if rank == 0:
                    checkpoint(out / "best", samples)
            else:
                bad_evals += 1
            if cfg.early_stop_patience and bad_evals >= cfg.early_stop_patience:
                result.stopped_early = True
                last = True
        if rank == 0:
            if crossed(cfg.checkpoint_every):
                checkpoint(ckpt_dir / f"checkpoint_{samples_name(samples // cfg.checkpoint_every * cfg.checkpoint_every)}", samples)
            for m in marks:
                if samples - per_step < m <= samples:
                    checkpoint(ckpt_dir / f"checkpoint_{samples_name(m)}", samples)
        if last:
            break
    bar.close()
    if rank == 0:
        checkpoint(out / "last", samples)
        if not (out / "best").exists():
            checkpoint(out / "best", samples)
    result.samples = samples
    result.seconds = time.time() - t0
    if ddp:
        dist.barrier()
    return result

