"""Drive the MCP Apps views in a real headless Chromium (Debian's package) through tests/view_host.html, a small
host that speaks the protocol to a view as Claude or VS Code do. Used by tests/test_views_browser.py and by
scripts/view_screenshots.py (the pictures in docs/)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, FrameLocator, Page, Playwright, Route

HOST_PAGE = Path(__file__).with_name("view_host.html")
# As the machine notes say for Chromium as root in a closed network: no sandbox, no GPU, none of its own traffic.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEW_WIDTH = 700
# The frame has the height the view reported last.
SIZED = """() => {
  const sizes = hostLog.filter(m => m.method === 'ui/notifications/size-changed');
  return sizes.length > 0 && document.querySelector('iframe').offsetHeight === sizes.at(-1).params.height;
}"""


def chromium_path() -> str | None:
    """Debian's chromium, or whatever CHROMIUM names; None when there is none."""
    named = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    return named if Path(named).exists() else shutil.which("chromium")


def launch(playwright: Playwright, executable: str) -> Browser:
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)


@dataclass
class Shown:
    """A view mounted in the host page, with everything it asked of the network and every error it logged."""

    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def view(self) -> FrameLocator:
        return self.page.frame_locator("iframe")

    def messages(self, method: str | None = None) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.page.evaluate("() => hostLog")
        return [message for message in log if method is None or message.get("method") == method]

    def wait_for(self, method: str) -> dict[str, Any]:
        self.page.wait_for_function("m => hostLog.some(x => x.method === m)", arg=method, timeout=5000)
        return self.messages(method)[-1]


class ViewHost:
    """One page of the test host for many views, one after another (a new page costs a new browser context)."""

    def __init__(self, browser: Browser) -> None:
        self.page = browser.new_page(viewport={"width": VIEW_WIDTH + 20, "height": 800})
        self.shown = Shown(self.page)
        # The host page is set as content, so any request at all is the view's: record it and refuse it.
        self.page.route("**/*", self._refuse)
        self.page.on("console", lambda message: self._error(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self._error(str(error)))

    def _refuse(self, route: Route) -> None:
        self.shown.requests.append(route.request.url)
        route.abort()

    def _error(self, text: str) -> None:
        self.shown.errors.append(text)

    def show(
        self,
        html: str,
        result: dict[str, Any],
        *,
        arguments: dict[str, Any] | None = None,
        theme: str = "light",
        download_file: bool = False,
    ) -> Shown:
        """Mount `html` (a view as resources/read served it) in a fresh host page and push `result` (a
        CallToolResult as JSON) once the view has initialized; returns when the view has drawn and the frame has
        the size the view reported last."""
        self.shown = Shown(self.page)
        page = self.page
        page.set_content(HOST_PAGE.read_text(encoding="utf-8"))
        page.evaluate(
            "([html, input, result, options]) => mountView(html, input, result, options)",
            [html, arguments or {}, result, {"theme": theme, "downloadFile": download_file}],
        )
        self.shown.wait_for("ui/notifications/initialized")
        self.shown.view.locator("#app[data-state]").wait_for(timeout=5000)
        page.wait_for_function(SIZED, timeout=5000)
        return self.shown

    def close(self) -> None:
        self.page.close()
