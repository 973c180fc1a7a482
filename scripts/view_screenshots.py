"""Screenshots of the inline charts (MCP Apps views) for docs/: each view, light and dark, drawn by headless Chromium
in the test host (tests/view_host.html) from real answers of the `--demo` app at a fixed moment.

    uv run python scripts/view_screenshots.py          # writes docs/views/<view>-<theme>.png

Needs Debian's chromium (`apt-get install chromium`); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ai_credit_usage.answers.views import BALANCE, FORECAST, SUMMARY, TREND, View  # noqa: E402
from ai_credit_usage.openmeter.standin.demo import DEMO_SETTINGS  # noqa: E402
from ai_credit_usage.runtime.settings import load_settings  # noqa: E402
from server import create_app  # noqa: E402
from tests.servers import serve_in_thread  # noqa: E402
from tests.view_host import ViewHost, chromium_path, launch  # noqa: E402

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)  # the tests' moment: the demo's data and windows are always the same
DEMO = {"X-Tenant-Name": "demo", "X-User-UserRole": "admin"}
SHOTS: tuple[tuple[View, str, dict[str, Any]], ...] = (
    (TREND, "get_credit_usage_trend", {"from_date": "2025-11-03", "to_date": "2026-01-20"}),
    (FORECAST, "get_credit_forecast", {}),
    (BALANCE, "get_credit_balance", {}),
    (SUMMARY, "get_credit_usage_summary", {"from_date": "2026-01-01"}),
)


async def ask(url: str) -> list[tuple[View, str, dict[str, Any], dict[str, Any]]]:
    """(view, its HTML from resources/read, the arguments, the tool result as a host receives it) for each shot."""
    answers = []
    async with (
        httpx2.AsyncClient(headers=DEMO, timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        for view, tool, arguments in SHOTS:
            result = await client.call_tool(tool, arguments)
            read = await client.read_resource(view.uri)
            html = getattr(read.contents[0], "text", "")
            answers.append((view, html, arguments, result.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "views", help="where the PNG files go")
    options = parser.parse_args()
    executable = chromium_path()
    if executable is None:
        print("view_screenshots: Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    settings = load_settings(_env_file=None, **DEMO_SETTINGS)
    with serve_in_thread(create_app(settings, clock=lambda: NOW, demo=True)) as url, ThreadPoolExecutor(1) as thread:
        answers = thread.submit(anyio.run, ask, url).result()  # Playwright's sync API runs a loop in this thread
    options.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        host = ViewHost(browser)
        for view, html, arguments, result in answers:
            for theme in ("light", "dark"):
                shown = host.show(html, result, arguments=arguments, theme=theme)
                if shown.requests or shown.errors:
                    print(f"view_screenshots: {view.name}: {shown.requests} {shown.errors}", file=sys.stderr)
                    return 1
                path = options.out / f"{view.name}-{theme}.png"
                host.page.locator("iframe").screenshot(path=str(path))
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
