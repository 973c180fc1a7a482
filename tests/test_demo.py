"""`--demo`: the real app over the generated data set, through the production OpenMeter client and a real MCP client.

One demo server is shared by the module (generating the data takes about a second); the clock is fixed, so the data
and every window are the same on every run.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from openpyxl import load_workbook

from ai_credit_usage.answers.demo_notice import DEMO_ABOUT, DEMO_BANNER
from ai_credit_usage.openmeter.standin.demo import (
    DAYS,
    DEMO_SETTINGS,
    DEMO_SETTINGS_V3,
    MODULES,
    QUIET_WEEK_DAYS_AGO,
    SPIKE_DAYS_AGO,
    TENANTS,
    USERS_PER_TENANT,
    demo_events,
)
from ai_credit_usage.runtime.settings import load_settings
from server import create_app
from tests.conftest import NOW, SETTINGS_VARIABLES, FakeClock, call_tool, text_of
from tests.servers import DemoProcess, serve_in_thread

pytestmark = pytest.mark.anyio
DEMO = {"X-Tenant-Name": "demo", "X-User-UserRole": "admin"}
TODAY = NOW.date()


@contextlib.contextmanager
def start_demo(**overrides: Any) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: clean the environment here, not per test
        for name in SETTINGS_VARIABLES:
            patch.delenv(name, raising=False)
        settings = load_settings(_env_file=None, **{**DEMO_SETTINGS, **overrides})
    with serve_in_thread(create_app(settings, clock=FakeClock(NOW), demo=True)) as url:
        yield url


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with start_demo() as url:
        yield url


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return demo_events(NOW)


def daily_credits(events: list[dict[str, Any]], tenant: str) -> dict[date, float]:
    totals: dict[date, float] = defaultdict(float)
    for event in events:
        if event["data"]["tenant"] == tenant:
            totals[date.fromisoformat(event["time"][:10])] += float(event["data"]["credits"])
    return totals


def workbook_rows(url: str, result: CallToolResult) -> tuple[list[tuple[Any, ...]], dict[str, Any], str]:
    """Data rows, About sheet and filename of the answer's download."""
    match = re.search(r"\]\(http://localhost:8765(/download/[\w-]+)\)", text_of(result))
    assert match, text_of(result)
    response = httpx2.get(url + match.group(1))
    assert response.status_code == 200
    workbook = load_workbook(io.BytesIO(response.content))
    rows = list(workbook["Data"].iter_rows(values_only=True))
    filename = re.search(r'filename="([^"]+)"', response.headers["content-disposition"])
    assert filename
    return rows[1:], dict(workbook["About"].iter_rows(values_only=True)), filename.group(1)


def text_total(result: CallToolResult) -> str:
    match = re.search(r"^Total credits: (.+)$", text_of(result), re.MULTILINE)
    assert match, text_of(result)
    return match.group(1)


@pytest.mark.parametrize(
    "window",
    [
        pytest.param({}, id="default-7-days"),
        pytest.param({"from_date": (TODAY - timedelta(days=SPIKE_DAYS_AGO)).isoformat()}, id="since-the-spike"),
        pytest.param({"from_date": (TODAY - timedelta(days=30)).isoformat(), "to_date": "2026-01-10"}, id="dates"),
    ],
)
async def test_the_three_tools_agree_on_the_demo_tenant(demo_url: str, window: dict[str, str]) -> None:
    total_result = await call_tool(demo_url, "get_credit_usage_by_tenant", window, headers=DEMO)
    summary_result = await call_tool(demo_url, "get_credit_usage_summary", window, headers=DEMO)
    events_result = await call_tool(demo_url, "get_credit_events", window, headers=DEMO)
    results = (total_result, summary_result, events_result)
    assert not any(result.is_error for result in results), [text_of(result) for result in results]

    (tenant_row,), about, _ = workbook_rows(demo_url, total_result)
    assert tenant_row[0] == "demo" and tenant_row[1] > 100  # plausible: hundreds of credits a day
    summary, _, _ = workbook_rows(demo_url, summary_result)
    events, _, _ = workbook_rows(demo_url, events_result)
    assert math.fsum(row[-1] for row in summary) == pytest.approx(tenant_row[1], rel=1e-9)
    assert math.fsum(row[-1] for row in events) == pytest.approx(tenant_row[1], rel=1e-9)
    assert len({text_total(result) for result in results}) == 1

    start, end = datetime.fromisoformat(about["from (UTC)"]), datetime.fromisoformat(about["to (UTC, exclusive)"])
    assert len(events) > 10 * (end - start).days  # plausible: dozens of events a day
    assert all(start <= row[0].replace(tzinfo=UTC) < end for row in events)
    assert {row[4] for row in events} == {row[3] for row in summary} == {"demo"}
    assert all(row[1].endswith("@demo.example") and row[-1] > 0 for row in events)
    assert len({row[0] for row in summary}) <= USERS_PER_TENANT < len(summary)
    assert [row[-1] for row in summary] == sorted((row[-1] for row in summary), reverse=True)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="default-7-days"),
        pytest.param(
            {"from_date": (TODAY - timedelta(days=30)).isoformat(), "time_zone": "Europe/Paris"}, id="30-days"
        ),
    ],
)
async def test_the_trend_finds_the_spike_and_only_the_spike(demo_url: str, arguments: dict[str, str]) -> None:
    result = await call_tool(demo_url, "get_credit_usage_trend", arguments, headers=DEMO)
    assert not result.is_error, text_of(result)
    structured = result.structured_content
    assert structured is not None and structured["granularity"] == "day"
    spike_day = (TODAY - timedelta(days=SPIKE_DAYS_AGO)).isoformat()
    assert [found["period"] for found in structured["unusual_periods"]] == [spike_day]
    assert structured["unusual_periods"][0]["times_typical"] > 4
    assert f"- {spike_day}: " in text_of(result)
    rows, _, _ = workbook_rows(demo_url, result)
    days = [row[0].date().isoformat() for row in rows]
    assert days == sorted(days) and len(days) == len(set(days))  # one row per day, zero-filled, oldest first


@pytest.mark.parametrize("tenant", sorted(TENANTS))
async def test_the_demo_answers_the_forecast(demo_url: str, events: list[dict[str, Any]], tenant: str) -> None:
    result = await call_tool(demo_url, "get_credit_forecast", headers={**DEMO, "X-Tenant-Name": tenant})
    text = text_of(result)
    assert not result.is_error, text
    assert text.splitlines()[0] == DEMO_BANNER
    structured = result.structured_content
    assert structured is not None and structured["demo"] is True
    month = [value for day, value in daily_credits(events, tenant).items() if day >= TODAY.replace(day=1)]
    assert structured["used_so_far"] == pytest.approx(math.fsum(month))
    assert structured["enough_history"] is True  # 90 days of history
    # The rest of January (11.5 days, three weekends) at the demo's pace: at least a few hundred credits more.
    rest = structured["projected_total"] - structured["used_so_far"]
    assert structured["used_so_far"] / 20 < rest < structured["used_so_far"]
    assert structured["interval_95"]["low"] < structured["projected_total"] < structured["interval_95"]["high"]
    rows, about, filename = workbook_rows(demo_url, result)
    assert filename.startswith(f"DEMO_ai-credits_forecast_{tenant}_")
    assert len(rows) == 31 and about["data"] == DEMO_ABOUT


async def test_every_answer_and_workbook_says_demo(demo_url: str) -> None:
    result = await call_tool(demo_url, "get_credit_usage_summary", headers=DEMO)
    text = text_of(result)
    assert text.splitlines()[0] == DEMO_BANNER
    assert text.splitlines()[2].startswith("Tenant demo, ")  # then the answer exactly as in production
    rows, about, filename = workbook_rows(demo_url, result)
    assert about["data"] == DEMO_ABOUT
    assert filename.startswith("DEMO_ai-credits_summary_demo_")
    assert all(len(row) == 6 for row in rows)  # the data sheet stays exactly the table
    assert result.structured_content is not None and result.structured_content["demo"] is True
    bad = await call_tool(demo_url, "get_credit_events", {"from_date": "yesterday"}, headers=DEMO)
    assert bad.is_error and text_of(bad).startswith(DEMO_BANNER) and "from_date" in text_of(bad)
    async with (
        httpx2.AsyncClient() as http,
        Client(streamable_http_client(f"{demo_url}/mcp", http_client=http)) as client,
    ):
        assert "DEMO MODE" in (client.instructions or "")


async def test_each_tenant_sees_only_its_own_demo_data(demo_url: str) -> None:
    totals = {}
    for tenant in TENANTS:
        headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
        result = await call_tool(demo_url, "get_credit_usage_summary", headers=headers)
        rows, _, _ = workbook_rows(demo_url, result)
        assert {row[3] for row in rows} == {tenant}
        assert all(row[0].endswith(f"@{tenant}.example") for row in rows)
        totals[tenant] = text_total(result)
    assert len(set(totals.values())) == len(TENANTS)
    stranger = await call_tool(demo_url, "get_credit_usage_by_tenant", headers={**DEMO, "X-Tenant-Name": "Demo"})
    assert text_total(stranger) == "0.00"  # matched exactly: no data for a tenant the demo does not have


def test_the_data_set_has_tenants_users_modules_and_both_credit_forms(events: list[dict[str, Any]]) -> None:
    assert 15_000 < len(events) < 40_000
    assert {event["data"]["tenant"] for event in events} == set(TENANTS)
    for tenant in TENANTS:
        users = {event["data"]["user"] for event in events if event["data"]["tenant"] == tenant}
        assert len(users) == USERS_PER_TENANT
    assert {(e["data"]["module"], e["data"]["product"]) for e in events} == {(m.name, m.product) for m in MODULES}
    assert {e["data"]["skill"] for e in events} == {skill for module in MODULES for skill in module.skills}
    assert {type(event["data"]["credits"]) for event in events} == {float, str}
    assert all(event["subject"] != event["data"]["tenant"] for event in events)
    assert len({event["id"] for event in events}) == len(events)
    first, last = datetime.fromisoformat(events[0]["time"]), datetime.fromisoformat(events[-1]["time"])
    assert first.date() == TODAY - timedelta(days=DAYS - 1)
    assert NOW - timedelta(hours=6) < last < NOW


def test_weekends_are_low_and_there_is_a_spike_and_a_quiet_week(events: list[dict[str, Any]]) -> None:
    daily = daily_credits(events, "demo")
    spike_day = TODAY - timedelta(days=SPIKE_DAYS_AGO)
    quiet_days = {TODAY - timedelta(days=ago) for ago in QUIET_WEEK_DAYS_AGO}
    normal = {day: total for day, total in daily.items() if day not in quiet_days | {spike_day, TODAY}}
    weekdays = sorted(total for day, total in normal.items() if day.weekday() < 5)
    weekend = [total for day, total in normal.items() if day.weekday() >= 5]
    median_weekday = weekdays[len(weekdays) // 2]
    assert max(weekend) < 0.5 * median_weekday
    assert daily[spike_day] > 4 * max(weekdays)
    quiet_weekdays = [daily[day] for day in quiet_days if day.weekday() < 5]
    assert len(quiet_days) == 7 and max(quiet_weekdays) < 0.5 * median_weekday


def test_the_data_is_deterministic_and_stable_through_the_day(events: list[dict[str, Any]]) -> None:
    assert demo_events(NOW) == events
    later = demo_events(NOW + timedelta(hours=3))
    assert [event for event in later if event["time"] < "2026-01-20T12:00:00Z"] == events
    assert len(later) > len(events)


async def test_the_demo_speaks_v3_with_the_same_answers(demo_url: str) -> None:
    """`--demo` with OPENMETER_API=v3: the v3 stand-in behind the v3 client, the same data, the same answers."""
    link = re.compile(r"/download/[\w-]+")
    with start_demo(openmeter_api="v3", openmeter_url=DEMO_SETTINGS_V3["openmeter_url"]) as v3_url:
        for tool in ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events"):
            v1 = await call_tool(demo_url, tool, headers=DEMO)
            v3 = await call_tool(v3_url, tool, headers=DEMO)
            assert not v3.is_error, text_of(v3)
            assert link.sub("", text_of(v3)) == link.sub("", text_of(v1))
            assert DEMO_BANNER in text_of(v3)


async def test_overrides_serve_the_demo_to_a_client_without_headers() -> None:
    with start_demo(tenant_override="demo", role_override="admin") as url:
        result = await call_tool(url, "get_credit_usage_by_tenant", headers={})
        assert not result.is_error
        assert "Tenant demo, " in text_of(result)


@pytest.mark.parametrize("api", [None, "v3"])
def test_main_demo_starts_without_a_key(tmp_path: Path, api: str | None) -> None:
    """`main.py --demo` needs no OPENMETER_API_KEY (without --demo, test_settings checks that start-up stops); it
    speaks v1 unless OPENMETER_API=v3."""
    with DemoProcess(tmp_path, **({"OPENMETER_API": api} if api else {})) as demo:
        assert httpx2.get(f"http://127.0.0.1:{demo.port}/health").json() == {"status": "ok"}
    stderr = demo.stderr
    assert "DEMO MODE" in stderr
    assert f"an in-process stand-in of its {api or 'v1'} API" in stderr
    assert "Traceback" not in stderr


async def test_the_demo_tenants_answer_the_balance(demo_url: str) -> None:
    """acme comfortable, demo running out before the reset, globex with a top-up that expires soon, initech none."""
    found: dict[str, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    for tenant in TENANTS:
        headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
        result = await call_tool(demo_url, "get_credit_balance", headers=headers)
        assert not result.is_error, text_of(result)
        assert text_of(result).startswith(DEMO_BANNER)
        assert result.structured_content is not None
        found[tenant], texts[tenant] = result.structured_content, text_of(result)
    assert found["initech"]["status"] == "none" and found["initech"]["balance"] is None
    reset = datetime.fromisoformat(found["acme"]["period"]["to"])
    days_left = (reset - NOW).total_seconds() / 86400
    for tenant in ("acme", "demo", "globex"):
        data = found[tenant]
        assert data["status"] == "metered" and data["has_access"]
        assert datetime.fromisoformat(data["period"]["to"]) == reset
    pace = {tenant: found[tenant]["usage"] / (NOW - datetime.fromisoformat(found[tenant]["period"]["from"])).days
            for tenant in ("acme", "demo")}  # fmt: skip
    assert found["acme"]["balance"] > 3 * pace["acme"] * days_left  # comfortable
    assert found["demo"]["balance"] < 0.6 * pace["demo"] * days_left  # runs out before the reset
    top_up, plan = found["globex"]["grants"]
    assert top_up["remaining"] > 0 and not top_up["recurring"]
    assert NOW < datetime.fromisoformat(top_up["expires_at"]) < NOW + timedelta(days=7)
    assert plan["recurring"] and plan["expires_at"] is None
    assert found["acme"]["runway"] is None and "lasts until the period resets" in texts["acme"]
    assert found["demo"]["runway"]["before_reset"] is True
    assert date.fromisoformat(found["demo"]["runway"]["likely"]) < reset.date()
    assert "Top-up (30 days) expires on" in texts["globex"]  # with credits the pace will not use up


async def test_the_v3_demo_answers_the_balance_from_its_ledger() -> None:
    """`--demo` with OPENMETER_API=v3 offers get_credit_balance too: the same allowances, as Konnect's prepaid
    credits ledger (one currency, grants without a remaining amount)."""
    with start_demo(openmeter_api="v3", openmeter_url=DEMO_SETTINGS_V3["openmeter_url"]) as url:
        found = {}
        for tenant in TENANTS:
            headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
            result = await call_tool(url, "get_credit_balance", headers=headers)
            assert not result.is_error, text_of(result)
            assert text_of(result).startswith(DEMO_BANNER)
            assert result.structured_content is not None
            found[tenant] = result.structured_content
        forecast = text_of(await call_tool(url, "get_credit_forecast", headers=DEMO))
    assert found["initech"]["status"] == "none"
    for tenant in ("acme", "demo", "globex"):
        data = found[tenant]
        assert (data["status"], data["source"], data["currency"]) == ("metered", "ledger", "USD")
        assert all(grant["remaining"] is None for grant in data["grants"])
    assert found["acme"]["balance"] > found["demo"]["balance"] > 0
    assert [grant["name"] for grant in found["globex"]["grants"]] == ["Top-up (30 days)", "Monthly plan"]
    assert "Balance: " in forecast and "at the tenant's recent pace" in forecast


async def test_the_v3_demo_ledger_burns_the_configured_meter() -> None:
    """The demo's meter takes OPENMETER_METER's slug; the ledger read a meter called ai_credits whatever it was, so a
    renamed meter made every v3 demo balance a 404."""
    with start_demo(
        openmeter_api="v3", openmeter_url=DEMO_SETTINGS_V3["openmeter_url"], openmeter_meter="tokens_used"
    ) as url:
        result = await call_tool(url, "get_credit_balance", headers=DEMO)
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None and (data["status"], data["source"]) == ("metered", "ledger")
    assert 0 < data["balance"] < data["grants"][0]["amount"]  # the usage burnt the plan
