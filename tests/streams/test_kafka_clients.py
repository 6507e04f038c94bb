"""streams/kafka_clients.py without a broker: settings from env reach every client; secrets stay out
of logs; an unreachable broker gives one actionable line."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess

import faust
import pytest
from faust.types.auth import AuthProtocol

from logad.config import KafkaConfig, load_settings, redacted
from logad.errors import BrokerError, ConfigError
from streams import kafka_clients as kc

SECRET = "s3cr3t-Pa55word"


def sasl_env(**extra: str) -> dict[str, str]:
    return {
        "LOGAD_KAFKA_BOOTSTRAP_SERVERS": "broker-a:9093, broker-b:9094",
        "LOGAD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LOGAD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LOGAD_KAFKA_SASL_USERNAME": "logad-svc",
        "LOGAD_KAFKA_SASL_PASSWORD": SECRET,
        **extra,
    }


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed cert/key (serves as CA and client cert) made with the openssl CLI."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not found")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return {"LOGAD_KAFKA_SSL_CAFILE": str(cert), "LOGAD_KAFKA_SSL_CERTFILE": str(cert),
            "LOGAD_KAFKA_SSL_KEYFILE": str(key)}


def test_sasl_env_reaches_aiokafka_kwargs() -> None:
    cfg = load_settings(env=sasl_env()).kafka
    for kw in (kc.producer_kwargs(cfg), kc.consumer_kwargs(cfg, group_id="g"), kc.admin_kwargs(cfg)):
        assert kw["bootstrap_servers"] == ["broker-a:9093", "broker-b:9094"]
        assert kw["security_protocol"] == "SASL_PLAINTEXT"
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kw["sasl_plain_username"] == "logad-svc"
        assert kw["sasl_plain_password"] == SECRET
        assert "ssl_context" not in kw
    assert kc.consumer_kwargs(cfg, group_id="g")["enable_auto_commit"] is False


def test_sasl_env_reaches_faust_credentials() -> None:
    cfg = load_settings(env=sasl_env()).kafka
    settings = kc.faust_settings(cfg)
    assert settings["broker"] == "kafka://broker-a:9093,kafka://broker-b:9094"
    creds = settings["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("logad-svc", SECRET, "SCRAM-SHA-512")
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert SECRET not in repr(creds)
    # And faust parses our broker string into the two servers.
    app = faust.App("kc-test", **settings)
    assert [(u.host, u.port) for u in app.conf.broker] == [("broker-a", 9093), ("broker-b", 9094)]


def test_sasl_ssl_and_mtls_build_a_verifying_context(tls_files: dict[str, str]) -> None:
    cfg = load_settings(env=sasl_env(LOGAD_KAFKA_SECURITY_PROTOCOL="SASL_SSL", **tls_files)).kafka
    kw = kc.producer_kwargs(cfg)
    ctx = kw["ssl_context"]
    assert kw["security_protocol"] == "SASL_SSL"
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # our CA file, not only the system store
    creds = kc.faust_credentials(cfg)
    assert creds.protocol is AuthProtocol.SASL_SSL and creds.ssl_context is not None

    ssl_only = load_settings(env={"LOGAD_KAFKA_SECURITY_PROTOCOL": "SSL", **tls_files}).kafka
    assert kc.client_kwargs(ssl_only)["security_protocol"] == "SSL"
    creds = kc.faust_credentials(ssl_only)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol is AuthProtocol.SSL


def test_plaintext_has_no_credentials() -> None:
    cfg = KafkaConfig()
    assert kc.faust_credentials(cfg) is None
    assert "broker_credentials" not in kc.faust_settings(cfg)
    assert kc.client_kwargs(cfg)["security_protocol"] == "PLAINTEXT"


@pytest.mark.parametrize("env, fragment", [
    ({"LOGAD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
    ({"LOGAD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "sasl_username"),
    ({"LOGAD_KAFKA_SASL_USERNAME": "u"}, "PLAINTEXT"),
    ({**sasl_env(), "LOGAD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism"),
    ({"LOGAD_KAFKA_SECURITY_PROTOCOL": "SSL", "LOGAD_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "ssl_cafile"),
])
def test_inconsistent_security_settings_are_config_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:  # when the settings load (choices) or when a client is built
        kc.client_kwargs(load_settings(env=env).kafka)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert SECRET not in str(e.value)


def test_password_never_in_repr_str_or_redacted() -> None:
    settings = load_settings(env=sasl_env())
    assert settings.kafka.sasl_password == SECRET
    for text in (repr(settings), str(settings), repr(settings.kafka), str(settings.kafka),
                 repr(redacted(settings)), str(kc.faust_credentials(settings.kafka))):
        assert SECRET not in text
    assert redacted(settings)["kafka"]["sasl_password"] == "***"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_broker_closed_port_is_one_line() -> None:
    port = _closed_port()
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(BrokerError) as e:
        asyncio.run(kc.check_broker(cfg, timeout_s=2.0))
    msg = str(e.value)
    assert "\n" not in msg
    assert f"127.0.0.1:{port}" in msg and "connection refused" in msg
    assert "scripts/kafka-local start" in msg and "LOGAD_KAFKA_BOOTSTRAP_SERVERS" in msg


def test_check_broker_error_hides_the_password() -> None:
    port = _closed_port()
    cfg = load_settings(env=sasl_env(LOGAD_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")).kafka
    with pytest.raises(BrokerError) as e:
        asyncio.run(kc.check_broker(cfg, timeout_s=2.0))
    assert SECRET not in str(e.value) and SECRET not in repr(e.value)


def test_bootstrap_list_defaults_port_and_strips_scheme() -> None:
    cfg = KafkaConfig(bootstrap_servers="kafka://a, b:19092,,")
    assert kc.bootstrap_list(cfg) == ["a:9092", "b:19092"]
    with pytest.raises(ConfigError):
        kc.bootstrap_list(KafkaConfig(bootstrap_servers=" , "))

