"""Stateful MCP sessions without crossing: one request id in flight per session, and only its caller may cancel it.

The SPEC lets one MCP session carry calls of several tenants (headers are read per request). The SDK (mcp 2.x,
`mcp/server/streamable_http.py`) keys each POST's response stream by `str(message.id)` in
`StreamableHTTPServerTransport._request_streams` and overwrites an entry already there, and its `message_router`
sends every response to whichever stream is registered under `str(response.id)` at that moment. So a second POST
with an id that is in flight (`7` again, or `"7"`) takes over the first one's stream: the first answer to come back
goes to the second caller, and the first caller's POST never gets one. The dispatcher
(`mcp/shared/jsonrpc_dispatcher.py`, `_dispatch_request`) also overwrites `_in_flight[coerce_request_id(id)]` (a TODO
there says so), and `notifications/cancelled` cancels whatever is in flight under that id, from whoever sent it:
holding the session id is enough to cancel another tenant's call (issue 16 F2; notes/sec-hardening.md has the
write-up for upstream).

`SessionGuard` is an ASGI middleware in front of the SDK's app, installed only in stateful mode (stateless requests
each get a transport of their own and cannot collide). For every POST carrying `Mcp-Session-Id` it reads the
JSON-RPC message as the SDK will (the SDK's own parser and id coercion), and:
- a request whose id collides, by the transport's key or the dispatcher's, with one in flight in that session is
  answered at once with a JSON-RPC error (-32600) and never reaches the SDK;
- a `notifications/cancelled` is passed on only when it comes from the caller that made the request it names (same
  tenant, role and Authorization headers); otherwise it is answered 202 like any notification, and dropped;
- a DELETE (ending the session) is passed on only when it comes from the caller whose `initialize` opened the
  session; anyone else gets the SDK's own 404 "Session not found", as if there were no such session (issue 23). In
  JWT mode the SDK already binds every request of a session, DELETE included, to the token's principal, so a
  renewed token of the same user may end it.

A request stays in flight until its POST has carried its response. A POST that ended without one (the client went
away while the tool kept running in the session) leaves its id taken for the rest of the session, because the
SDK would still deliver that answer to a newer stream under the same id; clients never reuse ids within a session.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.types import JSONRPCNotification, JSONRPCRequest, jsonrpc_message_adapter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai_credit_usage.runtime.errors import shown

logger = logging.getLogger(__name__)

SESSION_HEADER = "mcp-session-id"
CALLER_HEADERS = ("x-tenant-name", "x-user-userrole", "authorization")
INVALID_REQUEST = -32600
MAX_SESSIONS = 10_000  # sessions with a request in flight or an id still taken; the oldest are forgotten beyond
MAX_TAKEN_PER_SESSION = 1_000
Key = tuple[str, object]


@dataclass
class _Call:
    keys: frozenset[Key]
    caller: str
    answered: bool = False  # its response has gone out
    done: anyio.Event = field(default_factory=anyio.Event)  # and the SDK has let go of its id (the POST returned)


@dataclass
class _Session:
    calls: list[_Call] = field(default_factory=list)  # in flight, or ended unanswered (their ids stay taken)

    def holding(self, keys: Iterable[Key]) -> _Call | None:
        wanted = set(keys)
        return next((call for call in self.calls if call.keys & wanted), None)


class SessionGuard:
    """ASGI middleware for stateful `/mcp`: see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._openers: OrderedDict[str, str] = OrderedDict()  # session id -> the caller whose initialize opened it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session_id = headers.get(SESSION_HEADER)
        if not session_id:  # initialize, or the 2026 era (no sessions): nothing to collide with
            await self.app(scope, receive, self._noting_opener(send, _caller(headers)))
            return
        if scope["method"] == "DELETE":
            await self._delete(session_id, scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        buffered = await _buffered(receive, DEFAULT_MAX_REQUEST_BODY_SIZE)  # the SDK's own limit, checked first here
        if buffered is None:
            await _send(send, 413, b"Request body too large", "text/plain")
            return
        body, replay = buffered
        message = _parse(body)
        if isinstance(message, JSONRPCRequest):
            await self._request(session_id, message, _caller(headers), scope, replay, send)
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            if self._may_cancel(session_id, message, _caller(headers)):
                await self.app(scope, replay, send)
            else:
                logger.warning("MCP session: ignored a cancel for a call made by another caller (or for no call)")
                await _send(send, 202, b"", "application/json")
        else:
            await self.app(scope, replay, send)

    async def _request(
        self, session_id: str, message: JSONRPCRequest, caller: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        keys = _keys(message.id)
        session = self._session(session_id)
        holder = session.holding(keys)
        if holder is not None and holder.answered:
            # Answered already; the SDK lets go of the id as its POST returns, an instant later. Reusing an id
            # right after its answer is not a collision.
            with anyio.move_on_after(5):
                await holder.done.wait()
            holder = session.holding(keys)
        if holder is not None:
            logger.warning("MCP session: refused a request whose id %s is already in flight", shown(message.id))
            error = {
                "jsonrpc": "2.0",
                "id": message.id,
                "error": {
                    "code": INVALID_REQUEST,
                    "message": f"Request id {shown(message.id)} is already in flight in this session; use a new id.",
                },
            }
            await _send(send, 200, json.dumps(error).encode(), "application/json")
            return
        call = _Call(keys, caller)
        session.calls.append(call)
        watcher = _ResponseWatcher(send, str(message.id), call)
        try:
            await self.app(scope, receive, watcher.send)
        finally:
            call.done.set()
            if call.answered or watcher.status != 200:  # answered, or refused before it was ever dispatched
                session.calls.remove(call)
            elif len(session.calls) > MAX_TAKEN_PER_SESSION:
                session.calls.pop(0)
            if not session.calls:
                self._sessions.pop(session_id, None)

    def _may_cancel(self, session_id: str, message: JSONRPCNotification, caller: str) -> bool:
        request_id = cancelled_request_id_from_params(message.params)
        session = self._sessions.get(session_id)
        if request_id is None or session is None:
            return False  # nothing of this session is in flight under that id: the SDK would ignore it anyway
        call = session.holding(_keys(request_id))
        return call is not None and call.caller == caller

    def _noting_opener(self, send: Send, caller: str) -> Send:
        """`send`, noting `caller` as the opener of the session whose id the response carries (an initialize)."""

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = Headers(raw=message.get("headers", [])).get(SESSION_HEADER)
                if opened:
                    self._openers[opened] = caller
                    while len(self._openers) > MAX_SESSIONS:
                        self._openers.popitem(last=False)
            await send(message)

        return noting

    async def _delete(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        if not isinstance(scope.get("user"), AuthenticatedUser) and self._openers.get(session_id) != _caller(
            Headers(scope=scope)
        ):
            # Also a session whose opener was forgotten (over MAX_SESSIONS): it is left to end by idling out.
            logger.warning("MCP session: refused to end a session for a caller other than the one that opened it")
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": "Session not found"}}
            await _send(send, 404, json.dumps(body).encode(), "application/json")
            return
        status = 0

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watching)
        if 200 <= status < 300:
            self._sessions.pop(session_id, None)
            self._openers.pop(session_id, None)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(session_id)
        return session


class _ResponseWatcher:
    """Passes the SDK's response on, noting its status and whether the JSON-RPC response for `request_id` went out
    (a JSON body, or an SSE `data:` line)."""

    def __init__(self, send: Send, request_id: str, call: _Call) -> None:
        self._send, self._id, self._call = send, request_id, call
        self.status = 0
        self._pending = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not self._call.answered:
            self._pending += message.get("body", b"")
            *lines, self._pending = self._pending.split(b"\n")
            if not message.get("more_body", False):
                lines.append(self._pending)
            self._call.answered = any(self._answers(line) for line in lines)
            if len(self._pending) > 16 * 1024 * 1024:  # a line this long is no SSE event of ours
                self._pending = b""
        await self._send(message)

    def _answers(self, line: bytes) -> bool:
        text = line.removeprefix(b"data:").strip()
        if not text.startswith(b"{"):
            return False
        try:
            message = json.loads(text)
        except ValueError:
            return False
        return (
            isinstance(message, dict)
            and ("result" in message or "error" in message)
            and str(message.get("id")) == self._id
        )


def _keys(request_id: Any) -> frozenset[Key]:
    """The transport's key (`str(id)`) and the dispatcher's (`coerce_request_id`): a clash in either crosses."""
    return frozenset({("transport", str(request_id)), ("dispatcher", coerce_request_id(request_id))})


def _caller(headers: Headers) -> str:
    """Who sent a message, as far as this server can tell: its tenant, role and Authorization headers (hashed)."""
    sent = "\n".join(",".join(headers.getlist(name)) for name in CALLER_HEADERS)
    return hashlib.sha256(sent.encode("latin-1", "replace")).hexdigest()


def _parse(body: bytes) -> object:
    """The message as the SDK's transport will read it; None when it cannot (the SDK then answers the error)."""
    try:
        return jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValueError:
        return None


async def _buffered(receive: Receive, limit: int) -> tuple[bytes, Receive] | None:
    """The request's body, and a `receive` that hands it to the app once, then passes on (disconnects included);
    None for a body over `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away before sending it all
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _send(send: Send, status: int, body: bytes, media_type: str) -> None:
    headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
