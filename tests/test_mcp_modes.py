"""MCP_STATELESS: the default stateless mode and the stateful mode answer the same way.

A representative subset (the gate, one call per tool with its download, headers per request within one connection)
runs in both modes; the rest of the suite runs in the default mode.
"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.runtime.settings import load_settings
from tests.conftest import API_KEY, NOW, ServerStarter, call_tool, text_of

pytestmark = pytest.mark.anyio
TOOLS = ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events", "get_credit_usage_trend")
EVERY_TOOL = (*TOOLS, "get_credit_forecast")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture(params=[False, True], ids=["stateful", "stateless"])
def stateless(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def mode_url(start_server: ServerStarter, openmeter: OpenMeterStandIn, stateless: bool) -> str:
    for i in range(3):
        at = NOW - timedelta(hours=i + 1)
        openmeter.ingest(
            make_event(tenant="acme", credits=10, time=at, user=f"acme-user-{i}"),
            make_event(tenant="globex", credits=100, time=at, user=f"globex-user-{i}"),
        )
    return start_server(mcp_stateless=stateless)


def test_the_default_is_stateless_and_the_flag_parses() -> None:
    """Issue 16 F2: stateful sessions shared by tenants let same-id calls cross; stateless is the default."""
    assert load_settings(_env_file=None, openmeter_api_key=API_KEY).mcp_stateless is True
    assert load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_stateless="false").mcp_stateless is False


async def test_the_default_server_hands_out_no_session(server_url: str) -> None:
    response = httpx2.post(
        f"{server_url}/mcp", json=INITIALIZE, headers={"Accept": "application/json, text/event-stream"}
    )
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers


async def test_only_the_stateful_mode_hands_out_a_session(mode_url: str, stateless: bool) -> None:
    response = httpx2.post(
        f"{mode_url}/mcp", json=INITIALIZE, headers={"Accept": "application/json, text/event-stream"}
    )
    assert response.status_code == 200
    assert ("mcp-session-id" in response.headers) is not stateless


@pytest.mark.parametrize("tool", EVERY_TOOL)
async def test_every_tool_answers_with_a_working_link(mode_url: str, tool: str) -> None:
    result = await call_tool(mode_url, tool)
    text = text_of(result)
    assert not result.is_error, text
    assert "acme" in text and "globex" not in text
    match = re.search(r"\]\(http://localhost:8765(/download/[\w-]+)\)", text)
    assert match, text
    response = httpx2.get(mode_url + match.group(1))
    assert response.status_code == 200 and response.content.startswith(b"PK")


@pytest.mark.parametrize(
    ("headers", "sentence"),
    [
        pytest.param({"X-Tenant-Name": "acme", "X-User-UserRole": "user"}, "Only tenant administrators", id="role"),
        pytest.param({"X-User-UserRole": "admin"}, "tenant is not known", id="tenant"),
    ],
)
async def test_the_gate_refuses_in_both_modes(
    mode_url: str, openmeter: OpenMeterStandIn, headers: dict[str, str], sentence: str
) -> None:
    result = await call_tool(mode_url, "get_credit_usage_summary", headers=headers)
    assert result.is_error and sentence in text_of(result)
    assert "Download" not in text_of(result)
    assert not openmeter.requests


@pytest.mark.parametrize("client_mode", ["legacy", "auto"])
async def test_headers_are_read_per_request_in_both_modes(mode_url: str, client_mode: str) -> None:
    async with (
        httpx2.AsyncClient() as http,
        Client(streamable_http_client(f"{mode_url}/mcp", http_client=http), mode=client_mode) as client,
    ):
        await client.list_tools()  # no headers needed to connect and list
        http.headers.update({"X-Tenant-Name": "acme", "X-User-UserRole": "admin"})
        first = text_of(await client.call_tool("get_credit_usage_by_tenant", {}))
        http.headers.update({"X-Tenant-Name": "globex"})
        second = text_of(await client.call_tool("get_credit_usage_by_tenant", {}))
    assert "| acme | 30.00 |" in first
    assert "| globex | 300.00 |" in second
