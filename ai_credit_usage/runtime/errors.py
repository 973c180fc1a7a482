"""Errors whose message is written for the chat user (and so for the model relaying it) as it is.

UserFacingError          one sentence saying what went wrong and what to do; never internals, never secrets
 ├── WindowError         (window.py) a date argument the caller can fix            outcome "invalid"
 ├── TrendError          (trend.py) a time_zone or period count the caller can fix  outcome "invalid"
 ├── MeterConfigError    (openmeter/meter.py) the meter cannot answer safely, e.g. it has no tenant dimension
 └── OpenMeterError      (openmeter/http.py) OpenMeter was unreachable, slow, refused us or answered nonsense
"""

from __future__ import annotations

from typing import Literal

# How a tool call ended, for the audit line and the telemetry.
Outcome = Literal["ok", "refused", "invalid", "error", "timeout"]


class UserFacingError(Exception):
    """Raised anywhere below the tools; the tool turns it into an `isError` result with exactly this text."""

    # The audit/telemetry outcome: "error" marks the tool span as failed; a caller's mistake is "invalid" (like a
    # refusal, it is not the server failing, so the span keeps an unset status).
    outcome: Outcome = "error"


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a task group: a user-facing one if any, else the first (cancellations are echoes)."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    return next((e for e in leaves if isinstance(e, UserFacingError)), leaves[0])


def shown(value: object, limit: int = 40) -> str:
    """A caller's value as a sentence quotes it: its repr, cut to `limit` characters with an ellipsis. A refusal
    names the parameter and this short start, never the whole value (a 1 MB from_date is not a 1 MB sentence)."""
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
