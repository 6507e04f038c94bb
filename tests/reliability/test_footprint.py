"""The worker's memory floor: it reads manifests and vocabs, never weights, so it must not import
torch (~500 MB of RSS on this box, and seconds of start-up, i.e. of recovery after a crash)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.reliability.harness import ROOT, record

pytestmark = [pytest.mark.reliability]

PROBE = """
import sys, psutil
import streams.app, streams.worker
print(psutil.Process().memory_info().rss, 'torch' in sys.modules)
"""


def test_worker_does_not_import_torch() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rss, torch_loaded = out.stdout.split()
    record("worker import footprint", torch_loaded == "False", rss_mb_after_import=round(int(rss) / 2**20, 1),
           torch_imported=torch_loaded == "True")
    assert torch_loaded == "False", "the worker's modules import torch (logad.artifacts / logad.detect_files at module level?)"
