"""JWT mode (`MCP_JWT_JWKS_URL`): is this bearer token a JWT the issuer signed, for us, and valid now?

PyJWT does the cryptography and the claim checks. The issuer's key set (JWKS) is fetched here (`KeySet`), not by
PyJWT's `PyJWKClient`, because an identity provider in trouble must not be able to stall or multiply our work
(issue 23): `PyJWKClient` holds one lock around every lookup (a cached key waits for a slow refetch), its timeout
applies to each read (a provider that drips one byte at a time holds a fetch open for as long as it likes), it reads
the whole body (200 MB, or JSON nested deep enough for a `RecursionError`), and its refetch cooldown starts only
after a successful fetch (a provider answering 503 is asked again on every request with a made-up key id).

What this module adds is policy: the algorithm comes from the key, never from the token (so `alg: none` and
HS256-signed-with-the-public-key cannot pass), only asymmetric keys count, `exp`, `iss` and `aud` are required, and
every failure is one sentence that names what is wrong with the token without repeating any of it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from ai_credit_usage.openmeter.http import tls_context

logger = logging.getLogger("ai_credit_usage.jwt")

# Asymmetric signatures only: a symmetric ("oct") key in a published JWKS would let anyone who can read it sign.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)
ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
DEFAULT_LEEWAY_SECONDS = 30.0  # clock skew allowed on exp and nbf
DEFAULT_JWKS_TIMEOUT_SECONDS = 5.0  # for the whole fetch, connection to last byte
DEFAULT_JWKS_LIFESPAN_SECONDS = 300.0  # how long a fetched JWKS is used before it is fetched again
DEFAULT_REFETCH_COOLDOWN_SECONDS = 10.0  # at most one JWKS fetch per this many seconds, failed ones included
DEFAULT_JWKS_MAX_BYTES = 64 * 1024  # a JWKS of a few keys is a few KB; Keycloak's with 4 keys is about 3 KB


class TokenRejected(Exception):
    """The token is not acceptable; the message is one sentence for the client and holds nothing of the token."""


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched or used right now: not the token's fault, so not a 401."""


class _Unusable(Exception):
    """A fetch of the JWKS failed; the message is the log's reason, one phrase."""


@dataclass(frozen=True)
class JwtRules:
    jwks_url: str
    issuer: str
    audience: str
    leeway_seconds: float = DEFAULT_LEEWAY_SECONDS


class KeySet:
    """The issuer's signing keys by key id, fetched from the JWKS URL and kept for `lifespan_seconds`.

    - A key id the set holds is answered at once: a lookup never waits on a lock or on a fetch in flight.
    - A key id it lacks (a rotation), or a set that expired or was never fetched, starts a fetch, at most one at a
      time and at most one per `cooldown_seconds`, counted from the start of every attempt, failed ones included.
      Requests arriving meanwhile wait for that fetch rather than start their own.
    - A fetch ends within `timeout_seconds` overall, reads at most `max_bytes`, and anything it cannot use (an
      error status, a redirect, not JSON, JSON too deep for Python, no usable key) keeps the previous set and is
      logged as one line.

    `clock` (seconds, monotonic) is injectable so tests can move past a cooldown without sleeping.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = DEFAULT_JWKS_TIMEOUT_SECONDS,
        lifespan_seconds: float = DEFAULT_JWKS_LIFESPAN_SECONDS,
        cooldown_seconds: float = DEFAULT_REFETCH_COOLDOWN_SECONDS,
        max_bytes: int = DEFAULT_JWKS_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout_seconds
        self._lifespan = lifespan_seconds
        self._cooldown = cooldown_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # when the keys above arrived
        self._attempted_at = -math.inf  # when the latest fetch started, whatever came of it
        self._failed = False  # the latest fetch brought no usable set
        self._ended = 0  # fetches ended so far: a waiter whose fetch ended meanwhile does not start another
        self._fetching = anyio.Lock()  # held by the one fetch in flight, never by a lookup of a held key

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named `kid`; `TokenRejected` when the issuer does not publish it, `KeysUnavailable` when the set
        cannot be had."""
        key = self._held(kid)
        if key is not None:
            return key
        await self._refresh()
        key = self._held(kid)
        if key is not None:
            return key
        if self._failed or not self._fresh():
            raise KeysUnavailable
        raise TokenRejected("The token is signed by a key the issuer does not publish.")

    def _fresh(self) -> bool:
        return self._clock() - self._fetched_at < self._lifespan

    def _held(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid) if self._fresh() else None

    async def _refresh(self) -> None:
        ended = self._ended
        async with self._fetching:
            if self._ended != ended:  # a fetch ended while this request waited: its outcome is the answer
                return
            if self._clock() - self._attempted_at < self._cooldown:
                return
            self._attempted_at = self._clock()
            # Shielded: a fetch once started ends by its own deadline, whoever was waiting for it went away.
            with anyio.CancelScope(shield=True):
                try:
                    keys = _usable_keys(await self._fetch())
                except _Unusable as unusable:
                    logger.warning("the JWKS at MCP_JWT_JWKS_URL %s", unusable)
                    self._failed = True
                else:
                    self._keys, self._fetched_at, self._failed = keys, self._clock(), False
                finally:
                    self._ended += 1

    async def _fetch(self) -> Any:
        """The JWKS as JSON, read within the deadline and the size cap; `_Unusable` otherwise."""
        try:
            with anyio.fail_after(self._timeout):  # overall: httpx2's own timeouts apply to each read
                body = await self._read()
        except TimeoutError:
            raise _Unusable(f"did not arrive within {self._timeout:g} s") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise _Unusable(f"cannot be fetched: {type(exc).__name__}") from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
            raise _Unusable("is not JSON that can be read") from None

    async def _read(self) -> bytes:
        async with (
            httpx2.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                verify=tls_context(),
                # identity: the cap below counts what is read, so nothing may expand it afterwards
                headers={"User-Agent": "ai-credits-mcp", "Accept": "application/json", "Accept-Encoding": "identity"},
            ) as client,
            client.stream("GET", self.url) as response,
        ):
            if response.status_code != 200:
                raise _Unusable(f"cannot be fetched: HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
                raise _Unusable("came compressed although it was asked for uncompressed")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise _Unusable(f"is over {self._max_bytes // 1024} KiB, more than any key set needs")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._max_bytes:
                    raise _Unusable(f"is over {self._max_bytes // 1024} KiB, more than any key set needs")
            return bytes(body)


def _usable_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by key id (the first of a repeated id, as PyJWT's lookup does); keys
    PyJWT cannot load are skipped, as `PyJWKSet` skips them."""
    listed = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise _Unusable("is not a JWKS (a JSON object with a list of keys)")
    keys: dict[str, jwt.PyJWK] = {}
    for item in listed:
        if not isinstance(item, dict) or item.get("use") not in ("sig", None):
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            keys[kid] = jwt.PyJWK(item)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # a key PyJWT cannot load, whatever it holds
            continue
    if not keys:
        raise _Unusable("holds no usable signing key")
    return keys


class JwtVerifier:
    """Verifies bearer JWTs against the issuer's JWKS. Also the SDK's `TokenVerifier` (`verify_token`)."""

    def __init__(
        self,
        rules: JwtRules,
        *,
        timeout_seconds: float = DEFAULT_JWKS_TIMEOUT_SECONDS,
        lifespan_seconds: float = DEFAULT_JWKS_LIFESPAN_SECONDS,
        refetch_cooldown_seconds: float = DEFAULT_REFETCH_COOLDOWN_SECONDS,
        max_jwks_bytes: int = DEFAULT_JWKS_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self.keys = KeySet(
            rules.jwks_url,
            timeout_seconds=timeout_seconds,
            lifespan_seconds=lifespan_seconds,
            cooldown_seconds=refetch_cooldown_seconds,
            max_bytes=max_jwks_bytes,
            clock=clock,
        )

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`; `TokenRejected` or `KeysUnavailable` otherwise."""
        header = _header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("The token names no signing key (kid), so it cannot be checked.")
        key = await self.keys.key(kid)
        algorithm = key.algorithm_name
        if key.key_type not in ASYMMETRIC_KEY_TYPES or algorithm not in ASYMMETRIC_ALGORITHMS:
            raise TokenRejected("The token's key is not an asymmetric signing key, so it is not accepted.")
        if header.get("alg") != algorithm:
            raise TokenRejected(f"The token is not signed with its key's algorithm ({algorithm}).")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.rules.audience,
                issuer=self.rules.issuer,
                leeway=self.rules.leeway_seconds,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(_reason(exc)) from None
        return claims

    async def verify_token(self, token: str) -> AccessToken | None:
        """The SDK's `TokenVerifier` protocol: the token as an `AccessToken`, or None when it is not acceptable."""
        try:
            return access_token(token, await self.claims(token))
        except (TokenRejected, KeysUnavailable):
            return None


def access_token(token: str, claims: Mapping[str, Any]) -> AccessToken:
    """The SDK's view of a verified token. Its (client, issuer, subject) is the principal a stateful session is
    bound to, so another caller's token cannot use, or cancel calls in, that session."""
    subject = claims.get("sub")
    client = claims.get("azp") or claims.get("client_id") or subject or "unknown"
    audience = claims.get("aud")
    return AccessToken(
        token=token,
        client_id=str(client),
        scopes=str(claims.get("scope", "")).split(),
        expires_at=None,  # exp was checked above (with leeway); the SDK's own check would ignore the leeway
        resource=audience if isinstance(audience, str) else None,
        subject=str(subject) if subject is not None else None,
        claims=dict(claims),
    )


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRejected("The bearer token is not a JWT.") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm.lower() == "none":
        raise TokenRejected("The token is not signed (alg none), so it is not accepted.")
    return header


def _reason(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The token has expired; sign in again."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The token is not valid yet (nbf or iat is in the future)."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The token was issued by another issuer (iss)."
    if isinstance(exc, jwt.InvalidAudienceError):
        return "The token is meant for another service (aud)."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The token has no {exc.claim} claim."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The token's signature does not match its key."
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "The token is not signed with its key's algorithm."
    return "The token is not a valid JWT."
