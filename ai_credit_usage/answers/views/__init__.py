"""The inline charts (MCP Apps): one HTML view per charted tool, served as a `ui://` resource that a host renders in a
sandboxed frame beside the answer and feeds with the tool's own result (`ui/notifications/tool-result`).

Each view is one self-contained document, built here from `view.css` and `view.js`: inline script and style, no
network (the host's default deny-all CSP stays in force), no eval, no storage. It draws only from the structured
result the host pushes, so it shows nothing the answer's text does not also say. Hosts without MCP Apps ignore the
tools' `_meta.ui` and show the text, which is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from mcp.server.apps import Apps


@dataclass(frozen=True)
class View:
    name: str  # also the document's data-view: which drawing view.js uses
    title: str
    description: str

    @property
    def uri(self) -> str:
        return f"ui://ai-credits/{self.name}.html"


TREND = View("trend", "AI credits over time", "The periods as bars, partial and unusual periods marked.")
FORECAST = View(
    "forecast", "AI credit forecast", "Cumulative credits: used so far, the projection with its 80% and 95% bands."
)
BALANCE = View("balance", "AI credits left", "What is left, burnt down to the reset, with the runway's range.")
SUMMARY = View("summary", "AI credit usage breakdown", "The largest users, modules, products and skills as bars.")
VIEWS = (TREND, FORECAST, BALANCE, SUMMARY)
MAX_DOCUMENT_BYTES = 100_000  # the budget for one view; a test holds every view to it


@cache
def document(view: View) -> str:
    """The view's whole HTML document, script and style inline."""
    assets = files(__package__)
    style = assets.joinpath("view.css").read_text(encoding="utf-8")
    script = assets.joinpath("view.js").read_text(encoding="utf-8")
    return (
        "<!doctype html>\n"
        f'<html lang="en" data-view="{view.name}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{view.title}</title>\n<style>\n{style}</style>\n</head>\n<body>\n"
        f'<main id="app"></main>\n<script>\n{script}</script>\n</body>\n</html>\n'
    )


def apps_extension() -> Apps:
    """The MCP Apps extension with every view as a `ui://` resource (`text/html;profile=mcp-app`). The tools name
    their view in their own `_meta.ui.resourceUri` (tools.ToolSpec.view); no `csp` is declared, so the host's
    deny-all policy for external loads applies."""
    apps = Apps()
    for view in VIEWS:
        apps.add_html_resource(view.uri, document(view), name=view.name, title=view.title, description=view.description)
    return apps
