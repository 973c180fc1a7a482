"""A stand-in for the TAIS API on loopback: the two calls `register.sh` makes, recorded, with scriptable answers.

By default a registration answers 201 with a fresh `{"id": "tool-<n>"}` and a session PATCH answers 200. Tests
queue other answers (a status, a body that is not JSON, `toolId` instead of `id`) in `tool_replies` /
`session_replies`; each queued answer is used once. Requests are recorded from the server thread, so reads go
through `requests()` under a lock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOOLS_PATH = "/api/v2/tools-service/tools"
SESSIONS_PATH = "/api/v2/sessions-service/{session_id}"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if self.text is not None:
            return Response(self.text, status_code=self.status, media_type="text/html", headers=self.headers)
        if self.json is None:
            return Response(status_code=self.status, headers=self.headers)
        return JSONResponse(self.json, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeTais:
    def __init__(self, *, id_key: str = "id") -> None:
        self.id_key = id_key
        self.tool_replies: list[Reply] = []
        self.session_replies: list[Reply] = []
        self._requests: list[Recorded] = []
        self._issued = 0
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(TOOLS_PATH, self._register, methods=["POST"]),
                Route(SESSIONS_PATH, self._attach, methods=["PATCH"]),
            ]
        )

    def reset(self) -> None:
        """Forget everything, so one served instance can stand in for a fresh TAIS in each test."""
        with self._lock:
            self.id_key = "id"
            self.tool_replies.clear()
            self.session_replies.clear()
            self._requests.clear()
            self._issued = 0

    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    async def _record(self, request: Request) -> None:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self._requests.append(Recorded(request.method, request.url.path, dict(request.headers), body))

    async def _register(self, request: Request) -> Response:
        await self._record(request)
        with self._lock:
            if self.tool_replies:
                return self.tool_replies.pop(0).response()
            self._issued += 1
            return JSONResponse({self.id_key: f"tool-{self._issued}", "name": "ai-credits-mcp"}, status_code=201)

    async def _attach(self, request: Request) -> Response:
        await self._record(request)
        with self._lock:
            if self.session_replies:
                return self.session_replies.pop(0).response()
        return JSONResponse({"id": request.path_params["session_id"], "toolIds": []})
