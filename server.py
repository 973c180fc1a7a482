"""The MCP app: the tools of `ai_credit_usage.tools`, the caller gate, `/health` and `/download/<token>`.

The work lives in `ai_credit_usage`; this module only wires it together."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import anyio
import httpx2
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ai_credit_usage.access.bearer_gate import BearerTokenGate, JwtBearerGate, protected_resource_routes
from ai_credit_usage.access.gate import caller_gate
from ai_credit_usage.access.jwt_verifier import JwtRules, JwtVerifier
from ai_credit_usage.access.session_guard import SessionGuard
from ai_credit_usage.answers.demo_notice import DEMO_INSTRUCTIONS
from ai_credit_usage.answers.downloads import UNAVAILABLE, DownloadStore, DownloadStoreUnavailable, open_download_store
from ai_credit_usage.openmeter import RetryPolicy, connect, connect_credits, connect_entitlements, open_http
from ai_credit_usage.openmeter.meter_cache import MeterCache
from ai_credit_usage.openmeter.standin.demo import demo_transport
from ai_credit_usage.pipeline import Pipeline
from ai_credit_usage.questions.balance import Balances, BalanceService
from ai_credit_usage.questions.balance_v3 import BalanceServiceV3
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.settings import LOOPBACK_NAMES, Settings
from ai_credit_usage.runtime.telemetry import Telemetry, traced_download, watch_download_store
from ai_credit_usage.runtime.window import Clock, utc_now
from ai_credit_usage.sdk_tools import CreditsServer, offered_tools
from ai_credit_usage.tools import instructions as tool_instructions

logger = logging.getLogger("ai_credit_usage.server")

SWEEP_INTERVAL_SECONDS = 30


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    retry: RetryPolicy | None = None,
    openmeter_transport: httpx2.AsyncBaseTransport | None = None,
    demo: bool = False,
    telemetry: Telemetry | None = None,
    jwt_verifier: JwtVerifier | None = None,
) -> Starlette:
    """Build the whole ASGI app; `clock`, `retry` and `openmeter_transport` are the seams for tests and benchmarks.

    `demo` answers from generated data: an in-process OpenMeter stand-in becomes the client's transport (so the
    production path runs unchanged below it) and every answer and workbook says it is demo data. `telemetry`, the
    process's OpenTelemetry (main.py owns it), is flushed and shut down when the app stops.
    `jwt_verifier` (tests: no JWKS refetch cooldown) is built from MCP_JWT_* in JWT mode.
    """
    if jwt_verifier is None and settings.jwt_mode:
        jwt_verifier = JwtVerifier(jwt_rules_of(settings))
    if demo and openmeter_transport is None:
        openmeter_transport = demo_transport(
            clock(),
            api_key=settings.openmeter_api_key.get_secret_value(),
            meter_slug=settings.openmeter_meter,
            api=settings.api,
            feature=settings.openmeter_credits_feature,
            customer_key=settings.customer_key,
            clock=clock,
        )
    http = open_http(settings, retry=retry, transport=openmeter_transport)
    openmeter = connect(settings, http=http)
    entitlements = connect_entitlements(settings, http)
    credits = connect_credits(settings, http)
    # One cached meter definition for every question, the balance's meter-vs-entitlement check included; it ages by
    # the injected clock when there is one (tests move it, never sleep).
    meters = MeterCache(
        openmeter,
        settings.openmeter_meter,
        clock=time.monotonic if clock is utc_now else lambda: clock().timestamp(),
    )
    balance: Balances | None = None
    if entitlements is not None:
        balance = BalanceService(entitlements, openmeter, meters.get, settings.customer_key)
    elif credits is not None:
        balance = BalanceServiceV3(
            credits, openmeter, meters.get, settings.customer_key, currency=settings.openmeter_credits_currency
        )
    usage = UsageService(
        openmeter,
        settings.openmeter_meter,
        max_event_rows=settings.max_event_rows,
        parallel_slices=settings.openmeter_max_concurrency,
        meters=meters,
        balance=balance,
    )
    store_url = settings.download_store_url.get_secret_value() if settings.download_store_url else None
    downloads = open_download_store(
        store_url, settings.download_ttl_seconds, clock, max_bytes=settings.download_store_max_bytes
    )
    watch_download_store(downloads)
    pipeline = Pipeline(
        usage,
        downloads,
        download_base_url=settings.download_base_url,
        source=f"OpenMeter meter '{settings.openmeter_meter}'" + (" (in-process demo stand-in)" if demo else ""),
        clock=clock,
        deadline_seconds=settings.tool_deadline_seconds,
        demo=demo,
        process_writer_rows=settings.workbook_process_rows,
        workbook_processes=settings.workbook_processes,
    )
    instructions = tool_instructions(settings) + (DEMO_INSTRUCTIONS if demo else "")
    mcp = CreditsServer(pipeline, instructions=instructions, tools=offered_tools(settings))
    mcp.middleware.append(caller_gate(settings, mcp))

    async def health(request: Request) -> Response:
        if await downloads.healthy():  # the memory store always is; Redis gets a PING with a short timeout
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "degraded", "download_store": "unreachable"}, status_code=503)

    async def download(request: Request) -> Response:
        try:
            found = await downloads.get(request.path_params["token"])
        except DownloadStoreUnavailable:  # not 404: the link may well be valid once the store is back
            return PlainTextResponse(UNAVAILABLE, status_code=503, headers={"Retry-After": "60"})
        if found is None:  # unknown, expired or never issued: the same answer, revealing nothing
            return PlainTextResponse("Not Found", status_code=404)
        return Response(
            found.content,
            media_type=found.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{found.filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    mcp_app: ASGIApp = mcp.streamable_http_app(
        # Stateless (the default) serves every POST on its own; stateful keeps sessions in this process.
        stateless_http=settings.mcp_stateless,
        transport_security=_transport_security(settings),
        host=settings.mcp_host,
    )
    if not settings.mcp_stateless:  # sessions shared by tenants: no id twice in flight, no cancelling others' calls
        mcp_app = SessionGuard(mcp_app)
    if settings.mcp_auth_token is not None:
        mcp_app = BearerTokenGate(mcp_app, settings.mcp_auth_token.get_secret_value())
    metadata_routes: list[Route] = []
    if jwt_verifier is not None:  # JWT mode: the token proves who calls; the metadata says where tokens come from
        metadata_url, metadata_routes = protected_resource_routes(settings.resource_url, jwt_verifier.rules.issuer)
        mcp_app = JwtBearerGate(mcp_app, jwt_verifier, metadata_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run(), anyio.create_task_group() as tasks:
            tasks.start_soon(_sweep_downloads, downloads)
            if not await downloads.healthy():  # say it now, not at the first tool call; the store may come back
                logger.warning(
                    "the download store (DOWNLOAD_STORE_URL) is unreachable at start-up: tool calls fail and /health "
                    "answers 503 until it answers"
                )
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                # Shielded: that cancel also covers this block, whose first await would otherwise end it.
                with anyio.CancelScope(shield=True):
                    await usage.aclose()  # a background refresh of the meter definition, if one is running
                    await openmeter.aclose()
                    await downloads.aclose()
                    if telemetry is not None:  # now: next, uvicorn re-raises SIGTERM and the process just ends
                        await anyio.to_thread.run_sync(telemetry.shutdown)

    download_routes = [
        Route("/health", health, methods=["GET"]),
        Route("/download/{token}", traced_download(download), methods=["GET"]),
    ]
    app = Starlette(routes=[*download_routes, *metadata_routes, Mount("/", app=mcp_app)], lifespan=lifespan)
    app.state.downloads = downloads  # for operators' introspection and tests; never served
    # DOWNLOAD_PORT's listener (main.py serves it beside the app, which owns the store's lifetime): no /mcp on it.
    app.state.download_app = Starlette(routes=download_routes)
    return app


def jwt_rules_of(settings: Settings) -> JwtRules:
    if settings.mcp_jwt_jwks_url is None or settings.mcp_jwt_issuer is None or settings.mcp_jwt_audience is None:
        raise ValueError("JWT mode needs MCP_JWT_JWKS_URL, MCP_JWT_ISSUER and MCP_JWT_AUDIENCE")  # load_settings checks
    return JwtRules(settings.mcp_jwt_jwks_url, settings.mcp_jwt_issuer, settings.mcp_jwt_audience)


def _transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection stays on whatever the bind address; MCP_ALLOWED_HOSTS adds deployment names.

    The host of PUBLIC_BASE_URL is not among them: every chat user's browser reaches it for downloads, so it is a
    download host, and it reaches `/mcp` only when an operator lists it (issue 16, F1)."""
    names = [f"[{name}]" if ":" in name else name for name in LOOPBACK_NAMES]
    hosts: list[str] = [f"{name}:*" for name in names]
    for extra in settings.extra_allowed_hosts:
        hosts += [extra] if ":" in extra.rsplit("]", 1)[-1] else [extra, f"{extra}:*"]
    hosts = list(dict.fromkeys(hosts))
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


async def _sweep_downloads(downloads: DownloadStore) -> None:
    """Free expired workbooks even when nobody touches the store."""
    while True:
        await anyio.sleep(SWEEP_INTERVAL_SECONDS)
        if purged := await downloads.purge_expired():
            logger.info("freed %d expired downloads", purged)
