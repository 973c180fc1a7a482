"""One tool call's state, from the gate to the answer: who asked what, for which window, and how it went.

The gate creates it, owns it and ends it (the audit line and the telemetry both read it then); the pipeline fills in
the window, the rows and the size while it answers. It lives in one context variable for the call's duration.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from ai_credit_usage.runtime.errors import Outcome


@dataclass(frozen=True)
class Caller:
    """Who is asking: the tenant they act for and their roles, as access/ established them."""

    tenant: str
    roles: tuple[str, ...]


@dataclass
class ToolCall:
    tool: str
    tenant: str | None  # as the headers claimed it, even for a refused call
    role: str | None
    caller: Caller | None = None  # set once the gate let the call through
    window_from: str | None = None
    window_to: str | None = None
    rows: int | None = None
    bytes: int | None = None
    outcome: Outcome = "ok"
    reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    span: Span | None = None  # the call's `tool <name>` span

    def fail(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


current_call: ContextVar[ToolCall | None] = ContextVar("current_call", default=None)
