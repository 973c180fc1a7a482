"""Entry point: `uv run main.py` reads the configuration, then serves the MCP app with uvicorn.

`uv run main.py --demo` serves the same tools from generated sample data instead of OpenMeter (no key needed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ai_credit_usage.runtime.settings import Settings

# Everything else is imported inside the functions: each workbook process re-runs this module's top level
# (multiprocessing's __main__ fix-up under forkserver), where these imports cost about a second per call.

logger = logging.getLogger("ai_credit_usage")


def configure_logging() -> None:
    from ai_credit_usage.runtime.telemetry import ConsoleFormatter

    # Before the MCP SDK is imported: its server calls basicConfig() too, which is then a no-op.
    console = logging.StreamHandler()
    console.setFormatter(ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)
    # Per-request chatter from the SDK ("Terminating session: None" on every stateless POST) and the HTTP client.
    for noisy in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every listener of this process runs with. No access log: download URLs carry their capability token,
    which must not end up in log files. No uvicorn log config: it would give its loggers private handlers; without
    it their lines (start-up, "Exception in ASGI application") reach the root handlers, the console format and
    OpenTelemetry. And the bounds on connections: how many at once (beyond: 503), how long an idle one is kept."""
    return {
        "access_log": False,
        "log_level": "info",
        "log_config": None,
        "limit_concurrency": settings.mcp_limit_concurrency,
        "timeout_keep_alive": settings.mcp_keep_alive_seconds,
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MCP server answering TAIS tenant admins' AI-credit questions.")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve generated sample data from an in-process OpenMeter stand-in; no OPENMETER_API_KEY needed",
    )
    return parser.parse_args(argv)


def _setting(name: str) -> str | None:
    """One variable as the settings will read it: the environment, else `.env` in the working directory."""
    if name in os.environ:
        return os.environ[name]
    from dotenv import dotenv_values

    return dotenv_values(".env").get(name)


def main(argv: list[str] | None = None) -> int:
    from ai_credit_usage.runtime.settings import ConfigError, load_settings
    from ai_credit_usage.runtime.telemetry import setup_telemetry

    arguments = parse_arguments(argv)
    configure_logging()
    try:
        overrides: dict[str, str] = {}
        if arguments.demo:  # a placeholder key and URL stand in for OpenMeter's; without --demo a missing key stops
            from ai_credit_usage.openmeter.standin.demo import demo_settings

            overrides = demo_settings(_setting("OPENMETER_API"))  # v1 unless OPENMETER_API=v3
        settings = load_settings(**overrides)
        telemetry = setup_telemetry(os.environ)  # only with OTEL_EXPORTER_OTLP_ENDPOINT, as Aspire sets it
    except ConfigError as exc:
        print(f"ai-credits-mcp: {exc}", file=sys.stderr)
        return 2
    from urllib.parse import urlsplit

    from ai_credit_usage.runtime.redaction import redact_log_handlers

    # Whatever a library or a traceback writes, the secrets' values never reach the console or OpenTelemetry.
    store_url = settings.download_store_url.get_secret_value() if settings.download_store_url else ""
    redact_log_handlers(
        [
            settings.openmeter_api_key.get_secret_value(),
            settings.mcp_auth_token.get_secret_value() if settings.mcp_auth_token else None,
            urlsplit(store_url).password,  # the Redis password, should a library ever quote the URL
        ]
    )
    # The rest only once the configuration is known good, so a mistake is reported at once; server after logging.
    import uvicorn

    from ai_credit_usage.answers.downloads import describe_store_url
    from server import create_app

    if settings.tenant_override or settings.role_override:
        logger.warning(
            "!!! DEVELOPMENT OVERRIDES ACTIVE: TENANT_OVERRIDE=%r ROLE_OVERRIDE=%r replace the X-Tenant-Name and "
            "X-User-UserRole headers of EVERY caller. Never run this in production. !!!",
            settings.tenant_override,
            settings.role_override,
        )
    if settings.mcp_unguarded:  # start-up stopped unless MCP_ALLOW_UNAUTHENTICATED=true said the network is private
        logger.warning(
            "!!! /mcp IS OPEN: MCP_HOST=%r is not loopback and neither MCP_AUTH_TOKEN nor MCP_JWT_JWKS_URL is set; "
            "MCP_ALLOW_UNAUTHENTICATED=true says only TAIS can reach it. Anyone else who can would be any tenant's "
            "admin. !!!",
            settings.mcp_host,
        )
    if settings.jwt_mode:
        logger.info(
            "identity: a bearer JWT on every /mcp request, issuer %s, audience %r, keys from %s; tenant claim %r, "
            "roles claim %r",
            settings.mcp_jwt_issuer,
            settings.mcp_jwt_audience,
            settings.mcp_jwt_jwks_url,
            settings.mcp_jwt_tenant_claim,
            settings.mcp_jwt_roles_claim,
        )
        if settings.mcp_jwt_jwks_url and settings.mcp_jwt_jwks_url.startswith("http://"):
            logger.warning("MCP_JWT_JWKS_URL is plain http: whoever can change that traffic can forge tokens")
    if arguments.demo:
        logger.warning(
            "!!! DEMO MODE (--demo): every answer comes from generated sample data, not from OpenMeter "
            "(an in-process stand-in of its %s API); OPENMETER_API_KEY and OPENMETER_URL are ignored. !!!",
            settings.api,
        )
    logger.info(
        "serving MCP on http://%s:%d/mcp (health: /health, %s), OpenMeter %s (%s API), meter %r, downloads in %s",
        settings.mcp_host,
        settings.mcp_port,
        "stateless" if settings.mcp_stateless else "stateful sessions",
        settings.openmeter_url,
        settings.api,
        settings.openmeter_meter,
        describe_store_url(settings.download_store_url.get_secret_value() if settings.download_store_url else None),
    )
    logger.info(
        "OpenTelemetry: %s", telemetry.description if telemetry else "off (OTEL_EXPORTER_OTLP_ENDPOINT is not set)"
    )
    if settings.download_port is not None:
        logger.info(
            "serving downloads only on http://%s:%d (/download/..., /health; no /mcp)",
            settings.download_host or settings.mcp_host,
            settings.download_port,
        )
    try:
        app = create_app(settings, demo=arguments.demo, telemetry=telemetry)
        if settings.download_port is None:
            uvicorn.run(app, host=settings.mcp_host, port=settings.mcp_port, **uvicorn_options(settings))
        else:
            serve_with_download_listener(app, settings, settings.download_port)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # when the app's lifespan did not get to it (e.g. the port was taken)
    return 0


def serve_with_download_listener(app: Any, settings: Settings, download_port: int) -> None:
    """The app on MCP_PORT and its download routes alone on DOWNLOAD_PORT, in one event loop. The app's lifespan owns
    the download store; the listener has none, and stops when the app's server does (its signals end both)."""
    import asyncio
    import contextlib

    import uvicorn

    class Listener(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the main server takes the signals, and stops this one
            yield

    options = uvicorn_options(settings)
    main_server = uvicorn.Server(uvicorn.Config(app, host=settings.mcp_host, port=settings.mcp_port, **options))
    listener = Listener(
        uvicorn.Config(
            app.state.download_app,
            host=settings.download_host or settings.mcp_host,
            port=download_port,
            lifespan="off",
            **options,
        )
    )

    async def both() -> None:
        downloads = asyncio.create_task(listener.serve())
        try:
            await main_server.serve()
        finally:
            listener.should_exit = True
            await downloads

    asyncio.run(both())


if __name__ == "__main__":
    sys.exit(main())
