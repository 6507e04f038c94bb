"""Raw topics per source: topics.raw (a template with {source}) and topics.raw_by_source, from TOML,
environment and --set, with clear errors; the partition plan of what the worker creates."""

from __future__ import annotations

from pathlib import Path

import pytest

from logad.config import load_settings
from logad.errors import ConfigError
from streams.topics import partition_plan, raw_topic


def test_raw_topic_template_and_overrides(tmp_path: Path) -> None:
    s = load_settings(env={})
    assert [raw_topic(s, src) for src in ("hdfs", "openstack", "myapp")] == ["logs.hdfs", "logs.openstack", "logs.myapp"]
    toml = tmp_path / "c.toml"
    toml.write_text('[topics]\nraw = "in.{source}.lines"\n[topics.raw_by_source]\nmyapp = "shipper.myapp"\n')
    s = load_settings(toml, env={})
    assert raw_topic(s, "myapp") == "shipper.myapp" and raw_topic(s, "hdfs") == "in.hdfs.lines"
    s = load_settings(toml, env={"LOGAD_TOPICS_RAW_BY_SOURCE": "myapp=logs.m, hdfs=logs.h"})
    assert s.topics.raw_by_source == {"myapp": "logs.m", "hdfs": "logs.h"}  # env replaces the file's table
    s = load_settings(toml, env={}, cli={"topics.raw_by_source": "myapp=logs.x", "topics.raw": "fixed"})
    assert raw_topic(s, "myapp") == "logs.x" and raw_topic(s, "other") == "fixed"  # no {source}: one topic
    assert load_settings(env={}, cli={"topics.raw_by_source": ""}).topics.raw_by_source == {}


@pytest.mark.parametrize(("env", "message"), [
    ({"LOGAD_TOPICS_RAW_BY_SOURCE": "myapp"}, "name=value pairs"),
    ({"LOGAD_TOPICS_RAW_BY_SOURCE": "a=b,=c"}, "name=value pairs"),
    ({"LOGAD_TOPICS_RAW_BY_SOURCE": "a="}, "name=value pairs"),
])
def test_raw_by_source_errors_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"raw_by_source.*{message}"):
        load_settings(env=env)


def test_raw_by_source_toml_must_be_a_table_of_strings(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[topics]\nraw_by_source = 3\n")
    with pytest.raises(ConfigError, match="raw_by_source"):
        load_settings(toml, env={})
    toml.write_text("[topics.raw_by_source]\nmyapp = [1]\n")
    with pytest.raises(ConfigError, match="raw_by_source.myapp"):
        load_settings(toml, env={})


def test_invalid_topic_names_are_config_errors() -> None:
    s = load_settings(env={}, cli={"topics.raw": "logs/{source}"})
    with pytest.raises(ConfigError, match="not a valid Kafka topic name"):
        raw_topic(s, "hdfs")
    s = load_settings(env={}, cli={"topics.raw_by_source": "x=bad topic"})
    with pytest.raises(ConfigError, match=r"raw_by_source\['x'\]"):
        raw_topic(s, "x")


def test_partition_plan_raw_topics_get_one_partition() -> None:
    s = load_settings(env={})
    plan = partition_plan(s, ["logs.myapp"])
    assert plan["logs.myapp"] == 1 and plan[s.topics.windows] == s.topics.partitions
