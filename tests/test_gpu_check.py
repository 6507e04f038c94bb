"""bench/gpu_check.py runs on the CPU when no GPU is lent (the fallback the CUDA path relies on being tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_falls_back_to_the_cpu() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--lines", "3000", "--batches", "1,64",
                        "--windows", "1024", "--repeat", "1",
                        "--device", "cpu"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    result = next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))
    fields = dict(kv.split("=", 1) for kv in result.split()[1:])
    assert fields["device"] == "cpu" and fields["bf16"] == "False"
    assert int(fields["windows"]) == 1024  # distinct windows: the sample's and perturbed copies
    for b in (1, 64):
        assert int(fields[f"windows_per_s_b{b}"]) > 0 and int(fields[f"model_windows_per_s_b{b}"]) > 0
    assert fields["decisions_agree"] == "1.0" and float(fields["max_rel_score_diff"]) == 0.0
