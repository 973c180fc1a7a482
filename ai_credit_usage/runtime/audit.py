"""One structured audit line per tool call: who asked what, for which window, and how it went.

Credit values and user names never go in it: the line says how big the answer was, not what it said.
"""

from __future__ import annotations

import json
import logging

from ai_credit_usage.runtime.tool_call import ToolCall
from ai_credit_usage.runtime.window import format_utc, utc_now

audit_logger = logging.getLogger("ai_credit_usage.audit")
_FIELDS = ("tool", "tenant", "role", "window_from", "window_to", "rows", "bytes", "outcome", "reason")


def audit(call: ToolCall) -> None:
    line: dict[str, object] = {"event": "tool_call", "time": format_utc(utc_now())}
    line.update({name: getattr(call, name) for name in _FIELDS})
    line["duration_ms"] = round(call.seconds * 1000, 1)
    audit_logger.info(json.dumps(line, ensure_ascii=False))
