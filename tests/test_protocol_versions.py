"""Every protocol version TAIS might speak, driven with raw HTTP rather than our own MCP client.

For each version the client sends `initialize`, `notifications/initialized`, `tools/list` and a `tools/call`, the
way the Streamable HTTP transport of that version prescribes: `Mcp-Session-Id` when the server handed one out, and
`MCP-Protocol-Version` on every request after `initialize` from 2025-06-18 on (2025-03-26 and 2024-11-05 clients
do not know that header). Both server modes: stateless (no session id) and stateful (a session id on initialize).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import ADMIN, CLIENT_TIMEOUT, ServerStarter

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
VERSION_HEADER_SINCE = "2025-06-18"
TOOLS = {
    "get_credit_usage_by_tenant",
    "get_credit_usage_summary",
    "get_credit_events",
    "get_credit_usage_trend",
    "get_credit_forecast",
}


@pytest.fixture(params=[False, True], ids=["stateless", "stateful"])
def stateful(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def mcp_url(stateful: bool, start_server: ServerStarter) -> str:
    return f"{start_server(mcp_stateless=not stateful)}/mcp"


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=CLIENT_TIMEOUT) as client:
        yield client


class RawSession:
    """JSON-RPC over Streamable HTTP by hand: POST each message, read the answer as JSON or as SSE `data:` lines."""

    def __init__(self, http: httpx2.Client, url: str, version: str) -> None:
        self.http, self.url, self.version = http, url, version
        self.session_id: str | None = None
        self.negotiated: str | None = None
        self._next_id = 0

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **ADMIN}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.negotiated is not None and self.negotiated >= VERSION_HEADER_SINCE:
            headers["MCP-Protocol-Version"] = self.negotiated
        return headers

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        message = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        response = self.http.post(self.url, content=json.dumps(message), headers=self.headers())
        assert response.status_code == 200, (method, response.status_code, response.text)
        if method == "initialize":
            self.session_id = response.headers.get("mcp-session-id")
        answer = _the_answer(response, self._next_id)
        assert "error" not in answer, (method, answer)
        return answer["result"]

    def notify(self, method: str) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        response = self.http.post(self.url, content=json.dumps(message), headers=self.headers())
        assert response.status_code == 202, (method, response.status_code, response.text)

    def initialize(self) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "protocolVersion": self.version,
                "capabilities": {},
                "clientInfo": {"name": "raw-http-test", "version": "1.0"},
            },
        )
        self.negotiated = result["protocolVersion"]
        return result


def _the_answer(response: httpx2.Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC response to `request_id`, whether the server answered with JSON or with an SSE stream."""
    media_type = response.headers.get("content-type", "")
    if media_type.startswith("application/json"):
        messages = [response.json()]
    else:
        assert media_type.startswith("text/event-stream"), media_type
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    answers = [message for message in messages if message.get("id") == request_id]
    assert len(answers) == 1, messages
    return answers[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_initialize_list_and_call_at_each_protocol_version(
    mcp_url: str, stateful: bool, http: httpx2.Client, openmeter: OpenMeterStandIn, version: str
) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=12.5, time=datetime(2026, 1, 10, tzinfo=UTC)),
        make_event(tenant="acme", credits="0.25", time=datetime(2026, 1, 15, 8, tzinfo=UTC)),
        make_event(tenant="globex", credits=99, time=datetime(2026, 1, 10, tzinfo=UTC)),
    )
    session = RawSession(http, mcp_url, version)

    result = session.initialize()
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "ai-credits-mcp"
    assert "tools" in result["capabilities"]
    assert (session.session_id is not None) == stateful

    session.notify("notifications/initialized")
    assert {tool["name"] for tool in session.request("tools/list", {})["tools"]} == TOOLS
    answer = session.request(
        "tools/call",
        {"name": "get_credit_usage_by_tenant", "arguments": {"from_date": "2026-01-01", "to_date": "2026-01-31"}},
    )

    assert answer.get("isError") is not True, answer
    text = "\n".join(block["text"] for block in answer["content"] if block["type"] == "text")
    assert "Tenant acme, 2026-01-01T00:00:00Z to 2026-02-01T00:00:00Z (end exclusive)" in text
    assert "| tenant | credits |\n|---|---:|\n| acme | 12.75 |" in text
    assert "Total credits: 12.75" in text
    assert "globex" not in text
