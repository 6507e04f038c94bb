"""Run by test_ddp_two_processes_gloo under torchrun: a few DDP steps on CPU."""

import os
import sys

import torch.distributed as dist

from tests.training.test_loop import _data, _model
from logad.windows import WindowRule
from training.loop import TrainConfig, train

vocab, tr, va = _data()
train(_model(vocab), tr, va, vocab, WindowRule(16, 8),
      TrainConfig(max_samples=64, batch_size=4, checkpoint_every=32, eval_every=32, device="cpu"), sys.argv[1],
      progress=False)
if int(os.environ["RANK"]) == 0:
    print(f"world_size={dist.get_world_size()}")
dist.destroy_process_group()
