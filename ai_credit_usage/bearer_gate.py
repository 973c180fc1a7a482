"""Optional shared-secret check in front of `/mcp` (`MCP_AUTH_TOKEN`), compared in constant time."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class BearerTokenGate:
    """Pure ASGI wrapper: HTTP requests without `Authorization: Bearer <token>` get 401 before the MCP app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            supplied = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            scheme, _, credentials = supplied.strip().partition(b" ")
            # The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in constant time.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self._expected):
                response = JSONResponse(
                    {"error": "unauthorized", "detail": "this MCP endpoint needs Authorization: Bearer <token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="ai-credits-mcp"'},
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
