"""JWT mode (`MCP_JWT_JWKS_URL`): is this bearer token a JWT the issuer signed, for us, and valid now?

PyJWT does the cryptography and the claim checks; its `PyJWKClient` fetches the issuer's JWKS, caches it, and fetches
it again when a token names a key id it does not hold (at most once per cooldown). What this module adds is policy:
the algorithm comes from the key, never from the token (so `alg: none` and HS256-signed-with-the-public-key cannot
pass), only asymmetric keys count, `exp`, `iss` and `aud` are required, and every failure is one sentence that
names what is wrong with the token without repeating any of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import jwt
from mcp.server.auth.provider import AccessToken

logger = logging.getLogger("ai_credit_usage.jwt")

# Asymmetric signatures only: a symmetric ("oct") key in a published JWKS would let anyone who can read it sign.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)
ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
DEFAULT_LEEWAY_SECONDS = 30.0  # clock skew allowed on exp and nbf
DEFAULT_JWKS_TIMEOUT_SECONDS = 5.0
DEFAULT_JWKS_LIFESPAN_SECONDS = 300.0  # how long a fetched JWKS is used before it is fetched again
DEFAULT_REFETCH_COOLDOWN_SECONDS = 10.0  # unknown key ids cause at most one JWKS fetch per this many seconds


class TokenRejected(Exception):
    """The token is not acceptable; the message is one sentence for the client and holds nothing of the token."""


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched or used right now: not the token's fault, so not a 401."""


@dataclass(frozen=True)
class JwtRules:
    jwks_url: str
    issuer: str
    audience: str
    leeway_seconds: float = DEFAULT_LEEWAY_SECONDS


class JwtVerifier:
    """Verifies bearer JWTs against the issuer's JWKS. Also the SDK's `TokenVerifier` (`verify_token`)."""

    def __init__(
        self,
        rules: JwtRules,
        *,
        timeout_seconds: float = DEFAULT_JWKS_TIMEOUT_SECONDS,
        lifespan_seconds: float = DEFAULT_JWKS_LIFESPAN_SECONDS,
        refetch_cooldown_seconds: float = DEFAULT_REFETCH_COOLDOWN_SECONDS,
    ) -> None:
        self.rules = rules
        self._jwks = jwt.PyJWKClient(
            rules.jwks_url,
            cache_jwk_set=True,
            lifespan=lifespan_seconds,
            timeout=timeout_seconds,
            cooldown_duration=refetch_cooldown_seconds,
            headers={"User-Agent": "ai-credits-mcp", "Accept": "application/json"},
        )

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`; `TokenRejected` or `KeysUnavailable` otherwise."""
        header = _header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("The token names no signing key (kid), so it cannot be checked.")
        key = await anyio.to_thread.run_sync(self._signing_key, kid)  # urllib blocks: never on the event loop
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

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        try:
            return self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("the JWKS at MCP_JWT_JWKS_URL cannot be fetched: %s", type(exc.__cause__).__name__)
            raise KeysUnavailable from None
        except jwt.PyJWKClientError as exc:
            if str(exc).startswith("Unable to find a signing key"):
                raise TokenRejected("The token is signed by a key the issuer does not publish.") from None
            logger.warning("the JWKS at MCP_JWT_JWKS_URL is unusable: %s", exc)
            raise KeysUnavailable from None
        except (jwt.PyJWKSetError, ValueError) as exc:  # no usable key in it, or not JSON at all
            logger.warning("the JWKS at MCP_JWT_JWKS_URL is unusable: %s", type(exc).__name__)
            raise KeysUnavailable from None

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
