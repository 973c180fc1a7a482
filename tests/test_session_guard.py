"""Issue 16 F2: in a stateful MCP session shared by tenants (SPEC allows it), calls never cross.

The SDK's transport keys each request's response stream by `str(id)` and overwrites an entry whose id is already in
flight, so two concurrent `tools/call` with the same id (also `7` and `"7"`) in one session crossed: tenant B's
HTTP response carried tenant A's rows and link. And anyone holding the session id could cancel another tenant's
call. Driven with raw HTTP on the 2025-11-25 wire (the 2026 era has no sessions), the way a TAIS client would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from starlette.types import Message, Receive, Scope, Send

from ai_credit_usage.access.session_guard import SessionGuard
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import CLIENT_TIMEOUT, NOW, ServerStarter

pytestmark = pytest.mark.anyio
VERSION = "2025-11-25"
QUERY = "/api/v1/meters/ai_credits/query"
ACME = {"X-Tenant-Name": "acme", "X-User-UserRole": "admin"}
GLOBEX = {"X-Tenant-Name": "globex", "X-User-UserRole": "admin"}


@pytest.fixture
def stateful_url(start_server: ServerStarter, openmeter: OpenMeterStandIn) -> str:
    for i in range(3):
        at = NOW - timedelta(hours=i + 1)
        openmeter.ingest(
            make_event(tenant="acme", credits=10, time=at, user=f"acme-user-{i}"),
            make_event(tenant="globex", credits=100, time=at, user=f"globex-user-{i}"),
        )
    return f"{start_server(mcp_stateless=False)}/mcp"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
        yield client


class Session:
    """One MCP session by hand; every message may carry a different caller's headers (one session, many tenants)."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http, self.url = http, url
        self.session_id = ""

    def headers(self, caller: dict[str, str]) -> dict[str, str]:
        return {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": VERSION,
            **({"Mcp-Session-Id": self.session_id} if self.session_id else {}),
            **caller,
        }

    async def open(self, caller: dict[str, str] | None = None) -> None:
        initialize = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
        response = await self.http.post(self.url, json=initialize, headers=self.headers(caller or {}))
        assert response.status_code == 200
        self.session_id = response.headers["mcp-session-id"]
        await self.notify(caller or {}, "notifications/initialized")

    async def end(self, caller: dict[str, str]) -> int:
        """DELETE the session, as `caller`: its HTTP status."""
        return (await self.http.delete(self.url, headers=self.headers(caller))).status_code

    async def notify(self, caller: dict[str, str], method: str, params: dict[str, Any] | None = None) -> int:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})}
        response = await self.http.post(self.url, json=body, headers=self.headers(caller))
        return response.status_code

    async def call(self, caller: dict[str, str], request_id: int | str, tool: str) -> dict[str, Any]:
        """The JSON-RPC message that answered this POST (its response, or an error), JSON or SSE alike."""
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
        response = await self.http.post(self.url, json=body, headers=self.headers(caller))
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("application/json"):
            return dict(response.json())
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        answers = [message for message in messages if "result" in message or "error" in message]
        assert len(answers) == 1, messages
        return dict(answers[0])


def text(message: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in message.get("result", {}).get("content", []))


async def until_in_flight(openmeter: OpenMeterStandIn, count: int) -> None:
    """Until OpenMeter holds `count` requests (the calls are then surely in flight): a wait on a state, not a time."""
    while openmeter.in_flight < count:  # noqa: ASYNC110 - the stand-in's counter is updated in its server's thread
        await anyio.sleep(0.005)


@pytest.mark.parametrize("second_id", [7, "7"], ids=["same-id", "int-and-string"])
async def test_a_second_call_with_an_id_in_flight_is_refused_and_nothing_crosses(
    stateful_url: str, openmeter: OpenMeterStandIn, http: httpx2.AsyncClient, second_id: int | str
) -> None:
    session = Session(http, stateful_url)
    await session.open()
    # acme's query is slow and globex's slower: before the guard, acme's answer reached globex's open stream first.
    openmeter.fail(status=200, delay=0.3, path_prefix=QUERY, times=1)
    answers: dict[str, dict[str, Any]] = {}

    async def ask(name: str, caller: dict[str, str], request_id: int | str) -> None:
        answers[name] = await session.call(caller, request_id, "get_credit_usage_by_tenant")

    # Bounded only so that a regression fails rather than hangs: before the guard, acme's POST never got an answer.
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(ask, "acme", ACME, 7)
            await until_in_flight(openmeter, 1)
            openmeter.fail(status=200, delay=0.6, path_prefix=QUERY, times=1)
            await ask("globex", GLOBEX, second_id)
    assert "| acme | 30.00 |" in text(answers["acme"])
    assert answers["globex"]["id"] == second_id
    assert answers["globex"]["error"]["code"] == -32600
    assert "already in flight" in answers["globex"]["error"]["message"]
    assert "acme" not in json.dumps(answers["globex"])
    # The id is free again once its call has answered.
    again = await session.call(GLOBEX, second_id, "get_credit_usage_by_tenant")
    assert "| globex | 300.00 |" in text(again)


async def test_another_tenant_cannot_cancel_my_call_but_i_can(
    stateful_url: str, openmeter: OpenMeterStandIn, http: httpx2.AsyncClient
) -> None:
    session = Session(http, stateful_url)
    await session.open()
    answers: dict[int, dict[str, Any]] = {}

    async def ask(request_id: int) -> None:
        answers[request_id] = await session.call(ACME, request_id, "get_credit_usage_by_tenant")

    openmeter.fail(status=200, delay=0.3, path_prefix=QUERY, times=1)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(ask, 11)
            await until_in_flight(openmeter, 1)
            cancel = {"requestId": 11, "reason": "spite"}
            assert await session.notify(GLOBEX, "notifications/cancelled", cancel) == 202  # accepted, and ignored
    assert "| acme | 30.00 |" in text(answers[11])

    openmeter.fail(status=200, delay=2, path_prefix=QUERY, times=1)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(ask, 12)
            await until_in_flight(openmeter, 1)
            assert await session.notify(ACME, "notifications/cancelled", {"requestId": 12}) == 202
    assert "result" not in answers[12]  # its own caller's cancel does cancel it
    assert answers[12]["error"]["message"] == "Request cancelled"


async def test_only_the_caller_who_opened_a_session_may_end_it(stateful_url: str, http: httpx2.AsyncClient) -> None:
    """Issue 23: a DELETE with another caller's headers and the session id ended the session."""
    session = Session(http, stateful_url)
    await session.open(ACME)
    assert await session.end(GLOBEX) == 404  # as if there were no such session
    assert await session.end({}) == 404
    assert "| acme | 30.00 |" in text(await session.call(ACME, 1, "get_credit_usage_by_tenant"))  # still open
    assert "| globex | 300.00 |" in text(await session.call(GLOBEX, 2, "get_credit_usage_by_tenant"))  # shared
    assert await session.end(ACME) == 200
    assert await session.end(ACME) == 404  # it is gone


# The guard's own rules, below HTTP: an ASGI app standing in for the SDK answers as told.
def post(session: str | None, body: dict[str, Any] | bytes, caller: dict[str, str] = ACME) -> Scope:
    headers = [(name.lower().encode(), value.encode()) for name, value in caller.items()]
    if session is not None:
        headers.append((b"mcp-session-id", session.encode()))
    return {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}


class FakeSdk:
    """Answers each POST with an SSE stream that carries the response to its id, unless told to stop before it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answer = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "DELETE":  # the session ends
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        message = json.loads((await receive())["body"])
        self.seen.append(message)
        opened = [(b"mcp-session-id", b"s1")] if message.get("method") == "initialize" else []
        await send({"type": "http.response.start", "status": 200, "headers": opened})
        if self.answer and "id" in message:
            data = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}).encode()
            await send({"type": "http.response.body", "body": b"event: message\r\ndata: " + data + b"\r\n\r\n"})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def through(guard: SessionGuard, scope: Scope, body: dict[str, Any] | bytes) -> tuple[int, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def call(request_id: int | str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


async def test_an_id_whose_post_ended_unanswered_stays_taken_until_the_session_ends() -> None:
    sdk = FakeSdk()
    guard = SessionGuard(sdk)
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    await through(guard, post(None, initialize, caller={}), initialize)  # opens s1, with no caller headers
    sdk.answer = False  # the client went away; the tool may still be running in the session
    assert (await through(guard, post("s1", call(3)), call(3)))[0] == 200
    sdk.answer = True
    status, body = await through(guard, post("s1", call("3")), call("3"))
    assert status == 200 and json.loads(body)["error"]["code"] == -32600
    assert (await through(guard, post("s2", call(3)), call(3)))[0] == 200  # another session: its own ids
    assert (await through(guard, post(None, call(3)), call(3)))[0] == 200  # no session (stateless, 2026 era)
    delete = {"type": "http", "method": "DELETE", "path": "/mcp", "headers": [(b"mcp-session-id", b"s1")]}
    await through(guard, delete, b"")
    assert "result" in json.loads((await through(guard, post("s1", call(3)), call(3)))[1].split(b"data: ")[1])
    assert [message.get("id") for message in sdk.seen if message.get("id") is not None] == [0, 3, 3, 3, 3]


async def test_a_body_over_the_sdks_limit_is_refused_before_it_is_read_whole() -> None:
    guard = SessionGuard(FakeSdk())
    status, _ = await through(guard, post("s1", b""), b"x" * (4 * 1024 * 1024 + 1))
    assert status == 413
