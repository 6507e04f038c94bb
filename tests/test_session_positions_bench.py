"""bench/session_positions.py runs, closes the same windows with and without positions, and prints its RESULT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_session_positions_bench_runs() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "session_positions.py"), "--lines", "5000", "--repeat", "1"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    result = next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))
    fields = dict(kv.split("=", 1) for kv in result.split()[1:])
    assert int(fields["windows"]) > 0  # the same count with and without positions, or the bench exits 1
    assert float(fields["session_us_per_line"]) > 0 and float(fields["ratio_positions_vs_none"]) > 0
