"""JWT mode (MCP_JWT_JWKS_URL): keys generated here, the JWKS served by a stand-in identity provider on loopback.

The verifier's rules are unit tests (the verifier fetching from the stand-in over real HTTP); the identity rules
(claims against headers) are pure; a few end-to-end tests run a real MCP client against the server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ai_credit_usage.access.caller import Refusal
from ai_credit_usage.access.jwt_verifier import JwtRules, JwtVerifier, KeysUnavailable, TokenRejected
from ai_credit_usage.access.token_caller import caller_from_claims
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import NOW, ServerStarter, call_tool, raw_initialize, text_of
from tests.servers import serve_in_thread

pytestmark = pytest.mark.anyio
ISSUER = "https://login.tais.example/realms/tais"
AUDIENCE = "ai-credits-mcp"


class SigningKey:
    """A key pair of the identity provider: signs tokens, and is published as a JWK."""

    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        if kind == "RSA":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS256"
            self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
            self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk |= {"kid": kid, "use": "sig"}
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, **claims: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey("ec-1", "EC")


@pytest.fixture(scope="module")
def next_key() -> SigningKey:
    return SigningKey("rsa-2")


class IdentityProvider:
    """Publishes a JWKS at /jwks and counts how often it was fetched; `down` makes it answer 503, and `misbehaving`
    (a response factory) answers in its place."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.down = False
        self.misbehaving: Callable[[], Response] | None = None
        self.app = Starlette(routes=[Route("/jwks", self.jwks)])

    async def jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.down:
            return Response("unavailable", status_code=503)
        if self.misbehaving is not None:
            return self.misbehaving()
        return JSONResponse({"keys": self.keys})


@pytest.fixture(scope="module")
def served_idp() -> Iterator[tuple[IdentityProvider, str]]:
    idp = IdentityProvider()
    with serve_in_thread(idp.app) as url:
        yield idp, f"{url}/jwks"


@pytest.fixture
def idp(served_idp: tuple[IdentityProvider, str], rsa_key: SigningKey, ec_key: SigningKey) -> IdentityProvider:
    provider = served_idp[0]
    provider.keys, provider.fetches, provider.down = [rsa_key.jwk, ec_key.jwk], 0, False
    provider.misbehaving = None
    return provider


@pytest.fixture
def jwks_url(served_idp: tuple[IdentityProvider, str]) -> str:
    return served_idp[1]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": now + 600, "iat": now, "nbf": now - 5}
    base |= {"tenant": "acme", "roles": ["admin"], "preferred_username": "jane@acme.example"}
    return {k: v for k, v in (base | changes).items() if v is not None}


def verifier(jwks_url: str, cooldown: float = 0.0, **options: Any) -> JwtVerifier:
    return JwtVerifier(JwtRules(jwks_url, ISSUER, AUDIENCE), refetch_cooldown_seconds=cooldown, **options)


class Clock:
    """A monotonic clock the test moves: past a cooldown without sleeping through it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would: unsigned, or HMAC-signed with a key of their choosing."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# --- the verifier's rules ---------------------------------------------------------------------------------------


async def test_a_valid_token_gives_its_claims(idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey) -> None:
    checked = verifier(jwks_url)
    assert (await checked.claims(rsa_key.sign(**claims())))["tenant"] == "acme"
    assert (await checked.claims(rsa_key.sign(**claims(tenant="globex"))))["tenant"] == "globex"
    assert idp.fetches == 1  # the JWKS is cached


async def test_an_ec_key_works_too(idp: IdentityProvider, jwks_url: str, ec_key: SigningKey) -> None:
    assert (await verifier(jwks_url).claims(ec_key.sign(**claims())))["sub"] == "u-1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"exp": int(time.time()) - 120}, "The token has expired; sign in again.", id="expired"),
        pytest.param(
            {"nbf": int(time.time()) + 120},
            "The token is not valid yet (nbf or iat is in the future).",
            id="not-yet-valid",
        ),
        pytest.param({"iss": "https://evil.example"}, "The token was issued by another issuer (iss).", id="issuer"),
        pytest.param({"iat": int(time.time()) + 120}, "The token is not valid yet (nbf or iat", id="issued-later"),
        pytest.param({"aud": "another-service"}, "The token is meant for another service (aud).", id="audience"),
        pytest.param({"exp": None}, "The token has no exp claim.", id="no-exp"),
        pytest.param({"aud": None}, "The token has no aud claim.", id="no-aud"),
        pytest.param({"iss": None}, "The token has no iss claim.", id="no-iss"),
    ],
)
async def test_claims_that_do_not_hold_are_refused(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TokenRejected) as rejected:
        await verifier(jwks_url).claims(rsa_key.sign(**claims(**changes)))
    assert str(rejected.value).startswith(reason)


async def test_an_audience_list_that_names_us_is_accepted(
    jwks_url: str, idp: IdentityProvider, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(**claims(aud=["account", AUDIENCE]))
    assert (await verifier(jwks_url).claims(token))["tenant"] == "acme"


async def test_alg_none_is_refused(idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey) -> None:
    for alg in ("none", "None", "NONE"):
        token = forged({"alg": alg, "typ": "JWT", "kid": rsa_key.kid}, claims(), None)
        with pytest.raises(TokenRejected, match="not signed"):
            await verifier(jwks_url).claims(token)


async def test_hs256_signed_with_the_public_key_is_refused(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey
) -> None:
    """The classic key-confusion attack: the public key (which anyone can fetch) used as an HMAC secret."""
    for secret in (rsa_key.public_pem, json.dumps(rsa_key.jwk).encode()):
        token = forged({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}, claims(), secret)
        with pytest.raises(TokenRejected, match=r"not signed with its key's algorithm \(RS256\)"):
            await verifier(jwks_url).claims(token)


async def test_a_symmetric_key_in_the_jwks_counts_for_nothing(idp: IdentityProvider, jwks_url: str) -> None:
    secret = b"published-for-all-to-see"
    idp.keys = [*idp.keys, {"kty": "oct", "kid": "hmac-1", "k": b64(secret), "alg": "HS256"}]
    token = forged({"alg": "HS256", "typ": "JWT", "kid": "hmac-1"}, claims(), secret)
    with pytest.raises(TokenRejected, match="not an asymmetric signing key"):
        await verifier(jwks_url).claims(token)


async def test_a_signature_by_another_key_is_refused(
    idp: IdentityProvider, jwks_url: str, next_key: SigningKey
) -> None:
    impostor = jwt.encode(claims(), next_key.private, algorithm="RS256", headers={"kid": "rsa-1"})
    with pytest.raises(TokenRejected, match="signature does not match"):
        await verifier(jwks_url).claims(impostor)


async def test_after_a_key_rotation_the_unknown_kid_refetches_the_jwks(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey, next_key: SigningKey
) -> None:
    checked = verifier(jwks_url)
    await checked.claims(rsa_key.sign(**claims()))
    assert idp.fetches == 1
    idp.keys = [next_key.jwk]  # the issuer rotates: a new key, the old one withdrawn
    assert (await checked.claims(next_key.sign(**claims())))["tenant"] == "acme"
    assert idp.fetches == 2
    with pytest.raises(TokenRejected, match="a key the issuer does not publish"):
        await checked.claims(SigningKey("rsa-9").sign(**claims()))


async def test_unknown_kids_refetch_at_most_once_per_cooldown(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey
) -> None:
    checked = verifier(jwks_url, cooldown=3600)
    await checked.claims(rsa_key.sign(**claims()))
    for kid in ("made-up-1", "made-up-2", "made-up-3"):
        token = jwt.encode(claims(), rsa_key.private, algorithm="RS256", headers={"kid": kid})
        with pytest.raises(TokenRejected, match="a key the issuer does not publish"):
            await checked.claims(token)
    assert idp.fetches == 1  # random key ids do not make us hammer the identity provider


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("not-a-jwt", "The bearer token is not a JWT.", id="garbage"),
        pytest.param("a.b.c", "The bearer token is not a JWT.", id="three-dots"),
    ],
)
async def test_what_is_not_a_jwt_is_refused(idp: IdentityProvider, jwks_url: str, token: str, reason: str) -> None:
    with pytest.raises(TokenRejected) as rejected:
        await verifier(jwks_url).claims(token)
    assert str(rejected.value) == reason


async def test_a_token_without_kid_is_refused(idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey) -> None:
    with pytest.raises(TokenRejected, match="names no signing key"):
        await verifier(jwks_url).claims(jwt.encode(claims(), rsa_key.private, algorithm="RS256"))


async def test_an_unreachable_jwks_is_keys_unavailable_not_a_rejection(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    idp.down = True
    token = rsa_key.sign(**claims())
    with pytest.raises(KeysUnavailable):
        await verifier(jwks_url).claims(token)
    with pytest.raises(KeysUnavailable):
        await verifier("http://127.0.0.1:9/jwks").claims(token)  # nothing listens there
    assert "cannot be fetched" in caplog.text
    assert token not in caplog.text


# --- an identity provider in trouble (issue 23) --------------------------------------------------------------------


def made_up(key: SigningKey, kid: str) -> str:
    """A token signed by `key` that names a key id the issuer never published, as an anonymous caller would send."""
    return jwt.encode(claims(), key.private, algorithm="RS256", headers={"kid": kid})


def drip(body: bytes, every: float) -> Callable[[], Response]:
    """An identity provider that sends its answer one byte at a time."""

    async def bytes_slowly() -> AsyncIterator[bytes]:
        for byte in body:
            await anyio.sleep(every)
            yield bytes([byte])

    return lambda: StreamingResponse(bytes_slowly(), media_type="application/json")


def endless() -> Callable[[], Response]:
    """An identity provider whose key set never ends (no Content-Length: the size is known only by reading)."""

    async def forever() -> AsyncIterator[bytes]:
        yield b'{"keys": [], "padding": "'
        while True:
            yield b"x" * 16_384
            await anyio.lowlevel.checkpoint()

    return lambda: StreamingResponse(forever(), media_type="application/json")


async def test_a_failed_fetch_starts_the_cooldown_too(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: PyJWKClient started the cooldown only after a successful fetch, so with the provider answering 503,
    every request with a made-up key id fetched the key set again."""
    clock = Clock()
    checked = verifier(jwks_url, cooldown=10, clock=clock)
    idp.down = True
    for attempt in range(30):
        with pytest.raises(KeysUnavailable):
            await checked.claims(made_up(rsa_key, f"made-up-{attempt}"))
    assert idp.fetches == 1
    clock.now += 9.9
    with pytest.raises(KeysUnavailable):
        await checked.claims(rsa_key.sign(**claims()))
    assert idp.fetches == 1
    clock.now += 0.1  # the cooldown is over: one more attempt, which succeeds
    idp.down = False
    assert (await checked.claims(rsa_key.sign(**claims())))["tenant"] == "acme"
    assert idp.fetches == 2
    assert caplog.text.count("cannot be fetched: HTTP 503") == 1


def test_made_up_key_ids_cannot_multiply_fetches_of_a_provider_in_trouble(
    jwt_server: str, idp: IdentityProvider, rsa_key: SigningKey
) -> None:
    """The finding as reproduced from outside: 30 anonymous requests, 30 key-set fetches (now 1, then a cooldown)."""
    idp.down = True
    for attempt in range(30):
        response = httpx2.post(f"{jwt_server}/mcp", json={}, headers=bearer(made_up(rsa_key, f"made-up-{attempt}")))
        assert response.status_code == 503
    assert idp.fetches == 1


async def test_a_cached_key_is_verified_at_once_while_a_slow_fetch_is_in_flight(
    idp: IdentityProvider, jwks_url: str, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: PyJWKClient held one lock around every lookup, cached ones included, and its timeout applied to each
    read: a provider dripping one byte at a time held every valid token for as long as it liked."""
    checked = verifier(jwks_url, timeout_seconds=1.0)
    token = rsa_key.sign(**claims())
    await checked.claims(token)  # the key is cached
    idp.misbehaving = drip(json.dumps({"keys": [rsa_key.jwk]}).encode(), every=0.1)  # ~50 s to send it all
    outcome: list[BaseException] = []

    async def unknown_kid() -> None:
        try:
            await checked.claims(made_up(rsa_key, "made-up"))
        except (KeysUnavailable, TokenRejected) as exc:
            outcome.append(exc)

    with anyio.fail_after(10):  # a regression fails rather than hangs
        async with anyio.create_task_group() as group:
            started = anyio.current_time()
            group.start_soon(unknown_kid)
            while idp.fetches < 2:  # noqa: ASYNC110 - the provider counts in its own server thread
                await anyio.sleep(0.005)
            before = anyio.current_time()
            assert (await checked.claims(token))["tenant"] == "acme"
            assert anyio.current_time() - before < 0.5  # at once, not after the fetch in flight
            assert not outcome  # which is indeed still in flight
    assert anyio.current_time() - started < 3  # the fetch ended at its overall deadline (1 s), not byte by byte
    assert [type(exc) for exc in outcome] == [KeysUnavailable]
    assert "did not arrive within 1 s" in caplog.text


@pytest.mark.parametrize(
    "misbehaving",
    [
        pytest.param(lambda: JSONResponse({"keys": [], "padding": "x" * 200_000}), id="200-KB-declared"),
        pytest.param(endless(), id="endless-stream"),
    ],
)
async def test_a_huge_key_set_is_not_read_whole(
    idp: IdentityProvider,
    jwks_url: str,
    rsa_key: SigningKey,
    misbehaving: Callable[[], Response],
    caplog: pytest.LogCaptureFixture,
) -> None:
    idp.misbehaving = misbehaving
    with anyio.fail_after(4):  # before: read whole (an endless one, until the server's memory ran out)
        with pytest.raises(KeysUnavailable):
            await verifier(jwks_url, timeout_seconds=30).claims(rsa_key.sign(**claims()))
    assert "is over 64 KiB, more than any key set needs" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[" * 30_000 + "]" * 30_000, id="nested-within-the-cap"),
        pytest.param("[" * 100_000, id="nested-100000-deep"),
        pytest.param('{"keys": "not a list"}', id="keys-not-a-list"),
        pytest.param('{"keys": [{"kty": "RSA", "kid": "k", "n": [[["deep"]]], "e": "AQAB"}]}', id="unloadable-key"),
        pytest.param("\ufeff\x00 not json", id="not-json"),
    ],
)
def test_an_unreadable_key_set_is_the_one_sentence_503(
    jwt_server: str, idp: IdentityProvider, rsa_key: SigningKey, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: JSON nested deeper than Python's stack was a RecursionError, a 500 and a traceback on every request."""
    idp.misbehaving = lambda: Response(body, media_type="application/json")
    caplog.set_level(logging.WARNING)
    response = httpx2.post(f"{jwt_server}/mcp", json={}, headers=bearer(rsa_key.sign(**claims())))
    assert response.status_code == 503
    assert response.json()["error_description"].startswith("The identity provider's signing keys (MCP_JWT_JWKS_URL)")
    assert "Traceback" not in caplog.text
    reasons = [r.getMessage() for r in caplog.records if r.name == "ai_credit_usage.jwt"]
    assert len(reasons) == 1 and reasons[0].startswith("the JWKS at MCP_JWT_JWKS_URL ")


# --- who the token says calls -------------------------------------------------------------------------------------


def test_the_tenant_and_roles_come_from_the_claims() -> None:
    caller = caller_from_claims(claims(), {})
    assert (caller.tenant, caller.roles) == ("acme", ("admin",))
    assert caller_from_claims(claims(roles="reader Administrators"), {}).roles == ("reader", "Administrators")
    nested = claims(realm_access={"roles": ["offline", "admin"]}, roles=None)
    assert caller_from_claims(nested, {}, roles_claim="realm_access.roles").tenant == "acme"
    assert caller_from_claims(claims(tid="initech"), {}, tenant_claim="tid").tenant == "initech"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"tenant": None}, "Your sign-in token names no tenant (claim 'tenant')", id="no-tenant"),
        pytest.param({"tenant": " \t"}, "Your sign-in token names no tenant", id="blank-tenant"),
        pytest.param({"tenant": ["acme"]}, "Your sign-in token names no tenant", id="tenant-not-text"),
        pytest.param({"roles": None}, "Your sign-in token carries no roles (claim 'roles')", id="no-roles"),
        pytest.param({"roles": [1, 2]}, "Your sign-in token carries no roles", id="roles-not-text"),
        pytest.param({"roles": ["user"]}, "Only tenant administrators can see AI credit usage", id="not-admin"),
        pytest.param({"roles": ["Admini\u017ftrators"]}, "Only tenant administrators", id="long-s-is-not-admin"),
    ],
)
def test_missing_or_unusable_claims_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(Refusal) as refused:
        caller_from_claims(claims(**changes), {})
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-tenant-name": "acme"},
        {"x-tenant-name": "acme", "x-user-userrole": "ADMIN"},
        {"x-user-userrole": " admin "},
    ],
)
def test_headers_that_agree_with_the_token_pass(headers: dict[str, str]) -> None:
    assert caller_from_claims(claims(), headers).tenant == "acme"


@pytest.mark.parametrize(
    ("headers", "which"),
    [
        pytest.param({"x-tenant-name": "globex"}, "X-Tenant-Name", id="other-tenant"),
        pytest.param({"x-tenant-name": "acme\u00a0"}, "X-Tenant-Name", id="no-break-space"),
        pytest.param({"x-tenant-name": "Acme"}, "X-Tenant-Name", id="other-case"),
        pytest.param({"x-user-userrole": "admin, owner"}, "X-User-UserRole", id="more-roles"),
        pytest.param({"x-tenant-name": "acme", "x-user-userrole": "user"}, "X-User-UserRole", id="other-role"),
    ],
)
def test_headers_that_disagree_with_the_token_are_refused(headers: dict[str, str], which: str) -> None:
    with pytest.raises(Refusal, match=f"sent .* \\({which}\\) that .* not your sign-in token's"):
        caller_from_claims(claims(), headers)
    with pytest.raises(Refusal):  # even a non-admin token cannot be lifted by a header
        caller_from_claims(claims(roles=["user"]), {"x-user-userrole": "admin"})


# --- end to end over real HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def two_tenants(openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=7, time=NOW - timedelta(hours=1), user="acme-user"),
        make_event(tenant="globex", credits=371, time=NOW - timedelta(hours=1), user="globex-user"),
    )


JWT_SETTINGS = {
    "mcp_jwt_issuer": ISSUER,
    "mcp_jwt_audience": AUDIENCE,
    "mcp_resource_url": "https://ai-credits.internal/mcp",
}


@pytest.fixture
def jwt_server(start_server: ServerStarter, idp: IdentityProvider, jwks_url: str) -> str:
    return start_server(mcp_jwt_jwks_url=jwks_url, **JWT_SETTINGS)


@pytest.fixture
def stateful_jwt_server(start_server: ServerStarter, idp: IdentityProvider, jwks_url: str) -> str:
    return start_server(mcp_jwt_jwks_url=jwks_url, mcp_stateless=False, **JWT_SETTINGS)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


async def test_the_token_names_the_tenant(jwt_server: str, two_tenants: None, rsa_key: SigningKey) -> None:
    result = await call_tool(jwt_server, "get_credit_usage_by_tenant", headers=bearer(rsa_key.sign(**claims())))
    assert "| acme | 7.00 |" in text_of(result)
    token = rsa_key.sign(**claims(tenant="globex"))
    agreeing = bearer(token, **{"X-Tenant-Name": "globex", "X-User-UserRole": "admin"})
    assert "| globex | 371.00 |" in text_of(await call_tool(jwt_server, "get_credit_usage_by_tenant", headers=agreeing))


async def test_headers_cannot_overrule_the_token(
    jwt_server: str, two_tenants: None, openmeter: OpenMeterStandIn, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(**claims(roles=["user"]))
    openmeter.reset()
    for headers in ({"X-Tenant-Name": "globex", "X-User-UserRole": "admin"}, {"X-User-UserRole": "admin"}):
        result = await call_tool(jwt_server, "get_credit_usage_by_tenant", headers=bearer(token, **headers))
        assert result.is_error and "not your sign-in token's" in text_of(result)
    result = await call_tool(jwt_server, "get_credit_usage_by_tenant", headers=bearer(token))
    assert result.is_error and "Only tenant administrators" in text_of(result)
    assert openmeter.requests_to("/query") == []


def test_no_token_or_a_bad_one_is_401_with_the_metadata(jwt_server: str, rsa_key: SigningKey) -> None:
    metadata = "https://ai-credits.internal/.well-known/oauth-protected-resource/mcp"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    plain = httpx2.post(f"{jwt_server}/mcp", json=body, headers={"X-Tenant-Name": "acme", "X-User-UserRole": "admin"})
    assert plain.status_code == 401
    assert plain.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata}"'
    expired = rsa_key.sign(**claims(exp=int(time.time()) - 120))
    refused = httpx2.post(f"{jwt_server}/mcp", json=body, headers=bearer(expired))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="The token has expired; sign in again.", '
        f'resource_metadata="{metadata}"'
    )
    assert refused.json() == {"error": "invalid_token", "error_description": "The token has expired; sign in again."}
    assert raw_initialize(jwt_server, bearer(rsa_key.sign(**claims()))) == 200
    assert httpx2.get(f"{jwt_server}/health").status_code == 200  # no token needed there


def test_the_protected_resource_metadata(jwt_server: str) -> None:
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        document = httpx2.get(jwt_server + path)
        assert document.status_code == 200, path
        assert document.json()["resource"] == "https://ai-credits.internal/mcp"
        assert document.json()["authorization_servers"] == [ISSUER]
        assert document.json()["bearer_methods_supported"] == ["header"]


def test_an_unreachable_jwks_is_a_clear_503(
    jwt_server: str, idp: IdentityProvider, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    idp.down = True
    caplog.set_level(logging.WARNING)
    response = httpx2.post(f"{jwt_server}/mcp", json={}, headers=bearer(rsa_key.sign(**claims())))
    assert response.status_code == 503
    assert response.json()["error_description"].startswith("The identity provider's signing keys (MCP_JWT_JWKS_URL)")
    assert "Traceback" not in caplog.text


def initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    return httpx2.post(f"{url}/mcp", json=body, headers={"Accept": "application/json, text/event-stream", **headers})


def test_a_stateful_session_belongs_to_its_tokens_principal(stateful_jwt_server: str, rsa_key: SigningKey) -> None:
    """The SDK binds a session to the (client, issuer, subject) of the token that opened it: another user's token
    cannot call, or cancel calls, in it. A renewed token of the same user can."""
    opened = initialize(stateful_jwt_server, bearer(rsa_key.sign(**claims())))
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Accept": "application/json, text/event-stream"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    other = bearer(rsa_key.sign(**claims(sub="u-2", tenant="globex")), **session)
    assert httpx2.post(f"{stateful_jwt_server}/mcp", json=listing, headers=other).status_code == 404
    renewed = bearer(rsa_key.sign(**claims(iat=int(time.time()) - 1)), **session)
    assert httpx2.post(f"{stateful_jwt_server}/mcp", json=listing, headers=renewed).status_code == 200
    assert httpx2.delete(f"{stateful_jwt_server}/mcp", headers=other).status_code == 404  # nor end it
    assert httpx2.delete(f"{stateful_jwt_server}/mcp", headers=renewed).status_code == 200


async def test_the_audit_line_names_the_tokens_tenant(
    jwt_server: str, two_tenants: None, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_credit_usage.audit")
    token = rsa_key.sign(**claims(roles=["reader", "admin"]))
    await call_tool(jwt_server, "get_credit_usage_by_tenant", headers=bearer(token))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ai_credit_usage.audit"]
    assert [(line["tenant"], line["role"], line["outcome"]) for line in lines] == [("acme", "reader, admin", "ok")]
    assert token not in caplog.text
