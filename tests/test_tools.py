"""The tools end to end: SDK client over HTTP with TAIS headers -> server -> stand-in OpenMeter."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from openpyxl import load_workbook

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import NOW, call_tool, on_both_apis, text_of
from tests.sent import SentQuery, event_pages, meter_queries

# The whole tool contract runs against each OpenMeter API: the same rows, totals, order and workbook.
pytestmark = [pytest.mark.anyio, on_both_apis]
TOOLS = ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events", "get_credit_usage_trend")
FORECAST = "get_credit_forecast"
FILTERS = {"user", "module", "product", "skill"}
WINDOW_ARGUMENTS = {"from_date", "to_date"} | FILTERS
TREND_ARGUMENTS = WINDOW_ARGUMENTS | {"granularity", "group_by", "time_zone"}
SUMMARY_ARGUMENTS = WINDOW_ARGUMENTS | {"group_by"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the markdown table (header and separator dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[1:]]


def header_of(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| "))


def download_rows(server_url: str, text: str) -> list[tuple]:
    match = re.search(r"\[Download Excel\]\(http://localhost:8765(/download/[\w-]+)\)", text)
    assert match, text
    response = httpx2.get(server_url + match.group(1))
    assert response.status_code == 200
    workbook = load_workbook(io.BytesIO(response.content))
    return list(workbook["Data"].iter_rows(values_only=True))


def window_query(openmeter: OpenMeterStandIn, start: str) -> SentQuery:
    """The one meter query over the window starting at `start` (the preceding window's query is apart)."""
    (query,) = [query for query in meter_queries(openmeter) if query.start == start]
    return query


async def test_tools_are_listed_without_headers(server_url: str) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient() as http, Client(streamable_http_client(f"{server_url}/mcp", http_client=http)) as c:
        tools = (await c.list_tools()).tools
    assert sorted(tool.name for tool in tools) == sorted((*TOOLS, FORECAST))
    for tool in tools:
        expected = TREND_ARGUMENTS if tool.name == "get_credit_usage_trend" else WINDOW_ARGUMENTS
        if tool.name == FORECAST:
            expected = {"to_date", "time_zone"} | FILTERS
        if tool.name == "get_credit_usage_summary":
            expected = SUMMARY_ARGUMENTS
        assert set(tool.input_schema["properties"]) == expected
        assert not tool.input_schema.get("required")
        default = "the end of the month" if tool.name == FORECAST else "last 7 days"
        assert default in (tool.description or "")
        assert "\n " not in (tool.description or "")


async def test_tenant_total_counts_only_the_tenant_the_meter_type_and_the_window(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=10.25, time=utc(2026, 1, 1)),  # start is inclusive
        make_event(tenant="acme", credits="4.5", time=utc(2026, 1, 31, 23, 59, 59)),  # numeric string
        make_event(tenant="acme", credits=1000, time=utc(2026, 2, 1)),  # end is exclusive
        make_event(tenant="acme", credits=1000, time=utc(2025, 12, 31, 23, 59, 59)),
        make_event(tenant="globex", credits=77, time=utc(2026, 1, 10)),
        make_event(tenant="acme", credits=500, time=utc(2026, 1, 10), type="other_meter"),
    )
    result = await call_tool(
        server_url, "get_credit_usage_by_tenant", {"from_date": "2026-01-01", "to_date": "2026-01-31"}
    )
    text = text_of(result)
    assert not result.is_error, text
    assert text.splitlines()[0] == "Tenant acme, 2026-01-01T00:00:00Z to 2026-02-01T00:00:00Z (end exclusive):"
    assert header_of(text) == "| tenant | credits |"
    assert table_rows(text) == [["acme", "14.75"]]
    assert "Total credits: 14.75" in text
    assert download_rows(server_url, text) == [("tenant", "credits"), ("acme", 14.75)]
    query = window_query(openmeter, "2026-01-01T00:00:00Z")
    assert query.group_by == ["user", "module", "product", "tenant", "skill"]  # for the Summary sheet's top 5s
    assert query.tenant_filter == {"eq": "acme"}
    assert query.end == "2026-02-01T00:00:00Z"
    previous = window_query(openmeter, "2025-12-01T00:00:00Z")  # the 31 days before, for the comparison
    assert previous.end == "2026-01-01T00:00:00Z"
    assert previous.group_by == ["tenant", "user"]
    assert previous.tenant_filter == {"eq": "acme"}
    assert len(meter_queries(openmeter)) == 2


async def test_tenant_total_is_one_row_at_zero_usage(server_url: str) -> None:
    text = text_of(await call_tool(server_url, "get_credit_usage_by_tenant"))
    assert table_rows(text) == [["acme", "0.00"]]
    assert "Total credits: 0.00" in text


@pytest.mark.parametrize("tool", TOOLS)
async def test_default_window_is_the_last_seven_days(server_url: str, openmeter: OpenMeterStandIn, tool: str) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=3, time=NOW - timedelta(days=7)),
        make_event(tenant="acme", credits=5, time=NOW - timedelta(seconds=1)),
        make_event(tenant="acme", credits=100, time=NOW - timedelta(days=7, seconds=1)),
        make_event(tenant="acme", credits=1000, time=NOW),  # `to` is exclusive
    )
    text = text_of(await call_tool(server_url, tool))
    assert "2026-01-13T12:00:00Z to 2026-01-20T12:00:00Z (end exclusive)" in text
    assert "Total credits: 8.00" in text
    assert_window_sent(openmeter, tool, "2026-01-13T12:00:00Z", "2026-01-20T12:00:00Z")


def assert_window_sent(openmeter: OpenMeterStandIn, tool: str, sent_from: str, sent_to: str) -> None:
    """OpenMeter was asked for exactly the window: the meter query's from/to, or the events filter's time range."""
    if tool == "get_credit_events":
        pages = event_pages(openmeter)
        assert pages, "no events were asked for"
        # Sliced pages ask for parts of the window; their union is the window. v3 sends only the end (one time
        # operator, as Konnect's spec wants) and cuts at the start itself: the totals show the cut is right.
        assert max(page.end for page in pages) == sent_to
        if openmeter.api == "v3":
            assert all(page.start is None for page in pages)
        else:
            assert min(page.start or "" for page in pages) == sent_from
    else:  # the trend asks twice over the window (per period, and per combination for its Summary sheet)
        queries = [query for query in meter_queries(openmeter) if query.start == sent_from]
        assert queries and all(query.end == sent_to for query in queries)


@pytest.mark.parametrize(
    ("arguments", "sent_from", "sent_to"),
    [
        pytest.param(
            {"from_date": "2026-01-15", "to_date": "2026-01-15"},
            "2026-01-15T00:00:00Z",
            "2026-01-16T00:00:00Z",
            id="date-only-includes-the-day",
        ),
        pytest.param(
            {"from_date": "2026-01-15T08:00:00Z", "to_date": "2026-01-15T18:30:00Z"},
            "2026-01-15T08:00:00Z",
            "2026-01-15T18:30:00Z",
            id="zulu",
        ),
        pytest.param(
            {"from_date": "2026-01-15T08:00:00+02:00", "to_date": "2026-01-15T08:00:00-05:00"},
            "2026-01-15T06:00:00Z",
            "2026-01-15T13:00:00Z",
            id="offsets",
        ),
        pytest.param(
            {"from_date": "2026-01-15T08:00:00"},
            "2026-01-15T08:00:00Z",
            "2026-01-20T12:00:00Z",
            id="naive-is-utc-and-to-defaults-to-now",
        ),
        pytest.param(
            {"to_date": "2026-01-10"},
            "2026-01-04T00:00:00Z",
            "2026-01-11T00:00:00Z",
            id="from-defaults-to-7-days-before-to",
        ),
    ],
)
@pytest.mark.parametrize("tool", TOOLS)
async def test_explicit_windows(
    server_url: str, openmeter: OpenMeterStandIn, tool: str, arguments: dict[str, str], sent_from: str, sent_to: str
) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=2, time=datetime.fromisoformat(sent_from)))
    result = await call_tool(server_url, tool, arguments)
    text = text_of(result)
    assert not result.is_error, text
    assert f"{sent_from} to {sent_to} (end exclusive)" in text
    assert "Total credits: 2.00" in text
    assert_window_sent(openmeter, tool, sent_from, sent_to)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"from_date": "last tuesday"}, "from_date"),
        ({"to_date": "2026-02-30"}, "to_date"),
        ({"from_date": "2026-01-10", "to_date": "2026-01-05"}, "from_date"),
    ],
)
async def test_bad_dates_are_a_clear_error(server_url: str, openmeter: OpenMeterStandIn, arguments, named) -> None:
    result = await call_tool(server_url, "get_credit_events", arguments)
    assert result.is_error
    assert named in text_of(result)
    assert not openmeter.requests


def summary_events() -> list[dict]:
    events = []
    for i in range(60):  # 60 distinct (user, module, product, skill) combinations for acme
        for repeat in range(2):
            events.append(
                make_event(
                    tenant="acme",
                    credits=round(0.5 + i * 1.25 + repeat, 2),
                    time=utc(2026, 1, 2 + i % 20, repeat),
                    user=f"user{i:02d}",
                    module=("chat", "search", "agents")[i % 3],
                    product=f"p{i % 4}",
                    skill=f"s{i % 5}",
                )
            )
    events.append(make_event(tenant="globex", credits=9999, time=utc(2026, 1, 5), user="spy"))
    return events


async def test_summary_breaks_down_largest_first_and_cuts_at_50(server_url: str, openmeter: OpenMeterStandIn) -> None:
    events = summary_events()
    openmeter.ingest(*events)
    result = await call_tool(
        server_url, "get_credit_usage_summary", {"from_date": "2026-01-01", "to_date": "2026-01-31"}
    )
    text = text_of(result)
    assert header_of(text) == "| user | module | product | tenant | skill | credits |"

    expected: dict[tuple, float] = {}
    for event in events:
        data = event["data"]
        if data["tenant"] == "acme":
            key = (data["user"], data["module"], data["product"], "acme", data["skill"])
            expected[key] = expected.get(key, 0) + data["credits"]
    ranked = sorted(expected.items(), key=lambda item: -item[1])
    rows = table_rows(text)
    assert len(rows) == 50
    assert [tuple(row[:5]) for row in rows] == [key for key, _ in ranked[:50]]
    assert [row[5] for row in rows] == [f"{value:,.2f}" for _, value in ranked[:50]]
    assert "Showing 50 of 60 rows; the Excel file has all 60." in text
    assert f"Total credits: {math.fsum(expected.values()):,.2f}" in text
    assert "spy" not in text

    sheet = download_rows(server_url, text)
    assert sheet[0] == ("user", "module", "product", "tenant", "skill", "credits")
    assert [(*row[:5],) for row in sheet[1:]] == [key for key, _ in ranked]
    assert [row[5] for row in sheet[1:]] == pytest.approx([value for _, value in ranked])
    assert window_query(openmeter, "2026-01-01T00:00:00Z").group_by == ["user", "module", "product", "tenant", "skill"]


async def test_events_follow_every_cursor_and_keep_only_the_tenant(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    start = utc(2026, 1, 15)
    acme = [
        make_event(tenant="acme", credits=i % 7 + 0.5, time=start + timedelta(minutes=5 * i), user=f"u{i % 9}")
        for i in range(230)
    ]
    noise = [
        make_event(tenant="globex", credits=1, time=start + timedelta(minutes=5 * i + 1), user="spy")
        for i in range(120)
    ]
    noise += [
        make_event(
            tenant="acme", credits=1, time=start + timedelta(minutes=5 * i + 2), user="wrongtype", type="other_meter"
        )
        for i in range(40)
    ]
    # Other tenants' events under acme's own subjects, and one whose subject is the tenant's name: the subject
    # narrowing lets them through, so only the check of each event's tenant dimension keeps them out.
    noise += [
        make_event(tenant="globex", credits=1, time=start + timedelta(minutes=5 * i + 3), user="spy", subject=subject)
        for i, subject in enumerate(["user-u0", "user-u4", "acme"] * 10)
    ]
    noise.append(make_event(tenant="acme", credits=0.5, time=start + timedelta(minutes=4), user="u0", subject="acme"))
    acme.append(noise.pop())
    openmeter.ingest(*acme, *noise)

    result = await call_tool(server_url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    text = text_of(result)
    assert header_of(text) == "| time | user | module | product | tenant | credits |"
    assert "Showing 50 of 231 rows" in text
    assert f"Total credits: {math.fsum(e['data']['credits'] for e in acme):,.2f}" in text

    sheet = download_rows(server_url, text)
    assert sheet[0] == ("time", "user", "module", "product", "tenant", "credits")
    times = [row[0] for row in sheet[1:]]
    assert len(times) == 231
    assert times == sorted(times, reverse=True)  # newest first
    assert {row[1] for row in sheet[1:]} == {f"u{i}" for i in range(9)}
    assert {row[4] for row in sheet[1:]} == {"acme"}
    assert times[0] == (start + timedelta(minutes=5 * 229)).replace(tzinfo=None)

    pages = event_pages(openmeter)
    assert len(pages) >= 3  # 390 events of the meter's type and others in the window: several cursor pages
    assert all(page.page_size == "100" for page in pages)
    assert sum(1 for page in pages if page.cursor) == len(pages) - 1
    assert pages[0].type == "ai_credits"
    start = None if openmeter.api == "v3" else "2026-01-15T00:00:00Z"
    assert (pages[0].start, pages[0].end) == (start, "2026-01-16T00:00:00Z")

    preview = table_rows(text)
    assert preview[0][0] == "2026-01-15T19:05:00Z"
    assert preview[0][4] == "acme"


async def test_events_skip_values_the_meter_does_not_count(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits="2.5", time=utc(2026, 1, 15, 1)),
        make_event(tenant="acme", credits="n/a", time=utc(2026, 1, 15, 2)),
        make_event(tenant="acme", credits=None, time=utc(2026, 1, 15, 3)),
    )
    args = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    events_text = text_of(await call_tool(server_url, "get_credit_events", args))
    total_text = text_of(await call_tool(server_url, "get_credit_usage_by_tenant", args))
    assert [row[5] for row in table_rows(events_text)] == ["2.50"]
    assert "Total credits: 2.50" in events_text and "Total credits: 2.50" in total_text


async def test_event_cap_asks_for_a_narrower_window(
    start_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    url = start_server(max_event_rows=20)
    openmeter.ingest(*[make_event(tenant="acme", credits=1, time=utc(2026, 1, 15, 0, i)) for i in range(21)])
    result = await call_tool(url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    assert result.is_error
    assert "more than 20 credit events" in text_of(result)
    assert "shorter window" in text_of(result)


async def test_legacy_protocol_clients_work_too(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=2, time=NOW - timedelta(hours=1)))
    result = await call_tool(server_url, "get_credit_usage_by_tenant", mode="legacy")
    assert table_rows(text_of(result)) == [["acme", "2.00"]]
