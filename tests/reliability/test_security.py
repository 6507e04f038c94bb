"""9. Security:
  * SASL/SSL settings from the environment reach every Kafka client the code builds: each
    AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient in streams/ takes its arguments from
    streams.kafka_clients (checked on the source), and the worker's Faust app carries the
    credentials (built from env; the kwargs themselves are tested in tests/streams/test_kafka_clients.py);
  * the SASL password never appears in the output of `logad worker` / `logad scorer` (startup
    banner included, DEBUG logs), against a closed port and against the test broker (which does not
    speak SASL: the handshake fails and the error is printed);
  * weights and every other artifact load without pickle: no torch.load / pickle / jsonpickle /
    dill / joblib / marshal / shelve / unsafe yaml in logad/, streams/, training/, logad_cli/, and
    Drain3's (jsonpickle) persistence is never enabled;
  * the web / metrics servers bind to 127.0.0.1 by default (config and the Faust app; the listening
    sockets of running processes are checked in test_worker_faults);
  * no pickle codec on any topic: the worker's app, its topics, table and changelog use raw bytes
    (our orjson); the scorer and ingest use plain aiokafka clients with bytes.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from logad.config import Settings, WebConfig, load_settings
from tests.reliability.harness import MODEL, ROOT, free_port, record

pytestmark = [pytest.mark.reliability]

SECRET = "s3cr3t-value"
SOURCES = ("logad", "streams", "training", "logad_cli")
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
KWARG_BUILDERS = {"producer_kwargs", "consumer_kwargs", "admin_kwargs", "client_kwargs"}


def py_files() -> list[Path]:
    return sorted(f for d in SOURCES for f in (ROOT / d).rglob("*.py"))


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def sasl_env(**extra: str) -> dict[str, str]:
    return {"LOGAD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LOGAD_KAFKA_SASL_MECHANISM": "PLAIN",
            "LOGAD_KAFKA_SASL_USERNAME": "logad-svc", "LOGAD_KAFKA_SASL_PASSWORD": SECRET, **extra}


def test_every_kafka_client_is_built_from_the_settings() -> None:
    """Each aiokafka client / Faust app in the code gets `**<builder>(settings.kafka, ...)`."""
    found, bad = 0, []
    for f in py_files():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            splat = [k.value for k in node.keywords if k.arg is None]
            builders = {_name(v.func) for v in splat if isinstance(v, ast.Call)}
            if name in CLIENTS:
                found += 1
                if not builders & KWARG_BUILDERS:
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno} {name} without **<*_kwargs>(cfg)")
            elif name == "App" and isinstance(node.func, ast.Attribute) and _name(node.func.value) == "faust":
                found += 1
                if "faust_settings" not in builders:
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno} faust.App without **faust_settings(cfg)")
    assert found >= 8 and not bad, bad


@pytest.fixture(scope="module")
def worker_app(tmp_path_factory: pytest.TempPathFactory) -> faust.App:
    """The worker's Faust app built from SASL settings in the environment (nothing connects)."""
    from prometheus_client import CollectorRegistry

    from streams.app import build_app
    from streams.prometheus import WorkerMetrics

    s = load_settings(env=sasl_env(LOGAD_KAFKA_BOOTSTRAP_SERVERS="broker-a:9093"))
    app, _ = build_app(s, app_id="sec-test", model_dir=MODEL, datadir=tmp_path_factory.mktemp("faust"),
                       metrics=WorkerMetrics(CollectorRegistry()))
    return app


def test_sasl_env_reaches_the_worker_app(worker_app: faust.App) -> None:
    app = worker_app
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("logad-svc", SECRET, "PLAIN")
    assert [(u.host, u.port) for u in app.conf.broker] == [("broker-a", 9093)]
    assert SECRET not in repr(app.conf.broker_credentials)


def test_no_pickle_anywhere_in_the_code() -> None:
    forbidden_calls = {"torch.load", "torch.save", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.dump",
                       "pickle.dumps", "marshal.load", "marshal.loads", "yaml.load", "yaml.unsafe_load",
                       "joblib.load", "dill.load", "dill.loads", "shelve.open", "pd.read_pickle", "pandas.read_pickle",
                       "jsonpickle.decode", "np.load", "numpy.load"}
    forbidden_modules = {"pickle", "cPickle", "_pickle", "dill", "joblib", "jsonpickle", "marshal", "shelve", "cloudpickle"}
    bad = []
    for f in py_files():
        tree = ast.parse(f.read_text(), str(f))
        where = f.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad += [f"{where}:{node.lineno} import {a.name}" for a in node.names
                        if a.name.split(".")[0] in forbidden_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in forbidden_modules:
                bad.append(f"{where}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Call):
                dotted = ast.unparse(node.func)
                if dotted in forbidden_calls:
                    bad.append(f"{where}:{node.lineno} {dotted}(...)")
                if any(k.arg == "allow_pickle" for k in node.keywords):
                    bad.append(f"{where}:{node.lineno} allow_pickle=")
                if _name(node.func) == "TemplateMiner":  # Drain3 persists snapshots with jsonpickle
                    handler = [k.value for k in node.keywords if k.arg == "persistence_handler"]
                    if not (handler and isinstance(handler[0], ast.Constant) and handler[0].value is None):
                        bad.append(f"{where}:{node.lineno} TemplateMiner with a persistence handler")
        text = f.read_text()
        bad += [f"{where}: {m.group(0)!r}" for m in re.finditer(r"serializer\s*=\s*[\"'](pickle\w*|binary)[\"']", text)]
    assert not bad, bad
    # The weights/reference loaders are safetensors' (nothing executes on load).
    art, det = (ROOT / "logad/artifacts.py").read_text(), (ROOT / "logad/detector.py").read_text()
    assert "from safetensors.torch import load_file" in art and "from safetensors.torch import load_file" in det  # (lazy in artifacts)


def test_no_pickle_codec_on_any_topic_and_loopback_web(worker_app: faust.App) -> None:
    assert WebConfig().host == Settings().web.host == "127.0.0.1"
    app = worker_app  # built without any web setting: the defaults
    assert (app.conf.web_bind, app.conf.web_host) == ("127.0.0.1", "127.0.0.1")
    serializers = {("app", "key"): app.conf.key_serializer, ("app", "value"): app.conf.value_serializer}
    for name, t in app.tables.items():
        ct = t.changelog_topic
        serializers.update({(f"table {name}", "key"): t.key_serializer, (f"table {name}", "value"): t.value_serializer,
                            (ct.get_topic_name(), "key"): ct.key_serializer, (ct.get_topic_name(), "value"): ct.value_serializer})
    for name, agent in app.agents.items():
        ch = agent.channel
        for topic in getattr(ch, "topics", (name,)):
            serializers.update({(topic, "key"): ch.key_serializer, (topic, "value"): ch.value_serializer})
    bad = {k: v for k, v in serializers.items() if v not in ("raw", None)}
    assert not bad, f"non-raw codecs (pickle would execute on decode): {bad}"
    # The scorer's metrics server binds to web.host too.
    import inspect

    from streams import scorer_process as scorer

    assert "start_http_server(settings.web.scorer_port, addr=settings.web.host)" in inspect.getsource(scorer.run_scorer)
    record("9a security: clients, pickle, codecs, bind address", True, topics_checked=sorted({k[0] for k in serializers}),
           codecs=sorted({str(v) for v in serializers.values()}), web_bind=app.conf.web_bind)


def _run(which: str, bootstrap: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAD_")}
    env.update(sasl_env(LOGAD_KAFKA_BOOTSTRAP_SERVERS=bootstrap, LOGAD_LOGGING_LEVEL="DEBUG",
                        LOGAD_WEB_PORT=str(free_port()), LOGAD_WEB_SCORER_PORT=str(free_port()),
                        LOGAD_SCORER_DEVICE="cpu", LOGAD_SCORER_MODEL_DIR=str(MODEL)))
    args = [which] + (["--group", "sec-test"] if which == "scorer" else ["--app-id", "sec-test"])
    return subprocess.Popen([sys.executable, "-m", "logad_cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.kafka
@pytest.mark.timeout(180)
def test_secret_never_in_worker_or_scorer_output(kafka_bootstrap: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    procs = {(which, where): _run(which, addr) for which in ("worker", "scorer")
             for where, addr in (("closed port", closed), ("test broker", kafka_bootstrap))}
    lines = {}
    for (which, where), proc in procs.items():
        out, _ = proc.communicate(timeout=150)
        assert SECRET not in out, f"{which} ({where}) printed the SASL password:\n" + "\n".join(
            ln for ln in out.splitlines() if SECRET in ln)
        assert proc.returncode == 2 and out.strip().splitlines()[-1].startswith("error: "), f"{which} {where}: {out[-2000:]}"
        banner = [ln for ln in out.splitlines() if f"{which} starting:" in ln]
        assert banner and '"sasl_password":"***"' in banner[0] and '"sasl_username":"logad-svc"' in banner[0], out[:2000]
        lines[f"{which} / {where}"] = {"output_lines": len(out.splitlines()), "error": out.strip().splitlines()[-1]}
    record("9b security: SASL password absent from worker/scorer output (DEBUG logs)", True, runs=lines)
