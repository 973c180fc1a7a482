"""Entry point: `uv run main.py` reads the configuration, then serves the MCP app with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from ai_credit_usage.settings import ConfigError, load_settings

logger = logging.getLogger("ai_credit_usage")


def configure_logging() -> None:
    # Before the MCP SDK is imported: its server calls basicConfig() too, which is then a no-op.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # Per-request chatter from the SDK ("Terminating session: None" on every stateless POST) and the HTTP client.
    for noisy in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> int:
    configure_logging()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ai-credits-mcp: {exc}", file=sys.stderr)
        return 2
    from server import create_app  # imported after logging is configured

    if settings.tenant_override or settings.role_override:
        logger.warning(
            "!!! DEVELOPMENT OVERRIDES ACTIVE: TENANT_OVERRIDE=%r ROLE_OVERRIDE=%r replace the X-Tenant-Name and "
            "X-User-UserRole headers of EVERY caller. Never run this in production. !!!",
            settings.tenant_override,
            settings.role_override,
        )
    logger.info(
        "serving MCP on http://%s:%d/mcp (health: /health), OpenMeter %s, meter %r",
        settings.mcp_host,
        settings.mcp_port,
        settings.openmeter_url,
        settings.openmeter_meter,
    )
    # No access log: download URLs carry their capability token, which must not end up in log files.
    uvicorn.run(
        create_app(settings), host=settings.mcp_host, port=settings.mcp_port, access_log=False, log_level="info"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
