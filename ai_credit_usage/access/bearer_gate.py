"""The checks in front of `/mcp`: the shared secret (`MCP_AUTH_TOKEN`, compared in constant time), or a verified
JWT (`MCP_JWT_JWKS_URL`) with the protected resource metadata that tells clients where tokens come from."""

from __future__ import annotations

import hmac

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ai_credit_usage.access.jwt_verifier import JwtVerifier, KeysUnavailable, TokenRejected, access_token


class BearerTokenGate:
    """Pure ASGI wrapper: HTTP requests without `Authorization: Bearer <token>` get 401 before the MCP app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The token is compared in constant time.
        if scope["type"] == "http" and not hmac.compare_digest(bearer_credentials(scope), self._expected):
            response = JSONResponse(
                {"error": "unauthorized", "detail": "this MCP endpoint needs Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="ai-credits-mcp"'},
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


class JwtBearerGate:
    """JWT mode (MCP_JWT_JWKS_URL): every HTTP request to `/mcp` carries a bearer JWT the verifier accepts.

    As the MCP authorization spec asks: no token or a bad one is 401 with `WWW-Authenticate: Bearer` naming the
    protected resource metadata (RFC 9728), so a client can find the issuer. Keys that cannot be fetched are a 503
    with one sentence, not a 401 (the token may be fine) and not a traceback. A verified request carries the SDK's
    `AuthenticatedUser` in `scope["user"]`: the gate reads the claims there, and the SDK binds stateful sessions to
    that principal."""

    def __init__(self, app: ASGIApp, verifier: JwtVerifier, resource_metadata_url: str) -> None:
        self._app = app
        self._verifier = verifier
        self._metadata = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        token = bearer_credentials(scope).decode("latin-1")
        if not token:
            await self._refuse(scope, receive, send, None, "This MCP endpoint needs Authorization: Bearer <JWT>.")
            return
        try:
            claims = await self._verifier.claims(token)
        except TokenRejected as rejected:
            await self._refuse(scope, receive, send, "invalid_token", str(rejected))
            return
        except KeysUnavailable:
            response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": KEYS_UNAVAILABLE},
                status_code=503,
                headers={"Retry-After": "30"},
            )
            await response(scope, receive, send)
            return
        verified = access_token(token, claims)
        scope = {**scope, "user": AuthenticatedUser(verified), "auth": AuthCredentials(verified.scopes)}
        await self._app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: str | None, reason: str) -> None:
        challenge = [f'error="{error}"', f'error_description="{_quoted(reason)}"'] if error else []
        challenge.append(f'resource_metadata="{self._metadata}"')
        response = JSONResponse(
            {"error": error or "unauthorized", "error_description": reason},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer " + ", ".join(challenge)},
        )
        await response(scope, receive, send)


def bearer_credentials(scope: Scope) -> bytes:
    """What follows `Authorization: Bearer` (the scheme is case-insensitive, RFC 9110 §11.1), trimmed; b"" when the
    header is missing or names another scheme."""
    supplied = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
    scheme, _, credentials = supplied.strip().partition(b" ")
    return credentials.strip() if scheme.lower() == b"bearer" else b""


KEYS_UNAVAILABLE = (
    "The identity provider's signing keys (MCP_JWT_JWKS_URL) cannot be fetched right now, so no token can be "
    "checked; try again in a minute, and tell the operator if it persists."
)


def _quoted(text: str) -> str:
    """A quoted-string for a header: ASCII only, no quote or backslash."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


def protected_resource_routes(resource_url: str, issuer: str) -> tuple[str, list[Route]]:
    """RFC 9728 protected resource metadata: the SDK's document and handler, at the path RFC 9728 derives from the
    resource (`/.well-known/oauth-protected-resource/mcp`) and at the bare well-known path older clients try.
    Returns the document's URL (for `WWW-Authenticate`) and the routes."""
    routes = create_protected_resource_routes(
        resource_url=AnyHttpUrl(resource_url),
        authorization_servers=[AnyHttpUrl(issuer)],
        resource_name="ai-credits-mcp",
    )
    metadata_url = str(build_resource_metadata_url(AnyHttpUrl(resource_url)))
    bare = "/.well-known/oauth-protected-resource"
    if all(route.path != bare for route in routes):
        routes.append(Route(bare, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"]))
    return metadata_url, routes
