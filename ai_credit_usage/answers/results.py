"""What a tool call returns over MCP: the answer's text first (TAIS reads it) with its structured result, or an error.

Apart from errors.py on purpose: the workbook process imports errors.py, and must not pay for importing MCP.
"""

from __future__ import annotations

from typing import Any

from mcp.types import CallToolResult, TextContent


def answer_result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def error_result(message: str) -> CallToolResult:
    """A refusal or failure the chat can relay: a tool result with `isError`, not a protocol error."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
