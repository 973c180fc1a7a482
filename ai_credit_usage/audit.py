"""One structured audit line per tool call: who asked what, for which window, and how it went.

Credit values and user names never go in it: the line says how big the answer was, not what it said.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

from ai_credit_usage.telemetry import record_tool_call
from ai_credit_usage.window import format_utc, utc_now

audit_logger = logging.getLogger("ai_credit_usage.audit")


@dataclass
class ToolCallRecord:
    tool: str
    tenant: str | None
    role: str | None
    window_from: str | None = None
    window_to: str | None = None
    rows: int | None = None
    bytes: int | None = None
    outcome: str = "ok"
    reason: str | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    def fail(self, outcome: str, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    def emit(self) -> None:
        fields = {k: v for k, v in asdict(self).items() if k != "started"}
        line = {"event": "tool_call", "time": format_utc(utc_now()), **fields}
        seconds = time.perf_counter() - self.started
        line["duration_ms"] = round(seconds * 1000, 1)
        audit_logger.info(json.dumps(line, ensure_ascii=False))
        record_tool_call(self, seconds)  # the same facts as span attributes and metrics


# Set by the server's gate for one tool call; the report fills in window, rows, bytes and outcome.
current_record: ContextVar[ToolCallRecord | None] = ContextVar("current_record", default=None)
