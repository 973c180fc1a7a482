"""The inline charts (MCP Apps) on the wire, for both protocol generations: the charted tools name their view in
`_meta.ui.resourceUri` and nothing else of their definition changes; `resources/read` serves each view as
`text/html;profile=mcp-app`; and the answer is the same for a host with MCP Apps as for one without.
(tests/test_views_browser.py draws the views in a real browser.)"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.server.mcpserver.tools import Tool

from ai_credit_usage.answers.views import MAX_DOCUMENT_BYTES, VIEWS
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.sdk_tools import READ_ONLY, _tool_function
from ai_credit_usage.tools import TOOLS
from tests.conftest import ADMIN, CLIENT_TIMEOUT, NOW, FakeClock, ServerStarter, text_of

pytestmark = pytest.mark.anyio
MODES = pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28, and the initialize handshake (2025-11-25)
CHARTED = {
    "get_credit_usage_trend": "ui://ai-credits/trend.html",
    "get_credit_forecast": "ui://ai-credits/forecast.html",
    "get_credit_balance": "ui://ai-credits/balance.html",
    "get_credit_usage_summary": "ui://ai-credits/summary.html",
}
PERIOD_START = datetime(2025, 12, 1, tzinfo=UTC)
APPS_HOST = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})


@pytest.fixture
def url(start_server: ServerStarter, openmeter: OpenMeterStandIn, clock: FakeClock) -> str:
    """A server with a fortnight of usage and a credit allowance for acme (so every charted tool has an answer)."""
    for days in range(1, 15):
        openmeter.ingest(make_event(tenant="acme", credits=days, time=NOW - timedelta(days=days), subject="alice"))
    openmeter.entitlements.clock = clock
    openmeter.entitlements.add_customer("acme", subject_keys=("alice",))
    openmeter.entitlements.add_entitlement("acme", "ai_credits", anchor=PERIOD_START, created_at=PERIOD_START)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=500, effective_at=PERIOD_START, name="Plan")
    return start_server(openmeter_credits_feature="ai_credits")


@contextlib.asynccontextmanager
async def connect(url: str, mode: str, *, apps: bool = False) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=ADMIN, timeout=CLIENT_TIMEOUT) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http), mode=mode, extensions=[APPS_HOST] if apps else None
        ) as client,
    ):
        yield client


@MODES
async def test_the_charted_tools_name_their_view_and_their_definitions_grow_by_that_alone(url: str, mode: str) -> None:
    async with connect(url, mode) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == {spec.name for spec in TOOLS}
    for spec in TOOLS:
        tool = listed[spec.name]
        assert tool.meta == ({"ui": {"resourceUri": CHARTED[spec.name]}} if spec.name in CHARTED else None)
        # The same tool built without a view: everything but `_meta` is as it was.
        bare = Tool.from_function(
            _tool_function(spec), name=spec.name, title=spec.title, description=spec.description, annotations=READ_ONLY
        )
        assert (tool.title, tool.description) == (bare.title, bare.description)
        assert tool.input_schema == bare.parameters
        assert tool.output_schema == bare.output_schema
        assert tool.annotations == bare.annotations


@MODES
async def test_each_view_is_served_as_an_mcp_app(url: str, mode: str) -> None:
    async with connect(url, mode, apps=True) as client:
        resources = {resource.uri: resource for resource in (await client.list_resources()).resources}
        assert {str(uri) for uri in resources} == set(CHARTED.values())
        for view in VIEWS:
            assert resources[view.uri].mime_type == APP_MIME_TYPE
            read = await client.read_resource(view.uri)
            (content,) = read.contents
            assert content.mime_type == APP_MIME_TYPE
            html = getattr(content, "text", "")
            assert html.startswith("<!doctype html>") and f'data-view="{view.name}"' in html
            assert len(html.encode()) <= MAX_DOCUMENT_BYTES
            # No `csp` declared: the host's deny-all policy for external loads stays in force.
            assert not (content.meta or {}).get("ui", {}).get("csp")


async def test_a_2026_client_is_told_of_the_extension(url: str) -> None:
    async with connect(url, "auto", apps=True) as client:
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})


def _without_link(value: Any) -> Any:
    """An answer with its download token blanked: each call gets a link of its own."""
    return re.sub(r"/download/[\w-]+", "/download/TOKEN", value) if isinstance(value, str) else value


@MODES
@pytest.mark.parametrize("tool", sorted(CHARTED))
async def test_the_answer_is_the_same_for_hosts_with_and_without_apps(url: str, mode: str, tool: str) -> None:
    answers = []
    for apps in (False, True):
        async with connect(url, mode, apps=apps) as client:
            result = await client.call_tool(tool, {})
        assert not result.is_error, text_of(result)
        structured = {key: _without_link(value) for key, value in (result.structured_content or {}).items()}
        answers.append((_without_link(text_of(result)), structured))
    assert answers[0] == answers[1]
    assert "[Download Excel](" in answers[0][0]
