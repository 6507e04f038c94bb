"""docker-compose.yml / docker-compose.cpu.yml / Dockerfile: static checks (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from logad.config import env_settings, load_settings

REPO = Path(__file__).resolve().parents[1]


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that understands Compose's `!reset` merge tag (used by the CPU override)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: {"__reset__": True})


def load(name: str) -> dict[str, Any]:
    return yaml.load((REPO / name).read_text(), Loader=ComposeLoader)  # noqa: S506 (SafeLoader subclass)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


def env_of(service: dict[str, Any], host: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as the container sees it, given the host's variables: ${VAR:-default}
    interpolated, a name without value passed through from the host (left out when the host lacks it)."""
    host = host or {}
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    out = {}
    for k, v in env.items():
        if v is None:
            if k in host:
                out[k] = host[k]
            continue
        out[k] = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: host.get(m.group(1)) or m.group(2), str(v))
    return out


def test_kafka_is_official_single_node_kraft(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = env_of(kafka)
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:29093"
    assert "CONTROLLER://:29093" in env["KAFKA_LISTENERS"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "INTERNAL://kafka:19092" in advertised and "HOST://localhost:9092" in advertised
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "127.0.0.1:9092:9092" in kafka["ports"]


def test_kafka_healthcheck_is_an_api_round_trip(compose: dict[str, Any]) -> None:
    check = compose["services"]["kafka"]["healthcheck"]
    test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test and "kafka:19092" in test
    assert "| grep" in test  # the tool can print an error and still look alive: grep decides


@pytest.mark.parametrize("name", ["worker", "scorer"])
def test_app_services_wait_for_a_healthy_broker(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svc["depends_on"]["init-topics"]["condition"] == "service_completed_successfully"
    assert svc["command"] == ["logad", name]
    assert svc["build"] == "." and (REPO / "Dockerfile").is_file()
    env = env_of(svc)
    assert env["LOGAD_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert all(p.startswith("127.0.0.1:") for p in svc.get("ports", [])), svc.get("ports")


APP_SERVICES = ("init-topics", "worker", "scorer")


def test_app_env_names_are_valid_settings(compose: dict[str, Any]) -> None:
    """A misspelt LOGAD_ variable is a ConfigError at startup: catch it here instead."""
    for host in ({}, {"LOGAD_MODEL": "myapp", "LOGAD_TOPICS_RAW": "logs.x"}):
        for name in APP_SERVICES:
            env = env_of(compose["services"][name], host)
            names = [k for k in env if k.startswith("LOGAD_")]
            assert set(env_settings(env)) == {k[len("LOGAD_"):].lower().replace("_", ".", 1) for k in names}
            settings = load_settings(env=env)
            assert settings.kafka.bootstrap_servers == "kafka:19092"
            assert settings.topics.partitions == 4
    scorer = load_settings(env=env_of(compose["services"]["scorer"])).scorer
    assert scorer.device == "auto" and scorer.model_dir.startswith("/app/artifacts/models/")


def test_one_variable_picks_the_bundle_and_the_raw_topic(compose: dict[str, Any]) -> None:
    """LOGAD_MODEL names the bundle of init-topics, worker and scorer alike (the scorer refuses
    windows of another vocab); the raw topic is the bundle source's unless LOGAD_TOPICS_RAW says."""
    from streams.topics import raw_topic

    for host, model_dir, raw in (({}, "/app/artifacts/models/hdfs", "logs.hdfs"),
                                 ({"LOGAD_MODEL": "myapp"}, "/app/artifacts/models/myapp", "logs.myapp"),
                                 ({"LOGAD_MODEL": "myapp", "LOGAD_TOPICS_RAW": "shipper.out"},
                                  "/app/artifacts/models/myapp", "shipper.out")):
        source = Path(model_dir).name  # the bundle's format name (a bundle trained as "myapp")
        for name in APP_SERVICES:
            settings = load_settings(env=env_of(compose["services"][name], host))
            assert settings.scorer.model_dir == model_dir, name
            assert raw_topic(settings, source) == raw, name
            assert settings.drift.decisions_file == f"/app/artifacts/decisions/{source}.jsonl", name
    for name in APP_SERVICES:  # every app service sees the mounted bundles
        assert "./artifacts/models:/app/artifacts/models:ro" in compose["services"][name]["volumes"], name
        if name in ("worker", "scorer"):  # the scorer writes promotions of pending statements there
            assert "./artifacts/decisions:/app/artifacts/decisions" in compose["services"][name]["volumes"], name


def test_scorer_reserves_a_gpu_and_cpu_override_drops_it(compose: dict[str, Any]) -> None:
    devices = compose["services"]["scorer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in compose["services"]["worker"]
    cpu = load("docker-compose.cpu.yml")["services"]["scorer"]
    assert cpu["deploy"] == {"__reset__": True}
    assert env_of(cpu)["LOGAD_SCORER_DEVICE"] == "cpu"
    env_settings(env_of(cpu))


def test_init_topics_creates_what_the_worker_reads(compose: dict[str, Any]) -> None:
    """Topics come from `logad create-topics` with the workers' own settings (names, partitions, the
    bundle's raw topic with LogAppendTime), not from a second list that could drift."""
    svc = compose["services"]["init-topics"]
    assert svc["command"] == ["logad", "create-topics", "--source", "all"]
    assert svc["image"] == compose["services"]["worker"]["image"] and svc["build"] == "."
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svc["restart"] == "no"
    for name in ("worker", "scorer"):
        host = {"LOGAD_MODEL": "m", "LOGAD_TOPICS_RAW": "t"}
        app, init = env_of(compose["services"][name], host), env_of(svc, host)
        for k in ("LOGAD_KAFKA_BOOTSTRAP_SERVERS", "LOGAD_TOPICS_PARTITIONS", "LOGAD_TOPICS_RAW",
                  "LOGAD_SCORER_MODEL_DIR"):
            assert app[k] == init[k], (name, k)
        assert {k for k in app if k.startswith("LOGAD_TOPICS")} == {k for k in init if k.startswith("LOGAD_TOPICS")}


def test_dockerfile_installs_the_lock_file_with_torch_in_its_own_layer() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", text, re.M | re.S)
    copies = [m.start() for m in re.finditer(r"^COPY ", text, re.M)]
    lock_copy = text.index("COPY requirements.lock")
    code_copy = text.index("COPY logad ")
    torch_run = text.index("^torch==")
    rest_run = text.index("pip install -r")
    package_run = text.index("pip install --no-deps .")
    # torch first, then the rest of the lock, then the code: a code edit keeps both dependency layers
    assert lock_copy == min(copies) and lock_copy < torch_run < rest_run < code_copy < package_run
    assert len(runs) >= 3
    lock = (REPO / "requirements.lock").read_text()
    assert re.search(r"^torch==\S+$", lock, re.M) and "faust-streaming==0.15.3" in lock


def test_restart_policies_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "worker", "scorer", "notify"):
        assert services[name]["restart"] == "unless-stopped", name
    for name, port in (("worker", 6066), ("scorer", 6067), ("notify", 6068)):
        hc = services[name]["healthcheck"]
        assert f"127.0.0.1:{port}/metrics" in " ".join(hc["test"]), name
        assert f"127.0.0.1:{port}:{port}" in services[name]["ports"], name
    notify = services["notify"]
    assert notify["command"] == ["logad", "notify"] and notify["profiles"] == ["notify"]
    env = env_of(notify, {"LOGAD_NOTIFY_ALERTMANAGER_URL": "http://am:9093", "LOGAD_NOTIFY_PAGERDUTY_ROUTING_KEY": "k"})
    s = load_settings(env=env)
    assert s.notify.alertmanager_url == "http://am:9093" and s.notify.pagerduty_routing_key == "k"
    assert s.notify.metrics_port == 6068 and s.web.host == "0.0.0.0"
    assert "LOGAD_NOTIFY_PAGERDUTY_ROUTING_KEY" not in env_of(notify)  # never a value in the file
