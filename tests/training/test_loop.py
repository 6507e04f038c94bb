"""Training loop: exact resume, sample-based checkpoint names, artifacts refused when damaged."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logad.artifacts import load_bundle
from logad.errors import ArtifactError
from logad.model import ModelConfig, NextTokenTransformer
from logad.scoring import window_example
from logad.windows import WindowRule
from logad.templates import TemplateVocab
from training.loop import TrainConfig, samples_name, train

KEYS = [f"E{i}" for i in range(1, 9)]


def _data():
    vocab = TemplateVocab.from_keys(KEYS)
    g = torch.Generator().manual_seed(0)
    seqs = [[vocab.id_of(KEYS[int(j)]) for j in torch.randint(0, 8, (int(n),), generator=g)]
            for n in torch.randint(3, 12, (40,), generator=g)]
    ex = [window_example(s, 0, vocab.BOS) for s in seqs]
    return vocab, ex[:32], ex[32:]


def _model(vocab):
    torch.manual_seed(7)
    return NextTokenTransformer(ModelConfig(vocab_size=len(vocab), block_size=16, n_layer=1, n_head=2, n_embd=16))


def test_samples_name():
    assert samples_name(1_000_000) == "1M"
    assert samples_name(250_000) == "250k"
    assert samples_name(17_408) == "17408"


@pytest.mark.parametrize("augment", [0.0, 0.2])
def test_resume_equals_uninterrupted(tmp_path, augment):
    vocab, tr, va = _data()
    rule = WindowRule(16, 8)
    base = dict(batch_size=4, warmup_samples=8, eval_every=40, seed=3, device="cpu", augment=augment)
    full = _model(vocab)
    train(full, tr, va, vocab, rule, TrainConfig(max_samples=160, checkpoint_every=80, **base), tmp_path / "a", progress=False)
    # Same seed, interrupted at 80 samples (the checkpoint taken there), then resumed to 160.
    ck = tmp_path / "a" / "checkpoints" / "checkpoint_80"
    assert ck.is_dir() and (tmp_path / "a" / "checkpoints" / "checkpoint_160").is_dir()
    resumed = _model(vocab)
    train(resumed, tr, va, vocab, rule, TrainConfig(max_samples=160, checkpoint_every=80, **base), tmp_path / "c",
          resume=ck, progress=False)
    for (n, p), (_, q) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_damaged_artifacts_are_refused(tmp_path):
    vocab, tr, va = _data()
    m = _model(vocab)
    train(m, tr, va, vocab, WindowRule(16, 8), TrainConfig(max_samples=8, batch_size=4, device="cpu"), tmp_path, progress=False)
    best = tmp_path / "best"
    load_bundle(best)  # intact: loads
    w = best / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="sha256 differs") as e:
        load_bundle(best)
    assert "\n" not in str(e.value)
    # A truncated file whose hash was "fixed up" in the manifest is still refused by safetensors.
    import orjson
    man = orjson.loads((best / "manifest.json").read_bytes())
    from logad.artifacts import sha256_file
    man["weights"]["sha256"] = sha256_file(w)
    (best / "manifest.json").write_bytes(orjson.dumps(man))
    with pytest.raises(ArtifactError, match="unreadable safetensors|do not fit"):
        load_bundle(best)
    # Vocab/model mismatch.
    last = tmp_path / "last"
    man = orjson.loads((last / "manifest.json").read_bytes())
    man["model_config"]["vocab_size"] += 1
    (last / "manifest.json").write_bytes(orjson.dumps(man))
    with pytest.raises(ArtifactError, match="vocab has"):
        load_bundle(last)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    """torchrun --nproc_per_node=2 on CPU (gloo) runs a few steps and writes one checkpoint set."""
    script = Path(__file__).with_name("ddp_worker.py")
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
                        str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "best" / "weights.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "checkpoint_32").is_dir()
    assert "world_size=2" in r.stdout


def test_augment_example_keeps_the_window_rule():
    from logad.model import IGNORE
    from training.loop import augment_example

    for ctx in (0, 1, 3):
        ex = window_example([5, 6, 7, 8, 9, 10, 11, 12], ctx, 2)
        assert augment_example(ex, 0.0, 1, 0) == ex  # rate 0: unchanged
        changed = [augment_example(ex, 0.5, 1, pos) for pos in range(20)]
        assert any(c != ex for c in changed)
        for x, y in changed:
            assert len(x) == len(y) and x
            assert (x[0] == 2) == (ctx == 0)  # BOS only on first windows
            assert y[-1] != IGNORE  # the last event is always scored
