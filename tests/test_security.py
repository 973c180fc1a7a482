"""SPEC §7 end to end: the admin check, the tenant scope, isolation under concurrency, no leaked key, and
OpenMeter trouble that becomes a clean error while the server stays up."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from tests.conftest import API_KEY, NOW, call_tool, on_both_apis, raw_initialize, text_of
from tests.servers import DemoProcess, free_port

pytestmark = pytest.mark.anyio
TOOLS = ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events", "get_credit_usage_trend")
EVERY_TOOL = (*TOOLS, "get_credit_forecast")
REFUSED_ROLE = "Only tenant administrators can see AI credit usage"


@pytest.fixture
def two_tenants(openmeter: OpenMeterStandIn) -> None:
    for i in range(30):
        at = NOW - timedelta(hours=i + 1)
        openmeter.ingest(
            make_event(tenant="acme", credits=1 + i, time=at, user=f"acme-user-{i % 3}"),
            make_event(tenant="globex", credits=1000 + i, time=at, user=f"globex-user-{i % 3}"),
        )


@pytest.mark.parametrize(
    "role", ["admin", "Administrators", "ADMIN", "administrators", "user, Administrators", "reader ,admin"]
)
async def test_admin_roles_are_accepted(server_url: str, two_tenants: None, role: str) -> None:
    result = await call_tool(
        server_url, "get_credit_usage_by_tenant", headers={"X-Tenant-Name": "acme", "X-User-UserRole": role}
    )
    assert not result.is_error, text_of(result)
    assert "| acme | 465.00 |" in text_of(result)


@pytest.mark.parametrize("tool", EVERY_TOOL)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Tenant-Name": "acme", "X-User-UserRole": "user"}, id="wrong-role"),
        pytest.param({"X-Tenant-Name": "acme", "X-User-UserRole": "administrator"}, id="near-miss"),
        pytest.param({"X-Tenant-Name": "acme", "X-User-UserRole": "admins,superuser"}, id="list-without-admin"),
        pytest.param({"X-Tenant-Name": "acme", "X-User-UserRole": ""}, id="empty-role"),
        pytest.param({"X-Tenant-Name": "acme"}, id="no-role"),
        pytest.param({}, id="no-headers"),
    ],
)
async def test_non_admins_get_a_sentence_and_no_data(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None, tool: str, headers: dict[str, str]
) -> None:
    result = await call_tool(server_url, tool, headers=headers)
    assert result.is_error
    assert text_of(result).startswith(REFUSED_ROLE)
    assert "acme-user" not in text_of(result) and "Download" not in text_of(result)
    assert not openmeter.requests  # refused before OpenMeter is asked anything


@pytest.mark.parametrize("tenant", [None, ""])
async def test_missing_or_blank_tenant_is_refused(server_url: str, openmeter: OpenMeterStandIn, tenant) -> None:
    headers = {"X-User-UserRole": "admin"} | ({} if tenant is None else {"X-Tenant-Name": tenant})
    result = await call_tool(server_url, "get_credit_usage_summary", headers=headers)
    assert result.is_error
    assert "tenant is not known" in text_of(result)
    assert not openmeter.requests


async def test_a_tenant_argument_cannot_change_the_scope(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None
) -> None:
    result = await call_tool(server_url, "get_credit_events", {"tenant": "globex"})
    assert result.is_error
    assert "leave out 'tenant'" in text_of(result)
    assert "globex-user" not in text_of(result)
    assert not openmeter.requests


async def test_a_tenant_header_sent_twice_is_refused(server_url: str, openmeter: OpenMeterStandIn, two_tenants) -> None:
    # Two header lines are one comma list in HTTP; taking the first one silently would be a guess about the scope.
    headers = httpx2.Headers([("X-Tenant-Name", "globex"), ("X-Tenant-Name", "acme"), ("X-User-UserRole", "admin")])
    result = await call_tool(server_url, "get_credit_usage_by_tenant", headers=headers)
    assert result.is_error
    assert text_of(result).startswith("The chat service sent more than one tenant")
    assert not openmeter.requests


async def test_the_same_tenant_sent_twice_is_that_tenant(server_url: str, two_tenants: None) -> None:
    headers = httpx2.Headers([("X-Tenant-Name", "acme"), ("X-Tenant-Name", "acme"), ("X-User-UserRole", "admin")])
    result = await call_tool(server_url, "get_credit_usage_by_tenant", headers=headers)
    assert not result.is_error, text_of(result)
    assert "| acme | 465.00 |" in text_of(result)


@pytest.mark.parametrize("lines", [("user", "admin"), ("admin", "user")])
async def test_role_header_lines_are_one_list(server_url: str, two_tenants: None, lines: tuple[str, str]) -> None:
    headers = httpx2.Headers([("X-Tenant-Name", "acme"), *(("X-User-UserRole", role) for role in lines)])
    result = await call_tool(server_url, "get_credit_usage_by_tenant", headers=headers)
    assert not result.is_error, text_of(result)
    assert "| acme | 465.00 |" in text_of(result)


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_date_that_is_not_text_gets_one_sentence(server_url: str, openmeter: OpenMeterStandIn, tool) -> None:
    result = await call_tool(server_url, tool, {"from_date": 20260101})
    assert result.is_error
    assert text_of(result) == "from_date must be text such as 2026-01-15 (or left out); 20260101 is not."
    assert not openmeter.requests


@on_both_apis
async def test_the_tenant_is_matched_case_sensitively(server_url: str, two_tenants: None) -> None:
    other_case = await call_tool(
        server_url, "get_credit_events", headers={"X-Tenant-Name": "ACME", "X-User-UserRole": "admin"}
    )
    assert "Total credits: 0.00" in text_of(other_case)
    assert "acme-user" not in text_of(other_case)


@pytest.mark.parametrize("tenant", ["acme\u00a0", "\u2003acme"])
async def test_a_unicode_blank_makes_another_tenant(server_url: str, two_tenants: None, tenant: str) -> None:
    """Issue 16 F3: only spaces and tabs are trimmed; a no-break or em space is part of the name (UTF-8 on the wire)."""
    headers = httpx2.Headers({"X-Tenant-Name": tenant.encode(), "X-User-UserRole": b"admin"})
    result = await call_tool(server_url, "get_credit_events", headers=headers)
    assert not result.is_error, text_of(result)
    assert "acme-user" not in text_of(result)
    assert "Total credits: 0.00" in text_of(result)


@pytest.mark.parametrize("role", ["Admini\u017ftrators", "admini\ufb06rators", "admin\u2003"])
async def test_a_unicode_look_alike_role_is_refused(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None, role: str
) -> None:
    headers = httpx2.Headers({"X-Tenant-Name": b"acme", "X-User-UserRole": role.encode()})
    result = await call_tool(server_url, "get_credit_usage_by_tenant", headers=headers)
    assert result.is_error
    assert text_of(result).startswith(REFUSED_ROLE)
    assert not openmeter.requests


@on_both_apis
@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param('acme"},"$or":[{"$ne":"x"}],"x":{"$eq":"', id="v1-filter-json"),
        pytest.param('acme"}},"user":{"neq":"x', id="v3-body-json"),
        pytest.param("acme&filter[subject][neq]=x", id="v3-query-string"),
    ],
)
async def test_hostile_tenant_names_see_nothing(server_url: str, two_tenants: None, hostile: str) -> None:
    for tool in TOOLS:
        result = await call_tool(server_url, tool, headers={"X-Tenant-Name": hostile, "X-User-UserRole": "admin"})
        text = text_of(result)
        assert not result.is_error, text
        assert "acme-user" not in text and "globex-user" not in text
        assert "Total credits: 0.00" in text
    forecast = await call_tool(
        server_url, "get_credit_forecast", headers={"X-Tenant-Name": hostile, "X-User-UserRole": "admin"}
    )
    assert not forecast.is_error and forecast.structured_content is not None
    assert forecast.structured_content["used_so_far"] == forecast.structured_content["projected_total"] == 0


async def test_concurrent_tenants_never_see_each_other(server_url: str, two_tenants: None) -> None:
    results: dict[tuple[str, int], str] = {}

    async def ask(tenant: str, index: int, tool: str) -> None:
        result = await call_tool(server_url, tool, headers={"X-Tenant-Name": tenant, "X-User-UserRole": "admin"})
        results[(tenant, index)] = text_of(result)

    async with anyio.create_task_group() as tasks:
        for index in range(12):
            tool = TOOLS[index % 3]
            tasks.start_soon(ask, "acme", index, tool)
            tasks.start_soon(ask, "globex", index, tool)

    assert len(results) == 24
    for (tenant, _), text in results.items():
        other = "globex" if tenant == "acme" else "acme"
        assert f"Tenant {tenant}," in text
        assert other not in text


async def test_headers_are_read_per_request_within_one_session(server_url: str, two_tenants: None) -> None:
    async with (
        httpx2.AsyncClient() as http,
        Client(streamable_http_client(f"{server_url}/mcp", http_client=http), mode="legacy") as client,
    ):
        await client.list_tools()  # initialize and list without any header
        http.headers.update({"X-Tenant-Name": "acme", "X-User-UserRole": "admin"})
        first = text_of(await client.call_tool("get_credit_usage_by_tenant", {}))
        http.headers.update({"X-Tenant-Name": "globex"})
        second = text_of(await client.call_tool("get_credit_usage_by_tenant", {}))
        http.headers.update({"X-User-UserRole": "user"})
        third = await client.call_tool("get_credit_usage_by_tenant", {})
    assert "| acme | 465.00 |" in first
    assert "| globex | 30,435.00 |" in second
    assert third.is_error and REFUSED_ROLE in text_of(third)


@on_both_apis
async def test_meter_without_tenant_dimension_fails_closed(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None
) -> None:
    meter = dict(AI_CREDITS_METER)
    meter["groupBy"] = {k: v for k, v in meter["groupBy"].items() if k != "tenant"}
    openmeter.add_meter(meter)
    for tool in EVERY_TOOL:
        result = await call_tool(server_url, tool)
        assert result.is_error
        assert "no tenant dimension" in text_of(result)
    assert not [r for r in openmeter.requests if r.path.endswith(("/query", "/events"))]  # only the definition


async def test_a_missing_dimension_is_an_empty_column(
    start_server: Callable[..., str], openmeter: OpenMeterStandIn, two_tenants: None, caplog: pytest.LogCaptureFixture
) -> None:
    meter = dict(AI_CREDITS_METER, slug="ai_credits_noskill")
    meter["groupBy"] = {k: v for k, v in meter["groupBy"].items() if k != "skill"}
    openmeter.add_meter(meter)
    url = start_server(openmeter_meter="ai_credits_noskill")
    result = await call_tool(url, "get_credit_usage_summary")
    assert not result.is_error, text_of(result)
    assert "| acme-user-0 | chat | p1 | acme |  | 145.00 |" in text_of(result)
    assert "has no 'skill' dimension" in caplog.text


async def test_api_key_is_sent_to_openmeter_but_never_shown(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = []
    for tool in EVERY_TOOL:
        result = await call_tool(server_url, tool)
        texts.append(text_of(result))
        match = re.search(r"(/download/[\w-]+)", texts[-1])
        assert match
        workbook = httpx2.get(server_url + match.group(1)).content
        with zipfile.ZipFile(io.BytesIO(workbook)) as archive:
            for name in archive.namelist():
                assert API_KEY not in archive.read(name).decode("utf-8", "replace")
    openmeter.fail(status=401)
    texts.append(text_of(await call_tool(server_url, "get_credit_events")))
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in openmeter.requests)
    assert API_KEY not in "\n".join(texts)
    assert API_KEY not in caplog.text
    assert "OPENMETER_API_KEY" in texts[-1]  # the 401 says which setting to check, not its value


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param({"status": 401}, "refused this server's API key", id="401"),
        pytest.param({"status": 403}, "refused this server's API key", id="403"),
        pytest.param({"status": 500}, "internal error (HTTP 500)", id="500"),
        pytest.param({"status": 503}, "internal error (HTTP 503)", id="503"),
        pytest.param({"status": 429, "headers": {"Retry-After": "30"}}, "rate-limiting", id="429"),
        pytest.param(
            {"status": 200, "body": b"<html>oops", "content_type": "application/json"},
            "could not be read",
            id="bad-json",
        ),
        pytest.param(
            {"status": 200, "body": b'{"unexpected": true}', "content_type": "application/json"},
            "could not be read",
            id="wrong-shape",
        ),
    ],
)
@pytest.mark.parametrize("tool", TOOLS)
async def test_openmeter_trouble_is_a_clean_error(
    server_url: str, openmeter: OpenMeterStandIn, two_tenants: None, tool: str, fault: dict, message: str
) -> None:
    openmeter.fail(times=100, path_prefix="/api/v1/meters/ai_credits/query" if tool != TOOLS[2] else "/api/v2", **fault)
    result = await call_tool(server_url, tool)
    assert result.is_error
    assert message in text_of(result)
    assert "Traceback" not in text_of(result)
    assert len(text_of(result).splitlines()) == 1
    assert httpx2.get(f"{server_url}/health").json() == {"status": "ok"}


async def test_unknown_meter_names_the_setting(start_server: Callable[..., str]) -> None:
    url = start_server(openmeter_meter="no_such_meter")
    result = await call_tool(url, "get_credit_usage_by_tenant")
    assert result.is_error
    assert "no meter 'no_such_meter'" in text_of(result) and "OPENMETER_METER" in text_of(result)


async def test_openmeter_down_is_a_clean_error(start_server: Callable[..., str]) -> None:
    closed_port = free_port()  # a port nothing listens on
    url = start_server(openmeter_url=f"http://127.0.0.1:{closed_port}")
    result = await call_tool(url, "get_credit_usage_summary")
    assert result.is_error
    assert "cannot be reached" in text_of(result)
    assert httpx2.get(f"{url}/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        pytest.param("Bearer tais-shared-secret", 200, id="bearer"),
        pytest.param("bearer tais-shared-secret", 200, id="scheme-in-lower-case"),
        pytest.param("Bearer tais-shared-secreT", 401, id="token-differs-in-case"),
        pytest.param("Basic tais-shared-secret", 401, id="other-scheme"),
        pytest.param("tais-shared-secret", 401, id="no-scheme"),
        pytest.param("Bearer", 401, id="no-token"),
    ],
)
def test_the_auth_token_scheme_is_case_insensitive_and_the_token_is_not(
    start_server: Callable[..., str], authorization: str, status: int
) -> None:
    url = start_server(mcp_auth_token="tais-shared-secret")
    assert raw_initialize(url, {"Authorization": authorization}) == status


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"to_date": "9999-12-31"}, "to_date"),
        ({"to_date": "9999-12-31T23:59:59Z"}, "to_date"),
        ({"from_date": "0001-01-01"}, "from_date"),
    ],
)
async def test_far_windows_are_a_sentence_naming_the_parameter(
    server_url: str,
    openmeter: OpenMeterStandIn,
    caplog: pytest.LogCaptureFixture,
    tool: str,
    arguments: dict[str, str],
    named: str,
) -> None:
    """Issue 16 F5: the trend tool logged an OverflowError traceback for a to_date near 9999-12-31."""
    result = await call_tool(server_url, tool, arguments)
    assert result.is_error
    assert text_of(result).startswith(f"{named} '")
    assert not openmeter.requests
    assert not [record for record in caplog.records if record.exc_info], caplog.text


# A forged continuation: what a reader that breaks lines at NEL/U+2028/U+2029 would show as a line of its own.
FORGED = '2026-01-20 12:00:00,000 INFO ai_credit_usage.audit: {"event": "tool_call", "tenant": "globex"}'


@pytest.mark.parametrize(
    ("sent", "tenant"),
    [
        pytest.param(("acme\u2028" + FORGED).encode(), "acme\u2028" + FORGED, id="line-separator"),
        pytest.param(("acme\u2029" + FORGED).encode(), "acme\u2029" + FORGED, id="paragraph-separator"),
        # Not UTF-8, so read as Latin-1: NEL, and a terminal's CSI in one byte.
        pytest.param(b"acme\x85" + FORGED.encode(), "acme\x85" + FORGED, id="NEL-as-a-raw-byte"),
        pytest.param(b"acme\x9b31m", "acme\x9b31m", id="C1-CSI-as-a-raw-byte"),
    ],
)
async def test_a_header_cannot_break_or_forge_the_audit_line(
    server_url: str, two_tenants: None, caplog: pytest.LogCaptureFixture, sent: bytes, tenant: str
) -> None:
    """The audit line is JSON, which leaves NEL, U+2028/U+2029 and C1 controls raw; headers can carry them (h11 lets
    bytes 0x80-0xFF through), and the tenant and role go into the line. They are escaped: one line, the same value."""
    caplog.set_level(logging.INFO, logger="ai_credit_usage.audit")
    headers = httpx2.Headers({"X-Tenant-Name": sent, "X-User-UserRole": "admin, \x85reader".encode()})
    result = await call_tool(server_url, "get_credit_events", headers=headers)
    assert not result.is_error and "acme-user" not in text_of(result), text_of(result)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "ai_credit_usage.audit"]
    assert message.splitlines() == [message]
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", message)
    line = json.loads(message)
    assert (line["tenant"], line["role"]) == (tenant, "admin, \x85reader")


def test_no_request_can_forge_or_colour_a_console_log_line(tmp_path: Path) -> None:
    """main.py's console, as an operator reads it. A request's text reaches it through libraries' log lines: the
    SDK logs a failed handler with its traceback, and `prompts/get` for an unknown name raises an error quoting the
    name, with no headers needed. A name carrying line breaks wrote whole log lines of the caller's choosing (here
    an audit line for another tenant), and an escape sequence drove the operator's terminal. Every further line of
    a record is indented now, and other control characters are shown escaped."""
    forged = '2026-01-20 12:00:00,000 INFO ai_credit_usage.audit: {"event": "tool_call", "tenant": "globex"}'
    names = [f"x\n{forged}", f"x\r{forged}", f"x\u2028{forged}", f"x\x85{forged}", "x\x1b[2J\x1b]0;owned\x07"]
    with DemoProcess(tmp_path) as demo:
        for name in names:
            body = {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": name}}
            headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
            answer = httpx2.post(f"http://127.0.0.1:{demo.port}/mcp", json=body, headers=headers)
            assert answer.status_code == 200 and "Unknown prompt" in answer.text
    stderr = demo.stderr
    assert stderr.count("ValueError: Unknown prompt: x") >= len(names), stderr  # still logged, traceback and all
    assert not [line for line in stderr.splitlines() if line.startswith(forged[:30])]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", stderr)
    assert "\\x1b[2J" in stderr
