"""Entry point: `uv run main.py` reads the configuration, then serves the MCP app with uvicorn.

`uv run main.py --demo` serves the same tools from generated sample data instead of OpenMeter (no key needed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Everything else is imported inside the functions: each workbook process re-runs this module's top level
# (multiprocessing's __main__ fix-up under forkserver), where these imports cost about a second per call.

logger = logging.getLogger("ai_credit_usage")


def configure_logging() -> None:
    from ai_credit_usage.telemetry import TraceIdFormatter

    # Before the MCP SDK is imported: its server calls basicConfig() too, which is then a no-op.
    console = logging.StreamHandler()
    console.setFormatter(TraceIdFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)
    # Per-request chatter from the SDK ("Terminating session: None" on every stateless POST) and the HTTP client.
    for noisy in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    from ai_credit_usage.settings import ConfigError, load_settings
    from ai_credit_usage.telemetry import setup_telemetry

    arguments = parse_arguments(argv)
    configure_logging()
    try:
        overrides: dict[str, str] = {}
        if arguments.demo:  # a placeholder key and URL stand in for OpenMeter's; without --demo a missing key stops
            from ai_credit_usage.demo import demo_settings

            overrides = demo_settings(_setting("OPENMETER_API"))  # v1 unless OPENMETER_API=v3
        settings = load_settings(**overrides)
        telemetry = setup_telemetry(os.environ)  # only with OTEL_EXPORTER_OTLP_ENDPOINT, as Aspire sets it
    except ConfigError as exc:
        print(f"ai-credits-mcp: {exc}", file=sys.stderr)
        return 2
    # The rest only once the configuration is known good, so a mistake is reported at once; server after logging.
    import uvicorn

    from ai_credit_usage.downloads import describe_store_url
    from server import create_app

    if settings.tenant_override or settings.role_override:
        logger.warning(
            "!!! DEVELOPMENT OVERRIDES ACTIVE: TENANT_OVERRIDE=%r ROLE_OVERRIDE=%r replace the X-Tenant-Name and "
            "X-User-UserRole headers of EVERY caller. Never run this in production. !!!",
            settings.tenant_override,
            settings.role_override,
        )
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
    # No access log: download URLs carry their capability token, which must not end up in log files.
    try:
        uvicorn.run(
            create_app(settings, demo=arguments.demo, telemetry=telemetry),
            host=settings.mcp_host,
            port=settings.mcp_port,
            access_log=False,
            log_level="info",
            # Uvicorn's own config would give its loggers private handlers; without it their lines (start-up, and
            # "Exception in ASGI application") reach the root handlers: the console format and OpenTelemetry.
            log_config=None,
        )
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # when the app's lifespan did not get to it (e.g. the port was taken)
    return 0


if __name__ == "__main__":
    sys.exit(main())
