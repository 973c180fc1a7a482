"""The inline charts in a real browser: headless Chromium (Debian's package) runs each view in the test host
(tests/view_host.html), which speaks MCP Apps to it as a chat host does, and feeds it real tool results.

The results and the views come from real MCP calls: the `--demo` app (the production path over the in-process
OpenMeter stand-in, a fixed clock) serves `tools/call` and `resources/read` over HTTP. One browser and one server for
the module. Without Chromium the module is skipped with the reason, except in CI (CI=true), where it must run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import Browser, sync_playwright

from ai_credit_usage.answers.render import format_change, format_credits, format_percent, plain_text
from ai_credit_usage.answers.views import BALANCE, FORECAST, SUMMARY, TREND, VIEWS, View
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.standin.demo import DEMO_SETTINGS, DEMO_SETTINGS_V3
from ai_credit_usage.runtime.settings import load_settings
from server import create_app
from tests.conftest import API_KEY, CLIENT_TIMEOUT, NOW, SETTINGS_VARIABLES, FakeClock
from tests.servers import serve_in_thread
from tests.view_host import Shown, ViewHost, chromium_path, launch

CHROMIUM_MISSING = "Chromium is not installed (apt-get install chromium); the browser tests of the views need it"

DEMO = {"X-Tenant-Name": "demo", "X-User-UserRole": "admin"}
NOBODY = {"X-Tenant-Name": "umbrella", "X-User-UserRole": "admin"}  # a tenant with no usage and no allowance
# (name, tenant headers, tool, arguments): every result the tests draw, from one server.
CALLS = (
    ("trend", DEMO, "get_credit_usage_trend", {"from_date": "2025-11-03", "to_date": "2026-01-20"}),
    ("trend by module", DEMO, "get_credit_usage_trend", {"from_date": "2025-12-21", "group_by": "module"}),
    ("forecast", DEMO, "get_credit_forecast", {}),
    ("balance", DEMO, "get_credit_balance", {}),
    ("summary", DEMO, "get_credit_usage_summary", {"from_date": "2026-01-01"}),
    ("no usage trend", NOBODY, "get_credit_usage_trend", {}),
    ("no usage summary", NOBODY, "get_credit_usage_summary", {}),
    ("no allowance", NOBODY, "get_credit_balance", {}),
    ("bad time zone", DEMO, "get_credit_usage_trend", {"time_zone": "Mars/Olympus_Mons"}),
    ("no such user", DEMO, "get_credit_usage_trend", {"user": "grace.keler@demo.example"}),
    ("one module", DEMO, "get_credit_usage_summary", {"from_date": "2026-01-01", "module": "agents"}),
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail(CHROMIUM_MISSING + "; .ci/run installs it")
        pytest.skip(CHROMIUM_MISSING)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


def _demo_app(settings: dict[str, str]) -> Any:
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: clean the environment here, not per test
        for name in SETTINGS_VARIABLES:
            patch.delenv(name, raising=False)
        return create_app(load_settings(_env_file=None, **settings), clock=FakeClock(NOW), demo=True)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[dict[str, dict[str, Any]], dict[View, str]]]:
    """Every result of CALLS as a CallToolResult in JSON, as a host receives it, and every view's HTML as
    resources/read served it."""
    # The calls in a thread of their own: Playwright's sync API keeps an event loop running in this one.
    with serve_in_thread(_demo_app(DEMO_SETTINGS)) as url, ThreadPoolExecutor(1) as thread:
        yield thread.submit(anyio.run, _ask, url).result()


@pytest.fixture(scope="module")
def ledger_balance() -> dict[str, Any]:
    """The balance on v3 (Konnect): from the credits ledger, which has no period and no per-grant remainder."""

    async def ask(url: str) -> dict[str, Any]:
        async with _client(url, DEMO) as client:
            result = await client.call_tool("get_credit_balance", {})
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    with serve_in_thread(_demo_app(DEMO_SETTINGS_V3)) as url, ThreadPoolExecutor(1) as thread:
        return thread.submit(anyio.run, ask, url).result()


async def _ask(url: str) -> tuple[dict[str, dict[str, Any]], dict[View, str]]:
    results: dict[str, dict[str, Any]] = {}
    views: dict[View, str] = {}

    async def call(name: str, headers: dict[str, str], tool: str, arguments: dict[str, Any]) -> None:
        async with _client(url, headers) as client:
            result = await client.call_tool(tool, arguments)
        results[name] = result.model_dump(mode="json", by_alias=True, exclude_none=True)

    async with anyio.create_task_group() as calls:  # at once, as several chats would
        for each in CALLS:
            calls.start_soon(call, *each)
    async with _client(url, DEMO) as client:
        for view in VIEWS:
            read = await client.read_resource(view.uri)
            (content,) = read.contents
            assert content.mime_type == "text/html;profile=mcp-app"
            views[view] = getattr(content, "text", "")
    return results, views


@contextlib.asynccontextmanager
async def _client(url: str, headers: dict[str, str]) -> Any:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=CLIENT_TIMEOUT) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def host(browser: Browser) -> Iterator[ViewHost]:
    host = ViewHost(browser)
    yield host
    host.close()


@pytest.fixture
def draw(host: ViewHost, served: tuple[dict[str, dict[str, Any]], dict[View, str]]) -> Iterator[Any]:
    """draw(view, result name, ...) -> the view drawn in the test host, and the result; afterwards, the view must
    have asked the network for nothing and logged no error (a refusal of the host's CSP, say)."""
    results, views = served
    shown: list[Shown] = []

    def drawn(view: View, name: str, **options: Any) -> tuple[Shown, dict[str, Any]]:
        result = results[name]
        shown.append(host.show(views[view], result, **options))
        return shown[-1], result

    yield drawn
    for each in shown:
        assert each.requests == [], each.requests
        assert each.errors == [], each.errors


def credits(value: float) -> str:
    return f"{value:,.2f}"


def texts(shown: Shown, selector: str) -> list[str]:
    return [text.strip() for text in shown.view.locator(selector).all_text_contents()]


def test_the_handshake_is_a_hosts_initialize_then_initialized_and_the_view_reports_its_size(draw: Any) -> None:
    shown, _ = draw(TREND, "trend")
    first, second = shown.messages()[:2]
    assert first["method"] == "ui/initialize" and isinstance(first["id"], int)
    assert first["params"]["protocolVersion"] == "2026-01-26" and first["params"]["appInfo"]["name"]
    assert second["method"] == "ui/notifications/initialized"
    size = shown.messages("ui/notifications/size-changed")[-1]["params"]
    drawn = shown.view.locator("body").bounding_box()
    assert drawn is not None and size["height"] == pytest.approx(drawn["height"], abs=1) and size["height"] > 200


def test_the_trend_draws_every_period_of_the_result_and_marks_partial_and_unusual_ones(draw: Any) -> None:
    shown, result = draw(TREND, "trend")
    data = result["structuredContent"]
    bars = shown.view.locator("g.bar")
    assert bars.count() == len(data["rows"]) > 5
    assert [bars.nth(i).get_attribute("data-period") for i in range(bars.count())] == [
        row["period"] for row in data["rows"]
    ]
    partial = [row["period"] for row in data["rows"] if row["partial"]]
    assert partial and texts(shown, "g.bar.partial") is not None
    assert [shown.view.locator("g.bar.partial").nth(i).get_attribute("data-period") for i in range(len(partial))] == (
        partial
    )
    unusual = data["unusual_periods"]
    assert unusual, "the demo's runaway run makes an unusual week"
    assert texts(shown, "g.bar.unusual text.unusual-label") == [
        f"{found['times_typical']:.1f}\N{MULTIPLICATION SIGN}" for found in unusual
    ]
    assert f"typical {credits(data['typical_credits'])}" in texts(shown, "svg text.label")
    assert credits(data["total_credits"]) in texts(shown, ".figure b")
    # The y axis reaches the largest period, and that bar is the tallest.
    heights = [float(bars.nth(i).locator("rect").first.get_attribute("height") or 0) for i in range(bars.count())]
    largest = max(range(len(data["rows"])), key=lambda i: data["rows"][i]["credits"])
    assert heights.index(max(heights)) == largest


def test_a_grouped_trend_stacks_each_series_and_names_them(draw: Any) -> None:
    shown, result = draw(TREND, "trend by module")
    data = result["structuredContent"]
    assert texts(shown, ".legend span") == data["series"]
    first = shown.view.locator("g.bar").first.locator("rect")
    assert first.count() == len(data["series"])


def test_the_forecast_draws_each_day_its_bands_and_the_balance(draw: Any) -> None:
    shown, result = draw(FORECAST, "forecast")
    data = result["structuredContent"]
    days = shown.view.locator("circle.day")
    assert [days.nth(i).get_attribute("data-day") for i in range(days.count())] == [d["day"] for d in data["days"]]
    assert shown.view.locator("polygon.band-80").count() == 1 and shown.view.locator("polygon.band-95").count() == 1
    assert texts(shown, "text.total-label") == [credits(data["projected_total"])]
    assert credits(data["used_so_far"]) in texts(shown, ".figure b")
    assert data["balance"] is not None, "the demo tenant has an allowance"
    assert texts(shown, "text.balance-label") == [f"{credits(data['balance'])} credits left"]


def test_the_balance_burns_down_to_the_runway_and_marks_the_reset(draw: Any) -> None:
    shown, result = draw(BALANCE, "balance")
    data = result["structuredContent"]
    assert data["status"] == "metered"
    figures = texts(shown, ".figure b")
    assert credits(data["balance"]) in figures and credits(data["usage"]) in figures
    assert f"resets {data['period']['to'][:10]}" in texts(shown, "svg text")
    runway = data["runway"]
    if runway is not None:
        assert shown.view.locator("polygon.runway-range").count() == 1
        assert runway["earliest"] in texts(shown, "text.range-label")


def test_the_summary_draws_the_movers(draw: Any) -> None:
    shown, result = draw(SUMMARY, "summary")
    movers = result["structuredContent"]["movers"]
    assert movers, "the demo's runaway run makes movers"
    bars = shown.view.locator("g.hbar.mover")
    assert [bars.nth(i).get_attribute("data-label") for i in range(bars.count())] == [m["user"] for m in movers]
    for i, mover in enumerate(movers):
        drawn = bars.nth(i).locator("text").all_text_contents()
        assert f"{format_change(mover['change_credits'])} ({format_percent(mover['change_percent'])})" in drawn


def test_the_summary_draws_the_top_5_of_each_dimension_as_the_text_gives_them(draw: Any) -> None:
    shown, result = draw(SUMMARY, "summary")
    data = result["structuredContent"]
    assert texts(shown, ".panel h2") == ["Top users", "Top modules", "Top products", "Top skills"]
    assert shown.view.locator("g.hbar.row").count() == 0
    text = result["content"][0]["text"]
    for dimension, tops in data["tops"].items():
        bars = shown.view.locator(f"g.hbar.top-{dimension}")
        assert bars.count() == len(tops) > 0
        for i, top in enumerate(tops):
            drawn = f"{format_credits(top['credits'])} ({top['share']:.1%})"
            assert drawn in bars.nth(i).locator("text").all_text_contents()
            assert f"{plain_text(top['name'])} {drawn}" in text  # the text's "Top users: …" line says the same


def test_without_tops_the_summary_draws_its_largest_rows_with_the_texts_rounding(
    host: ViewHost, served: tuple[dict[str, dict[str, Any]], dict[View, str]]
) -> None:
    """A summary result without `tops` (an older server's) draws its 10 largest rows. Their figures are rounded as
    the text rounds them (Python's: the float's exact value, a tie to even), not as the browser's Intl would."""
    results, views = served
    result = copy.deepcopy(results["summary"])
    data = result["structuredContent"]
    del data["tops"]
    awkward = [2782.705, 1.005, 2.675, 0.125, 0.375, 1234567.125, 0.004, 10.0]
    for row, value in zip(data["rows"], awkward, strict=False):
        row["credits"] = value
    shown = host.show(views[SUMMARY], result)
    assert shown.requests == [] and shown.errors == []
    rows = shown.view.locator("g.hbar.row")
    assert rows.count() == min(10, len(data["rows"]))
    for i, value in enumerate(awkward):
        assert format_credits(value) in rows.nth(i).locator("text").all_text_contents(), value


def test_a_ledger_balance_burns_down_without_a_reset(
    host: ViewHost, served: tuple[dict[str, dict[str, Any]], dict[View, str]], ledger_balance: dict[str, Any]
) -> None:
    data = ledger_balance["structuredContent"]
    assert data["source"] == "ledger" and data["period"] is None and data["runway"] is not None
    shown = host.show(served[1][BALANCE], ledger_balance)
    assert shown.requests == [] and shown.errors == []
    assert f"used since {data['usage_since'][:10]}" in texts(shown, ".figure span")
    assert f"{data['currency']} ledger" in (shown.view.locator(".sub").text_content() or "")
    assert shown.view.locator("polygon.runway-range").count() == 1
    assert shown.view.locator("line.reset").count() == 0
    assert not any("reset" in text for text in texts(shown, ".note"))


@pytest.mark.parametrize(
    ("view", "name", "message"),
    [
        (TREND, "no usage trend", "No AI credits were used in this window."),
        (SUMMARY, "no usage summary", "No AI credits were used in this window."),
        (BALANCE, "no allowance", "No credit allowance is set up for this tenant."),
    ],
)
def test_a_result_with_nothing_to_draw_is_a_plain_message(draw: Any, view: View, name: str, message: str) -> None:
    shown, result = draw(view, name)
    assert not result.get("isError")
    assert texts(shown, ".message") == [message]
    assert shown.view.locator("svg g.bar, svg g.hbar").count() == 0


def test_a_filter_that_matches_nothing_shows_the_answers_own_sentence(draw: Any) -> None:
    shown, result = draw(TREND, "no such user")
    no_match = result["structuredContent"]["no_match"]
    assert no_match and "grace.keller@demo.example" in no_match["closest"]
    assert texts(shown, ".message") == [no_match["message"]]
    assert no_match["message"] in result["content"][0]["text"]


def test_a_filtered_answer_says_what_it_is_filtered_on(draw: Any) -> None:
    shown, result = draw(SUMMARY, "one module")
    assert result["structuredContent"]["filters"] == {"module": "agents"}
    assert (shown.view.locator(".sub").first.text_content() or "").startswith("module agents; ")
    assert texts(shown, "g.hbar.top-module text.label") == ["agents"]


def test_an_error_result_shows_its_one_sentence(draw: Any) -> None:
    shown, result = draw(TREND, "bad time zone")
    assert result["isError"] is True
    (sentence,) = [block["text"] for block in result["content"]]
    assert texts(shown, ".message.error") == [sentence]
    assert shown.view.locator("#app").get_attribute("data-state") == "error"


@pytest.mark.parametrize("download_file", [False, True], ids=["open-link", "download-file"])
def test_the_excel_link_goes_through_the_host(draw: Any, download_file: bool) -> None:
    shown, result = draw(TREND, "trend", download_file=download_file)
    url = result["structuredContent"]["download_url"]
    shown.view.locator("#download").click()
    if download_file:
        (link,) = shown.wait_for("ui/download-file")["params"]["contents"]
        assert link["type"] == "resource_link" and link["uri"] == url and link["name"].endswith(".xlsx")
    else:
        assert shown.wait_for("ui/open-link")["params"] == {"url": url}


def test_the_view_follows_the_hosts_theme(draw: Any) -> None:
    shown, _ = draw(FORECAST, "forecast", theme="dark")
    background = "() => getComputedStyle(document.body).backgroundColor"
    frame = shown.page.frames[1]
    assert frame.evaluate("() => document.documentElement.dataset.theme") == "dark"
    assert frame.evaluate(background) == "rgb(13, 17, 23)"
    shown.page.evaluate("() => changeHostContext({theme: 'light'})")
    frame.wait_for_function("() => document.documentElement.dataset.theme === 'light'")
    assert frame.evaluate(background) == "rgb(255, 255, 255)"


def test_each_view_is_self_contained(served: tuple[dict[str, dict[str, Any]], dict[View, str]]) -> None:
    _, views = served
    for view, html in views.items():
        assert len(html.encode()) < 100_000, view
        assert f'data-view="{view.name}"' in html
        # Nothing to load: no external script, style, image or font, and no code compiled from strings.
        assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", html), view
        assert not re.search(r"\b(eval|Function|fetch|XMLHttpRequest|WebSocket|localStorage|importScripts)\s*\(", html)


def test_names_in_the_result_stay_text(
    host: ViewHost, served: tuple[dict[str, dict[str, Any]], dict[View, str]]
) -> None:
    """A name is drawn as text, never as markup: a user called like an image tag loads nothing."""
    results, views = served
    result = copy.deepcopy(results["summary"])
    hostile = '<img src="https://attacker.example/x.png" onerror="parent.postMessage(1, \'*\')">'
    result["structuredContent"]["tops"]["user"][0]["name"] = hostile
    result["structuredContent"]["tenant"] = hostile
    shown = host.show(views[SUMMARY], result)
    assert shown.requests == [] and shown.errors == []
    assert shown.view.locator("img").count() == 0
    assert hostile in shown.view.locator("h1").text_content()
    assert shown.view.locator("g.hbar.top-user").first.get_attribute("data-label") == hostile


def test_the_forecast_splits_recorded_from_projected_at_today_in_its_time_zone(draw: Any) -> None:
    shown, result = draw(FORECAST, "forecast")
    data = result["structuredContent"]
    today = data["as_of"][:10]  # the demo's forecast is in UTC
    recorded = (shown.view.locator("polyline.used-line").get_attribute("points") or "").split()
    assert len(recorded) == [day["day"] for day in data["days"]].index(today) + 1


# Names as an attacker would pick them: markup, a script, an attribute break-out, and a name that starts like the
# CSS variables the view routes through the style (`var(`).
HOSTILE_NAMES = (
    '<img src="https://attacker.example/x.png" onerror="parent.postMessage(1, \'*\')">',
    '"><script>parent.postMessage(2, "*")</script>',
    "var(--s0); background: url(https://attacker.example/y.png)",
    "</title><svg onload=parent.postMessage(3,'*')>",
)
HOSTILE_TENANT = "<b onmouseover=alert(1)>acme</b>"


@pytest.fixture(scope="module")
def hostile_results() -> dict[str, dict[str, Any]]:
    """Real tool results over MCP whose tenant, users, modules, products and skills are hostile names, and one whose
    filter value is (a miss: it comes back in the no-match sentence and the subtitle)."""
    fake = OpenMeterStandIn(api_key=API_KEY)
    fake.add_meter(dict(AI_CREDITS_METER))
    for day in range(1, 15):
        for index, name in enumerate(HOSTILE_NAMES):
            at = NOW - timedelta(days=day, hours=index)
            fake.ingest(
                make_event(
                    tenant=HOSTILE_TENANT, credits=10 + index, time=at, user=name, module=name, product=name, skill=name
                )
            )
    headers = {"X-Tenant-Name": HOSTILE_TENANT, "X-User-UserRole": "admin"}
    calls = {
        "trend": ("get_credit_usage_trend", {"from_date": "2026-01-05", "group_by": "user"}),
        "summary": ("get_credit_usage_summary", {"from_date": "2026-01-05"}),
        "forecast": ("get_credit_forecast", {"user": HOSTILE_NAMES[0]}),
        "miss": ("get_credit_usage_summary", {"from_date": "2026-01-05", "user": HOSTILE_NAMES[1] + "x"}),
    }

    async def ask(url: str) -> dict[str, dict[str, Any]]:
        results = {}
        async with _client(url, headers) as client:
            for name, (tool, arguments) in calls.items():
                result = await client.call_tool(tool, arguments)
                results[name] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return results

    with pytest.MonkeyPatch.context() as patch:
        for variable in SETTINGS_VARIABLES:
            patch.delenv(variable, raising=False)
        with serve_in_thread(fake.app) as standin:
            settings = load_settings(_env_file=None, openmeter_api_key=API_KEY, openmeter_url=standin + fake.base_path)
            with serve_in_thread(create_app(settings, clock=FakeClock(NOW))) as url, ThreadPoolExecutor(1) as thread:
                return thread.submit(anyio.run, ask, url).result()


@pytest.mark.parametrize(
    ("view", "name"), [(TREND, "trend"), (SUMMARY, "summary"), (FORECAST, "forecast"), (SUMMARY, "miss")]
)
def test_hostile_names_from_a_real_answer_stay_text_in_every_view(
    host: ViewHost,
    served: tuple[dict[str, dict[str, Any]], dict[View, str]],
    hostile_results: dict[str, dict[str, Any]],
    view: View,
    name: str,
) -> None:
    """Names the tenant's own usage carries (and a filter value the caller sent) reach the view only as text: no
    element is made of them, nothing is loaded or run, and they read as they are."""
    _, views = served
    result = hostile_results[name]
    assert not result.get("isError"), result
    shown = host.show(views[view], result)
    assert shown.requests == [] and shown.errors == []
    # The host page runs inline script (as the host's CSP allows the view's own): injected markup would post here.
    assert all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in shown.messages())
    made = "img, iframe, svg svg, foreignObject, [onload], [onerror], [onmouseover], [style*=attacker]"
    assert shown.view.locator(made).count() == 0
    assert shown.view.locator("script").count() == 1  # the view's own
    drawn = shown.view.locator("#app").text_content() or ""
    if name == "miss":
        assert result["structuredContent"]["no_match"]["message"] in drawn
        assert HOSTILE_NAMES[1] + "x" in drawn
    else:
        assert HOSTILE_TENANT in drawn or name == "forecast"
        assert HOSTILE_NAMES[0] in drawn
    if name == "summary":  # each name kept whole in its bar's data-label, the `var(` one too
        labels = {shown.view.locator("g.hbar.top-user").nth(i).get_attribute("data-label") for i in range(4)}
        assert labels == set(HOSTILE_NAMES)
