import subprocess
import sys

import pytest

from logad.config import KafkaConfig, Settings, load_settings, parse_overrides, redacted
from logad.errors import ConfigError


def test_defaults_and_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[kafka]\nbootstrap_servers = "file:1"\nclient_id = "from-file"\n[topics]\npartitions = 8\n')
    env = {"LOGAD_KAFKA_BOOTSTRAP_SERVERS": "env:2", "LOGAD_SESSIONS_GAP_S": "12.5"}
    s = load_settings(f, env=env, cli={"kafka.bootstrap_servers": "cli:3"})
    assert s.kafka.bootstrap_servers == "cli:3"  # CLI > env > file
    assert s.kafka.client_id == "from-file"  # file > default
    assert s.topics.partitions == 8 and s.sessions.gap_s == 12.5
    assert load_settings(None, env={}) == Settings()


@pytest.mark.parametrize("text,match", [
    ("[kafka]\nbootstrap = 'x'\n", "unknown setting 'bootstrap'"),
    ("[kafak]\nbootstrap_servers = 'x'\n", "unknown setting 'kafak'"),
    ("[topics]\npartitions = 'many'\n", "expected int"),
    ("[kafka\nbootstrap_servers = 'x'\n", "not valid TOML"),
    ("[scorer]\nearly_alerts = 3\n", "expected bool"),
])
def test_bad_files_name_the_key(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_settings(f, env={})
    assert "\n" not in str(e.value)


def test_bad_env_and_cli():
    with pytest.raises(ConfigError, match="LOGAD_KAFKA_NOPE"):
        load_settings(None, env={"LOGAD_KAFKA_NOPE": "1"})
    with pytest.raises(ConfigError, match="expected float"):
        load_settings(None, env={"LOGAD_SESSIONS_GAP_S": "soon"})
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_overrides(["kafka.bootstrap_servers"])
    with pytest.raises(ConfigError, match="missing.toml does not exist"):
        load_settings("missing.toml", env={})


def test_secrets_redacted():
    s = Settings(kafka=KafkaConfig(sasl_username="u", sasl_password="hunter2"))
    assert "hunter2" not in repr(s)
    assert redacted(s)["kafka"]["sasl_password"] == "***"


@pytest.mark.parametrize("args,match", [
    (["--set", "kafka.nope=1", "config"], "unknown setting 'nope'"),
    (["--config", "/nonexistent.toml", "config"], "does not exist"),
])
def test_cli_gives_one_line_errors(args, match):
    r = subprocess.run([sys.executable, "-m", "logad_cli.main", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("key, value, message", [
    ("scorer.device", "gpu", "scorer.device must be one of"),
    ("topics.partitions", "-3", "topics.partitions must be in"),
    ("topics.replication", "0", "topics.replication must be in"),
    ("kafka.security_protocol", "BOGUS", "kafka.security_protocol must be one of"),
    ("kafka.sasl_mechanism", "MD5", "kafka.sasl_mechanism must be one of"),
    ("kafka.sasl_mechanism", "PLAIN", "needs kafka.security_protocol SASL_SSL"),
    ("kafka.sasl_mechanism", "GSSAPI", "kafka.sasl_mechanism must be one of"),
    ("logging.level", "LOUD", "logging.level must be one of"),
    ("web.port", "70000", "web.port must be in"),
    ("web.port", "6067", "must differ"),
    ("sessions.gap_s", "0", "sessions.gap_s must be"),
    ("ingest.batch_size", "0", "ingest.batch_size must be"),
    ("guard.max_unknown_rate", "1.5", "guard.max_unknown_rate must be in"),
])
def test_choices_and_ranges_are_checked_when_loaded(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, cli={key: value})


def test_cross_field_checks_see_every_layer(tmp_path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\n')
    s = load_settings(f, env={"LOGAD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert load_settings(env={}, cli={"logging.level": "debug"}).logging.level == "DEBUG"


def test_version_flag() -> None:
    from logad import __version__

    r = subprocess.run([sys.executable, "-m", "logad_cli.main", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"logad {__version__}"
