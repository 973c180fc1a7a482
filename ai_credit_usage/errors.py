"""Errors whose message is written for the chat user (and so for the model relaying it) as it is.

UserFacingError          one sentence saying what went wrong and what to do; never internals, never secrets
 ├── WindowError         (window.py) a date argument the caller can fix            outcome "invalid"
 ├── TrendError          (trend.py) a time_zone or period count the caller can fix  outcome "invalid"
 ├── MeterConfigError    (meter.py) the meter cannot answer safely, e.g. it has no tenant dimension
 └── OpenMeterError      (openmeter.py) OpenMeter was unreachable, slow, refused us or answered nonsense
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Raised anywhere below the tools; the tool turns it into an `isError` result with exactly this text."""

    # The audit/telemetry outcome: "error" marks the tool span as failed; a caller's mistake is "invalid" (like a
    # refusal, it is not the server failing, so the span keeps an unset status).
    outcome = "error"
