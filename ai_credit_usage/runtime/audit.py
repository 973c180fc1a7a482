"""One structured audit line per tool call: who asked what, for which window, and how it went.

Credit values and user names never go in it: the line says how big the answer was, not what it said.
"""

from __future__ import annotations

import json
import logging
import re

from ai_credit_usage.runtime.tool_call import ToolCall
from ai_credit_usage.runtime.window import format_utc, utc_now

audit_logger = logging.getLogger("ai_credit_usage.audit")
_FIELDS = ("tool", "tenant", "role", "window_from", "window_to", "rows", "bytes", "outcome", "reason")
# What JSON leaves raw but a log reader may take as a line break (NEL, U+2028, U+2029: Python's splitlines, some
# viewers) or a terminal control (DEL, C1 such as CSI); the tenant and role headers can carry them (obs-text bytes).
_UNSAFE_IN_LINE = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def audit(call: ToolCall) -> None:
    line: dict[str, object] = {"event": "tool_call", "time": format_utc(utc_now())}
    line.update({name: getattr(call, name) for name in _FIELDS})
    line["duration_ms"] = round(call.seconds * 1000, 1)
    audit_logger.info(one_line_json(line))


def one_line_json(value: object) -> str:
    """JSON on exactly one line whatever the text in it: non-ASCII stays readable, and what could break the line
    or drive a terminal is \\u-escaped (the same value to a JSON reader)."""
    text = json.dumps(value, ensure_ascii=False)
    return _UNSAFE_IN_LINE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
