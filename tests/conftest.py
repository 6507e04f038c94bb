"""Shared pytest fixtures. Fixture code lives in helper modules; this file only registers them."""

from tests.kafka_fixture import kafka_bootstrap, kafka_config, kafka_topics  # noqa: F401
