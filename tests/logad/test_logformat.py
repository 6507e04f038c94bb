"""loghub_regex: the Loghub benchmark formats extract the truth's Content; bad formats and hostile lines."""

from __future__ import annotations

import csv
import re
import time
import tomllib
from pathlib import Path

import pytest

from logad.errors import ConfigError
from logad.logformat import loghub_regex

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("Apache", "BGL", "HDFS", "OpenSSH", "OpenStack", "Spark", "Thunderbird", "Zookeeper")


def _log_format(system: str) -> str:
    return tomllib.loads((ROOT / "formats" / "loghub" / f"{system}.toml").read_text(encoding="utf-8"))["log_format"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_benchmark_format_gives_the_truth_content(system: str) -> None:
    source, names = loghub_regex(_log_format(system))
    rx = re.compile(source)
    d = ROOT / "data" / "loghub_2k" / system
    lines = (d / f"{system}_2k.log").read_text(encoding="utf-8").splitlines()
    with open(d / f"{system}_2k.log_structured_corrected.csv", newline="", encoding="utf-8") as f:
        truth = [r["Content"] for r in csv.DictReader(f)]
    assert len(lines) == len(truth) == 2000
    for line, content in zip(lines, truth, strict=True):
        m = rx.match(line.strip())
        assert m is not None, line
        assert m.group("Content") == content
    assert names[-1] == "Content"


@pytest.mark.parametrize("bad, message", [
    ("", "non-empty"),
    ("<Date> <Time> <Level>", "needs a <Content> field"),
    ("<Date> <Da-te> <Content>", "must be a name"),
    ("<Date> <Date> <Content>", "names field <Date> twice"),
    ("<Date><Time> <Content>", "need text between them"),
    ("<Date> (<Time> <Content>", "not a valid pattern"),
])
def test_invalid_formats_are_refused(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        loghub_regex(bad)


@pytest.mark.parametrize("system", SYSTEMS)
def test_hostile_line_is_fast(system: str) -> None:
    rx = re.compile(loghub_regex(_log_format(system))[0])
    for line in ("a " * 32768, "[" * 65536, "- 1 " * 16384, ":" * 65536, "[a] " * 16384):
        took = []
        for _ in range(3):  # best of 3: a preempted run on a busy machine is not a slow regex
            t = time.perf_counter()
            rx.match(line)
            took.append(time.perf_counter() - t)
            if took[-1] < 0.5:
                break
        assert min(took) < 0.5, (system, line[:20], took)
