"""8. Bad artifacts: `logad scorer` (and `logad worker`, which reads the manifest and vocab) refuse to
start with a one-line reason: exit code 2, `error: <reason>` as the only error line, no traceback.

Every case is a copy of the shipped HDFS bundle with one thing broken. The processes get a closed
broker port: a bundle that wrongly passed would fail later on the broker, with another message.
The CLI cases run as real processes (in parallel); the rest go through Detector.load in-process
(what `logad scorer` calls first), which is where every check lives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from logad.errors import ArtifactError
from tests.reliability.harness import MODEL, ROOT, free_port, record

pytestmark = [pytest.mark.reliability, pytest.mark.slow]  # ~10 s (4 processes)

OTHER = ROOT / "artifacts/models/openstack"


def _truncate(p: Path, keep: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:int(len(data) * keep)])


def _rehash_manifest(d: Path, key: str, file: str) -> None:
    """Make the manifest agree with a (broken) file, as a careless rebuild or a crafted bundle would."""
    from logad.artifacts import sha256_file

    m = orjson.loads((d / "manifest.json").read_bytes())
    m[key]["sha256"] = sha256_file(d / file)
    (d / "manifest.json").write_bytes(orjson.dumps(m))


def truncated_weights(d: Path) -> None:
    _truncate(d / "weights.safetensors")


def truncated_weights_rehashed(d: Path) -> None:
    _truncate(d / "weights.safetensors")
    _rehash_manifest(d, "weights", "weights.safetensors")


def vocab_of_other_model(d: Path) -> None:  # the OpenStack vocab in the HDFS bundle, manifest updated
    shutil.copy(OTHER / "template_vocab.json", d / "template_vocab.json")
    _rehash_manifest(d, "vocab", "template_vocab.json")


def vocab_swapped(d: Path) -> None:  # ... manifest not updated
    shutil.copy(OTHER / "template_vocab.json", d / "template_vocab.json")


def threshold_edited(d: Path) -> None:  # a hand-raised threshold would silence alerts
    th = orjson.loads((d / "thresholds.json").read_bytes())
    th["values"] = {k: v + 100.0 for k, v in th["values"].items()}
    (d / "thresholds.json").write_bytes(orjson.dumps(th))


def thresholds_of_other_model(d: Path) -> None:
    shutil.copy(OTHER / "thresholds.json", d / "thresholds.json")


def thresholds_truncated(d: Path) -> None:
    _truncate(d / "thresholds.json")


def thresholds_missing(d: Path) -> None:
    (d / "thresholds.json").unlink()


def reference_truncated(d: Path) -> None:
    _truncate(d / "reference.safetensors")


def config_does_not_fit_weights(d: Path) -> None:
    m = orjson.loads((d / "manifest.json").read_bytes())
    m["model_config"]["n_layer"] += 1
    (d / "manifest.json").write_bytes(orjson.dumps(m))


def manifest_garbage(d: Path) -> None:
    (d / "manifest.json").write_bytes(b"\x00\xff not json")


# (case, how to break the bundle, a fragment of the one-line reason)
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated weights", truncated_weights, "sha256 differs from the manifest (corrupted or replaced weights)"),
    ("truncated weights, manifest rehashed", truncated_weights_rehashed, "unreadable safetensors file"),
    ("vocab/model mismatch", vocab_of_other_model, "but the model was built for"),
    ("vocab swapped", vocab_swapped, "vocab does not belong to this model"),
    ("threshold edited", threshold_edited, "thresholds file was modified"),
    ("thresholds of another model", thresholds_of_other_model, "calibrated for other weights"),
    ("thresholds truncated", thresholds_truncated, "is not valid JSON"),
    ("thresholds missing", thresholds_missing, "thresholds file"),
    ("reference truncated", reference_truncated, "unreadable reference"),
    ("config does not fit weights", config_does_not_fit_weights, "weights do not fit the manifest's model config"),
    ("manifest garbage", manifest_garbage, "is not valid JSON"),
]
CLI_CASES = {"truncated weights", "vocab/model mismatch", "threshold edited"}


def broken_bundle(tmp: Path, name: str, breaker: Callable[[Path], None]) -> Path:
    d = tmp / name.replace(" ", "_").replace("/", "_").replace(",", "")
    shutil.copytree(MODEL, d)
    breaker(d)
    return d


def run_cli(which: str, bundle: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
    env.update(LOGAD_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", LOGAD_WEB_PORT=str(free_port()),
               LOGAD_WEB_SCORER_PORT=str(free_port()), LOGAD_SCORER_DEVICE="cpu")
    args = ["scorer", "--model", str(bundle)] if which == "scorer" else ["worker", "--model", str(bundle)]
    return subprocess.Popen([sys.executable, "-m", "logad_cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_refusal(proc: subprocess.Popen, fragment: str, what: str) -> str:
    out, err = proc.communicate(timeout=120)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, f"{what}: exit {proc.returncode}\n{err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, f"{what}: traceback\n{err[-3000:]}"
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], f"{what}: {err[-2000:]}"
    assert fragment in errors[0], f"{what}: {errors[0]!r} does not say {fragment!r}"
    return errors[0]


@pytest.mark.timeout(240)
def test_bad_artifacts_are_refused_in_one_line(tmp_path: Path) -> None:
    from logad.detector import Detector

    reasons: dict[str, str] = {}
    procs = []
    for name, breaker, fragment in CASES:
        d = broken_bundle(tmp_path, name, breaker)
        if name in CLI_CASES:
            procs.append((f"scorer: {name}", run_cli("scorer", d), fragment))
            if name == "vocab/model mismatch":  # the worker checks the vocab against the manifest
                w = broken_bundle(tmp_path, "worker vocab swapped", vocab_swapped)
                procs.append(("worker: vocab swapped", run_cli("worker", w),
                              "vocab does not belong to this model"))
        with pytest.raises(ArtifactError) as e:
            Detector.load(d, "cpu")
        msg = str(e.value)
        assert fragment in msg and "\n" not in msg, f"{name}: {msg!r}"
        reasons[name] = msg.replace(str(tmp_path), "<tmp>")
    for what, proc, fragment in procs:
        reasons[what] = check_refusal(proc, fragment, what).replace(str(tmp_path), "<tmp>")
    record("8 bad artifacts refused", True, cases=len(CASES), cli_processes=len(procs), reasons=reasons)
