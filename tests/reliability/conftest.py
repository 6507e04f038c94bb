"""Fixtures of the fault-injection suite: the no-fault reference every faulty run must reproduce."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.reliability.harness import MODEL, RAW, labelled_sessions


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`logad detect` on the sample: {"alerts": alert id -> alert, "summary": detect_file's summary}.
    The e2e test proves the no-fault stream gives exactly these ids, so they are the no-fault
    reference of every scenario here."""
    from logad.config import SessionConfig
    from logad.detect_files import detect_file

    out: Path = tmp_path_factory.mktemp("offline") / "alerts.jsonl"
    summary = detect_file(RAW, MODEL, None, out, SessionConfig(idle_timeout_s=3), device="cpu")
    alerts = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert alerts, "the reference model raises no alert on the sample: the comparison would prove nothing"
    return {"alerts": {a["id"]: a for a in alerts}, "summary": summary}


@pytest.fixture(scope="session")
def offline(reference: dict) -> dict[str, dict]:
    """Alert id -> alert of the no-fault reference."""
    return reference["alerts"]


@pytest.fixture(scope="session")
def labelled() -> set[str]:
    return labelled_sessions()
