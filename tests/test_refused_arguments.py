"""Issue 23 (Info): a refused argument is named with a short start of its value, never echoed whole.

Before, a 1 MB `from_date` came back as a 1 MB "sentence" (and went whole into the audit line), a 200 KB
`time_zone` as 200 KB. Every tool, every text parameter, over real MCP: the refusal names the parameter and stays
short."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ai_credit_usage.runtime.errors import shown
from tests.conftest import ADMIN, CLIENT_TIMEOUT, call_tool, text_of

pytestmark = pytest.mark.anyio
HUGE = 200_000


async def text_parameters(url: str) -> list[tuple[str, str]]:
    """(tool, parameter) for every parameter that takes text, or a choice of texts."""
    async with (
        httpx2.AsyncClient(headers=ADMIN, timeout=CLIENT_TIMEOUT) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        tools = (await client.list_tools()).tools
    found = []
    for tool in tools:
        for name, schema in tool.input_schema.get("properties", {}).items():
            options = [schema, *schema.get("anyOf", [])]
            if any(option.get("type") == "string" for option in options):
                found.append((tool.name, name))
    return found


async def test_every_refused_text_argument_is_named_with_a_short_start(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_credit_usage.audit")
    parameters = await text_parameters(server_url)
    assert {"from_date", "to_date", "time_zone", "granularity"} <= {name for _, name in parameters}
    refused = 0
    for tool, name in parameters:
        value = "2026-01-15" + "9" * HUGE  # neither a date, nor a time zone, nor a choice
        result = await call_tool(server_url, tool, {name: value})
        if not result.is_error:  # a parameter that takes any text (a name to filter by) may accept it
            continue
        refused += 1
        text = text_of(result)
        assert len(text) < 500, (tool, name, text[:200])
        assert name in text and "'2026-01-15999" in text, (tool, name, text[:200])
    assert refused >= 6
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ai_credit_usage.audit"]
    assert lines and max(len(line["reason"] or "") for line in lines) < 500


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Europe/Paris", "'Europe/Paris'"),
        ("x" * 100, "'" + "x" * 38 + "…"),
        (12, "12"),
        (["a"] * 50, "['a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'…"),
    ],
)
def test_a_value_is_shown_as_its_repr_cut_to_40_characters(value: Any, expected: str) -> None:
    assert shown(value) == expected
    assert len(shown(value)) <= 40


async def test_a_refused_list_argument_is_named_with_a_short_start_too(server_url: str) -> None:
    """group_by (a list of choices) came in beside the hardening and cut its value without `shown`'s ellipsis."""
    result = await call_tool(server_url, "get_credit_usage_summary", {"group_by": "x" * HUGE})
    text = text_of(result)
    assert result.is_error and text.startswith("group_by must be a list of user, module, product and skill")
    assert text.endswith(f"{shown('x' * HUGE)} is not.") and len(text) < 500


async def test_a_filter_that_is_not_text_is_named_with_a_short_start_too(server_url: str) -> None:
    """A filter must be text; a list in its place is refused by name with the short start every refusal shows."""
    value = ["alice@acme.example"] * 1000
    result = await call_tool(server_url, "get_credit_usage_by_tenant", {"user": value})
    text = text_of(result)
    assert result.is_error and text.startswith("user ") and len(text) < 300, text[:300]
    assert shown(value) in text
