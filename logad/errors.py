"""Error types of logad. Every user-facing failure is one of these, with a one-line message.

The CLI prints `error: <message>` and exits non-zero for any LogadError instead of a traceback.
"""

from __future__ import annotations


class LogadError(Exception):
    """Base class: a failure the user can act on; str(err) is a single actionable line."""


class ConfigError(LogadError):
    """A config file, environment variable or CLI override is malformed, unknown or mistyped."""


class ParseError(LogadError):
    """Input data (a log line, a sequence file) cannot be read."""


class ArtifactError(LogadError):
    """A model bundle, vocab or thresholds file is missing, corrupted or inconsistent."""


class BrokerError(LogadError):
    """Kafka cannot be reached or refuses us."""
