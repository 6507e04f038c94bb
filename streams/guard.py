"""The input guard in the stream: is the raw input what the deployed format and model expect?

    ingest batch -> per raw topic (lines, unparsed lines, parsed records, records of no template)
      -> logad.guard.RollingHealth over the last guard.window_lines lines of that topic -> Verdict
      -> bad ("unparsed": wrong log format?  "unknown": wrong model?):
           metrics logad_input_mismatch{source,topic,problem} = 1 and the rates (streams/prometheus.py),
           an ERROR log with the rates (at most every LOG_EVERY_S per topic), and every events bundle
           of that topic carries the problem (`g`) -> the session stage marks the windows it emits
           meanwhile (`hold`) -> the scorer publishes their scores but no alerts
           (logad_alerts_held_total{reason}); healthy again: alerts flow again.
With the wrong format or model every session looks anomalous: held alerts, one loud error and a
metric beat thousands of false alerts.
"""

from __future__ import annotations

import logging

from logad.config import GuardConfig
from logad.guard import RollingHealth, Verdict

log = logging.getLogger("logad.guard")

LOG_EVERY_S = 30.0  # an ongoing problem is logged again this often (per raw topic)
HINTS = {"unparsed": "most lines do not parse with the deployed log format",
         "unknown": "most parsed lines match no template of the deployed model"}


class StreamGuard:
    """RollingHealth per raw topic of one source (log format); pure apart from its logs."""

    def __init__(self, cfg: GuardConfig, source: str) -> None:
        self.cfg = cfg
        self.source = source
        self.health: dict[str, RollingHealth] = {}
        self.verdicts: dict[str, Verdict] = {}  # raw topic -> latest verdict
        self._logged: dict[str, float] = {}  # raw topic -> when its problem was last logged

    def add(self, topic: str, lines: int, unparsed: int, records: int, unknown: int, now: float) -> Verdict:
        """One batch's counts for a raw topic -> the topic's verdict (logged when bad)."""
        h = self.health.get(topic)
        if h is None:
            h = self.health[topic] = RollingHealth(self.cfg)
        v = h.add(lines, unparsed, records, unknown)
        before = self.verdicts.get(topic)
        self.verdicts[topic] = v
        if v.problem:
            changed = before is None or before.problem != v.problem
            if changed or now - self._logged.get(topic, float("-inf")) >= LOG_EVERY_S:
                self._logged[topic] = now
                log.error("input mismatch on %s (source %s): %s: %.1f%% of the last %d lines unparsed "
                          "(limit %g), %.1f%% of parsed lines of no known template (limit %g): wrong format or "
                          "model? Alerts are held until the input fits again.", topic, self.source,
                          HINTS[v.problem], 100 * v.unparsed_rate, v.lines, self.cfg.max_unparsed_rate,
                          100 * v.unknown_rate, self.cfg.max_unknown_rate,
                          extra={"guard": v.as_dict(), "raw_topic": topic, "source": self.source})
        elif before is not None and before.problem:
            self._logged.pop(topic, None)
            log.warning("input on %s fits again (%.1f%% unparsed, %.1f%% unknown over %d lines): alerts resume",
                        topic, 100 * v.unparsed_rate, 100 * v.unknown_rate, v.lines)
        return v

    def problem(self, topic: str) -> str:
        v = self.verdicts.get(topic)
        return v.problem if v is not None else ""
