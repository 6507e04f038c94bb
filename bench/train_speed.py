"""Training throughput: samples/s and tokens/s of the next-template transformer, on CPU (and CUDA
when present), for the shipped model size and a larger one. Ends with one RESULT line."""

from __future__ import annotations

import time

import torch

from logad.model import ModelConfig, NextTokenTransformer, autocast
from logad.scoring import collate, window_example
from training.datasets import hdfs_sessions
from training.data import session_windows
from logad.windows import WindowRule


def measure(device: torch.device, cfg: ModelConfig, examples, batch: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = NextTokenTransformer(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    tokens = samples = 0
    for i in range(steps + 3):
        if i == 3:  # warm-up steps excluded
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, tokens, samples = time.perf_counter(), 0, 0
        idx = torch.randint(0, len(examples), (batch,), generator=g).tolist()
        x, y = collate([examples[j] for j in idx], 0)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int((y != -100).sum())
        samples += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return samples / dt, tokens / dt


def main() -> None:
    rule = WindowRule()
    keys = sorted({k for s in hdfs_sessions() for k in s.keys})
    ix = {k: i + 3 for i, k in enumerate(keys)}
    examples = [window_example(w, c, 2) for s in hdfs_sessions()[:6000]
                for w, c in session_windows(tuple(ix[k] for k in s.keys), rule)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result = {}
    for dev in devices:
        for name, kw, batch in (("shipped", dict(n_layer=2, n_head=4, n_embd=128), 64),
                                ("large", dict(n_layer=4, n_head=8, n_embd=256), 64)):
            cfg = ModelConfig(vocab_size=len(keys) + 3, block_size=rule.length, **kw)
            sps, tps = measure(dev, cfg, examples, batch, steps=30 if dev.type == "cpu" else 200)
            n = NextTokenTransformer(cfg).num_params()
            print(f"{dev.type:5s} {name:8s} params={n:>9,d} batch={batch} samples/s={sps:9.0f} tokens/s={tps:10.0f}")
            result[f"{dev.type}_{name}_samples_per_s"] = round(sps)
            result[f"{dev.type}_{name}_tokens_per_s"] = round(tps)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
