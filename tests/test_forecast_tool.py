"""Issue 17: get_credit_forecast end to end, through the real MCP client over HTTP, with the clock injected."""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openpyxl import load_workbook

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.questions.forecast import DAY_COLUMNS, LOOKBACK_DAYS
from tests.conftest import ADMIN, NOW, FakeClock, call_tool, download_bytes, text_of

pytestmark = pytest.mark.anyio
FORECAST = "get_credit_forecast"
TODAY = NOW.date()  # 2026-01-20, a Tuesday; NOW is 12:00 UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def credits(text: str) -> float:
    return float(text.replace(",", ""))


def steady_history(openmeter: OpenMeterStandIn, tenant: str = "acme", weeks: int = 8) -> dict[date, float]:
    """Weekdays 10 credits, weekends 2, each day at 09:00 UTC, for `weeks` weeks before today."""
    days: dict[date, float] = {}
    events = []
    for back in range(weeks * 7, 0, -1):
        day = TODAY - timedelta(days=back)
        value = 10.0 if day.weekday() < 5 else 2.0
        days[day] = value
        events.append(make_event(tenant=tenant, credits=value, time=utc(day.year, day.month, day.day, 9)))
    openmeter.ingest(*events)
    return days


async def test_used_so_far_the_projection_and_its_intervals(server_url: str, openmeter: OpenMeterStandIn) -> None:
    days = steady_history(openmeter)
    openmeter.ingest(
        make_event(tenant="acme", credits=4, time=utc(2026, 1, 20, 9)),  # today, before now
        make_event(tenant="acme", credits=500, time=utc(2026, 1, 20, 15)),  # after now: not yet happened
        make_event(tenant="globex", credits=9_999, time=utc(2026, 1, 19, 10)),  # another tenant
    )
    result = await call_tool(server_url, FORECAST)
    text = text_of(result)
    assert not result.is_error, text
    assert text.splitlines()[0] == (
        "Tenant acme, forecast for 2026-01-01T00:00:00Z to 2026-02-01T00:00:00Z (end exclusive), daily in UTC, "
        "as of 2026-01-20T12:00:00Z:"
    )
    rows = table_rows(text)
    assert rows[0] == list(DAY_COLUMNS)
    assert [row[0] for row in rows[1:]] == [f"2026-01-{day:02d}" for day in range(1, 32)]
    used_so_far = sum(value for day, value in days.items() if day.month == 1) + 4
    assert rows[1][1:5] == ["10.00", "0.00", "10.00", "10.00"]  # Thursday, January 1st: used, no forecast
    today = rows[20]
    assert today[0] == "2026-01-20" and today[1] == "4.00"
    assert credits(today[2]) == pytest.approx(5.0, abs=1.0)  # half of a 10-credit weekday is still to come
    assert credits(rows[-1][4]) > used_so_far
    structured = result.structured_content
    assert structured is not None
    assert structured["tenant"] == "acme"
    assert structured["window"] == {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    assert structured["as_of"] == "2026-01-20T12:00:00Z"
    assert structured["used_so_far"] == pytest.approx(used_so_far)
    rest = sum(day["forecast"] for day in structured["days"])
    assert structured["projected_total"] == pytest.approx(used_so_far + rest)
    # 11 days ahead of a steady 8-week rhythm: 8 weekdays at 10, 3 weekend days at 2, and half of today.
    assert rest == pytest.approx(5 + 8 * 10 + 3 * 2, rel=0.1)
    low_80, high_80 = structured["interval_80"]["low"], structured["interval_80"]["high"]
    low_95, high_95 = structured["interval_95"]["low"], structured["interval_95"]["high"]
    assert used_so_far <= low_95 <= low_80 <= structured["projected_total"] <= high_80 <= high_95
    assert structured["enough_history"] is True
    assert len(structured["days"]) == 31 and structured["days"][0]["day"] == "2026-01-01"
    assert structured["days"][-1]["cumulative"] == pytest.approx(structured["projected_total"])
    assert f"Used so far (2026-01-01 until 2026-01-20T12:00:00Z): {used_so_far:,.2f} credits." in text
    assert f"Projected total by the end of 2026-01-31: {structured['projected_total']:,.2f} credits (80% " in text
    assert "too little" not in text
    assert structured["download_url"] in text
    (query,) = openmeter.requests_to("/query")
    assert (query.param("windowSize"), query.param("windowTimeZone")) == ("DAY", "UTC")
    lookback = (TODAY - timedelta(days=LOOKBACK_DAYS)).isoformat() + "T00:00:00Z"
    assert (query.param("from"), query.param("to")) == (lookback, "2026-01-20T12:00:00Z")
    assert query.params("groupBy") == ["tenant"]


async def test_the_workbook_has_the_days_the_forecast_and_a_cumulative_chart(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    steady_history(openmeter)
    result = await call_tool(server_url, FORECAST, {"to_date": "2026-03-31"})
    text = text_of(result)
    assert not result.is_error, text
    structured = result.structured_content
    assert structured is not None
    assert structured["window"] == {"from": "2026-01-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}
    assert len(structured["days"]) == 50  # 90 days, at most 50 shown
    assert "Showing 50 of 90 rows; the Excel file has all 90." in text
    assert re.search(
        r"The 40 rows not shown hold [\d,.]+ credits \(with the rows shown, they make the projected total\)", text
    )
    workbook = load_workbook(io.BytesIO(download_bytes(server_url, text)))
    data = list(workbook["Data"].iter_rows(values_only=True))
    assert data[0] == DAY_COLUMNS
    assert len(data) == 91 and data[1][0] == datetime(2026, 1, 1) and data[-1][0] == datetime(2026, 3, 31)
    assert math.fsum(row[3] for row in data[1:]) == pytest.approx(structured["projected_total"])
    assert data[-1][4] == pytest.approx(structured["projected_total"])
    widths_80 = [row[6] - row[5] for row in data[20:]]
    assert widths_80 == sorted(widths_80)  # the interval widens with distance
    summary = {row[0]: row[1] for row in workbook["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["Projected total"] == pytest.approx(structured["projected_total"])
    assert summary["Used so far"] == pytest.approx(structured["used_so_far"])
    assert summary["As of (UTC)"] == "2026-01-20T12:00:00Z"
    assert "Previous window" not in summary and "Total credits" not in summary
    (chart,) = workbook["Summary"]._charts
    assert type(chart).__name__ == "LineChart"
    assert chart.series[0].val.numRef.f == "'Data'!$E$2:$E$91"
    assert len(chart.series) == 5  # the cumulative total and the four bounds
    about = dict(workbook["About"].iter_rows(values_only=True))
    assert "weekday profile" in about["method"]
    assert about["projected total credits"] == pytest.approx(structured["projected_total"])
    assert about["Summary sheet"].startswith("the forecast for the whole window")


async def test_a_tenant_without_history_gets_zero_and_the_caution(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(make_event(tenant="globex", credits=50, time=utc(2026, 1, 12, 9)))
    result = await call_tool(server_url, FORECAST)
    text = text_of(result)
    assert not result.is_error, text
    structured = result.structured_content
    assert structured is not None
    assert (structured["used_so_far"], structured["projected_total"]) == (0, 0)
    assert structured["interval_95"] == {"low": 0, "high": 0}
    assert structured["enough_history"] is False
    assert "There is too little usage history to trust this projection (0 complete days" in text


async def test_a_short_history_projects_but_says_it_is_short(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(*[make_event(tenant="acme", credits=10, time=utc(2026, 1, day, 9)) for day in range(15, 20)])
    result = await call_tool(server_url, FORECAST)
    structured = result.structured_content
    assert structured is not None and not result.is_error
    assert structured["enough_history"] is False and structured["history_days"] == 5
    assert structured["projected_total"] > structured["used_so_far"] == 50
    assert "(5 complete days since usage began, 14 needed)" in text_of(result)


async def test_days_are_local_days_in_the_time_zone(server_url: str, openmeter: OpenMeterStandIn) -> None:
    steady_history(openmeter)
    # 23:30 UTC on January 19th is 00:30 on the 20th in Paris: today there, not yesterday.
    openmeter.ingest(make_event(tenant="acme", credits=7, time=utc(2026, 1, 19, 23, 30)))
    result = await call_tool(server_url, FORECAST, {"time_zone": "Europe/Paris"})
    structured = result.structured_content
    assert structured is not None and not result.is_error, text_of(result)
    assert structured["window"] == {"from": "2025-12-31T23:00:00Z", "to": "2026-01-31T23:00:00Z"}
    (today,) = [day for day in structured["days"] if day["day"] == "2026-01-20"]
    assert today["used"] == 7
    (query,) = openmeter.requests_to("/query")
    assert query.param("windowTimeZone") == "Europe/Paris"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param(
            {"to_date": "2026-01-19"},
            "to_date '2026-01-19' is in the past (today is 2026-01-20 in UTC): the forecast looks ahead; for usage "
            "already recorded use get_credit_usage_by_tenant or get_credit_usage_trend.",
            id="past",
        ),
        pytest.param(
            {"to_date": "2027-01-22"},
            "to_date '2027-01-22' is more than a year ahead: the forecast reaches 2027-01-21 at most.",
            id="too-far",
        ),
        pytest.param(
            {"to_date": "2026-02-01T00:00:00Z"},
            "to_date '2026-02-01T00:00:00Z' is not a day: the forecast runs through a whole day, such as 2026-06-30.",
            id="timestamp",
        ),
        pytest.param({"time_zone": "Mars/Olympus"}, "time_zone 'Mars/Olympus' is not an IANA time zone name", id="tz"),
        pytest.param({"from_date": "2026-01-01"}, "so leave out 'from_date'", id="no-from-date"),
    ],
)
async def test_bad_arguments_are_one_sentence(server_url: str, arguments: dict[str, str], expected: str) -> None:
    result = await call_tool(server_url, FORECAST, arguments)
    assert result.is_error
    assert expected in text_of(result)
    assert "Traceback" not in text_of(result)


async def test_today_is_a_valid_last_day(server_url: str, openmeter: OpenMeterStandIn) -> None:
    steady_history(openmeter)
    result = await call_tool(server_url, FORECAST, {"to_date": "2026-01-20"})
    structured = result.structured_content
    assert structured is not None and not result.is_error, text_of(result)
    assert structured["window"]["to"] == "2026-01-21T00:00:00Z"
    assert structured["days"][-1]["day"] == "2026-01-20"


async def test_only_admins_get_a_forecast(server_url: str, openmeter: OpenMeterStandIn) -> None:
    steady_history(openmeter)
    result = await call_tool(server_url, FORECAST, headers={**ADMIN, "X-User-UserRole": "user"})
    assert result.is_error
    assert "admin" in text_of(result)
    assert openmeter.requests_to("/query") == []


async def test_the_schemas_declare_the_fixed_fields(server_url: str) -> None:
    import httpx2

    async with (
        httpx2.AsyncClient(headers=ADMIN) as http,
        Client(streamable_http_client(f"{server_url}/mcp", http_client=http)) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    tool = tools[FORECAST]
    assert set(tool.input_schema["properties"]) == {"to_date", "time_zone", "user", "module", "product", "skill"}
    assert tool.output_schema is not None
    fixed = {"tenant", "window", "used_so_far", "projected_total", "interval_80", "interval_95", "days", "download_url"}
    assert fixed <= set(tool.output_schema["properties"])
    assert "month" in tool.description and "get_credit_usage_trend" in tool.description


async def test_the_clock_decides_what_is_known(
    start_server: object, openmeter: OpenMeterStandIn, clock: FakeClock
) -> None:
    steady_history(openmeter)
    url = start_server()  # type: ignore[operator]
    before = (await call_tool(url, FORECAST)).structured_content
    clock.advance(days=12)  # February 1st, 12:00: a new month
    after = (await call_tool(url, FORECAST)).structured_content
    assert before is not None and after is not None
    assert before["window"]["from"] == "2026-01-01T00:00:00Z"
    assert after["window"] == {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
    assert after["used_so_far"] == 0  # nothing recorded after January 19th
