"""Issue 7: comparisons with the preceding window, movers, the credits not shown, the workbook as a report
(Summary, Data, About, charts), structured results beside the markdown, and the 20,000-character preview cap."""

from __future__ import annotations

import io
import math
import re
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openpyxl import load_workbook

from ai_credit_usage.answers.render import MAX_PREVIEW_CHARS, escape_cell
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.questions.compare import describe_span
from tests.conftest import NOW, ServerStarter, call_tool, download_bytes, on_both_apis, text_of

pytestmark = pytest.mark.anyio
JANUARY = {"from_date": "2026-01-01", "to_date": "2026-01-31"}
TOOLS = ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events", "get_credit_usage_trend")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def table_rows(text: str) -> list[list[str]]:
    return [cells(line) for line in text.splitlines() if line.startswith("| ")][1:]


def charts_of(content: bytes) -> dict[str, str]:
    """Chart part -> its XML, to compare two workbooks' charts byte for byte (openpyxl 3.1 also reads charts back,
    as `sheet._charts`, which the tests use to check what a chart shows)."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist() if name.startswith("xl/charts/")}


def summary_sheet(content: bytes) -> list[tuple[Any, ...]]:
    return list(load_workbook(io.BytesIO(content))["Summary"].iter_rows(values_only=True))


# --- comparisons --------------------------------------------------------------------------------------------------


@on_both_apis
async def test_the_total_is_compared_with_the_preceding_window(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=6, time=utc(2026, 1, 3)),
        make_event(tenant="acme", credits=4, time=utc(2026, 1, 30)),
        make_event(tenant="acme", credits=8, time=utc(2025, 12, 1)),  # the first second of the preceding 31 days
        make_event(tenant="acme", credits=1000, time=utc(2025, 11, 30, 23, 59, 59)),  # before it
        make_event(tenant="globex", credits=1000, time=utc(2025, 12, 15)),
    )
    result = await call_tool(server_url, "get_credit_usage_by_tenant", JANUARY)
    text = text_of(result)
    lines = text.splitlines()
    total = lines.index("Total credits: 10.00")
    assert lines[total + 1] == (
        "Compared with the previous 31 days (2025-12-01T00:00:00Z to 2026-01-01T00:00:00Z, 8.00 credits): "
        "+2.00 (+25.0%)."
    )
    assert lines[total + 2].startswith("[Download Excel](")
    comparison = result.structured_content["comparison"]  # type: ignore[index]
    assert comparison == {
        "previous_window": {"from": "2025-12-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        "previous_credits": 8.0,
        "change_credits": 2.0,
        "change_percent": 25.0,
    }
    summary = dict(row[:2] for row in summary_sheet(download_bytes(server_url, text)) if row[0])
    assert summary["Previous window (UTC)"] == "2025-12-01T00:00:00Z to 2026-01-01T00:00:00Z"
    assert summary["Previous 31 days: credits"] == 8
    assert summary["Change (%)"] == 0.25


@on_both_apis
async def test_no_previous_usage_is_said_instead_of_an_infinite_percentage(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=10, time=utc(2026, 1, 3)))
    result = await call_tool(server_url, "get_credit_usage_by_tenant", JANUARY)
    assert (
        "Compared with the previous 31 days (2025-12-01T00:00:00Z to 2026-01-01T00:00:00Z): +10.00; "
        "no usage in the previous period."
    ) in text_of(result)
    comparison = result.structured_content["comparison"]  # type: ignore[index]
    assert comparison["change_percent"] is None and comparison["previous_credits"] == 0


async def test_a_failed_comparison_loses_only_the_comparison(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=10, time=utc(2026, 1, 3)))
    openmeter.fail(status=500, times=10, path_prefix="/api/v1/meters", query={"from": "2025-12-01T00:00:00Z"})
    result = await call_tool(server_url, "get_credit_usage_by_tenant", JANUARY)
    text = text_of(result)
    assert not result.is_error, text
    assert "| acme | 10.00 |" in text
    assert "Compared with the preceding window: not available right now" in text
    assert result.structured_content["comparison"] is None  # type: ignore[index]


@on_both_apis
async def test_movers_are_users_with_new_and_gone(server_url: str, openmeter: OpenMeterStandIn) -> None:
    before, now = NOW - timedelta(days=10), NOW - timedelta(days=2)
    previous = {"alice": 10, "bob": 5, "carol": 20, "dave": 1}
    current = {"alice": 40, "bob": 5, "erin": 25, "dave": 2}
    openmeter.ingest(
        *[make_event(tenant="acme", credits=c, time=before, user=u) for u, c in previous.items()],
        *[make_event(tenant="acme", credits=c, time=now, user=u, skill=f"s-{u}") for u, c in current.items()],
    )
    result = await call_tool(server_url, "get_credit_usage_summary")
    text = text_of(result)
    lines = text.splitlines()
    start = lines.index("Biggest changes by user against the previous 7 days:")
    assert lines[start + 1 : start + 4] == [
        "- alice: +30.00 (+300.0%), 10.00 to 40.00",
        "- erin: new, 25.00 credits",
        "- carol: gone, 20.00 credits before",
    ]
    assert lines[start - 1].startswith("Compared with the previous 7 days (2026-01-06T12:00:00Z")
    # Then the top 5 of every dimension, over all rows, and the link.
    assert lines[start + 4] == "Top users: alice 40.00 (55.6%); erin 25.00 (34.7%); bob 5.00 (6.9%); dave 2.00 (2.8%)."
    assert lines[-1].startswith("[Download Excel](")
    movers = result.structured_content["movers"]  # type: ignore[index]
    assert [(m["user"], m["status"], m["change_credits"], m["change_percent"]) for m in movers] == [
        ("alice", "up", 30, 300),
        ("erin", "new", 25, None),
        ("carol", "gone", -20, None),
    ]
    summary = summary_sheet(download_bytes(server_url, text))
    heading = summary.index(("user", "status", "credits", "before", "change"))
    assert summary[heading + 1] == ("alice", "up", 40, 10, 30)


async def test_an_odd_window_is_compared_in_readable_units(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=6, time=utc(2026, 1, 3)),
        make_event(tenant="acme", credits=2, time=utc(2025, 12, 20)),
    )
    odd = {"from_date": "2025-12-29T05:03:27Z"}  # to now, 2026-01-20T12:00:00Z: 22 days 6:56:33
    text = text_of(await call_tool(server_url, "get_credit_usage_by_tenant", odd))
    assert (
        "Compared with the previous 22.3 days (2025-12-06T22:06:54Z to 2025-12-29T05:03:27Z, 2.00 credits): "
        "+4.00 (+200.0%)."
    ) in text
    trend = text_of(await call_tool(server_url, "get_credit_usage_trend", odd))
    facts = {row[0]: row[1] for row in summary_sheet(download_bytes(server_url, trend)) if row[0]}
    assert facts["Previous 22.3 days: credits"] == 2
    assert facts["Previous window (UTC)"] == "2025-12-06T22:06:54Z to 2025-12-29T05:03:27Z"


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(days=31), "31 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=36), "36 hours"),
        (timedelta(minutes=90), "90 minutes"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=1_835_792), "21.2 days"),
        (timedelta(days=21, minutes=5), "about 21 days"),
        (timedelta(hours=100), "4.2 days"),
        (timedelta(hours=3, minutes=20), "3.3 hours"),
        (timedelta(minutes=2, seconds=30), "2.5 minutes"),
    ],
)
async def test_spans_are_described_readably(span: timedelta, text: str) -> None:
    assert describe_span(span) == text


@on_both_apis
async def test_a_summary_without_usage_now_still_names_who_is_gone(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    before = NOW - timedelta(days=10)
    openmeter.ingest(*[make_event(tenant="acme", credits=c, time=before, user=u) for u, c in (("ann", 7), ("bob", 3))])
    result = await call_tool(server_url, "get_credit_usage_summary")
    text = text_of(result)
    assert not result.is_error, text
    lines = text.splitlines()
    start = lines.index("Biggest changes by user against the previous 7 days:")
    assert lines[start + 1 : start + 3] == ["- ann: gone, 7.00 credits before", "- bob: gone, 3.00 credits before"]
    movers = result.structured_content["movers"]  # type: ignore[index]
    assert [(m["user"], m["status"]) for m in movers] == [("ann", "gone"), ("bob", "gone")]


@on_both_apis
async def test_the_rows_not_shown_make_up_the_total(server_url: str, openmeter: OpenMeterStandIn) -> None:
    events = [
        make_event(tenant="acme", credits=round(0.37 + i * 1.13, 2), time=utc(2026, 1, 2 + i % 20), user=f"u{i:02d}")
        for i in range(64)
    ]
    openmeter.ingest(*events)
    result = await call_tool(server_url, "get_credit_usage_summary", JANUARY)
    text = text_of(result)
    credits = sorted((event["data"]["credits"] for event in events), reverse=True)
    assert f"The 14 rows not shown hold {math.fsum(credits[50:]):,.2f} credits" in text
    structured = result.structured_content
    assert structured is not None and structured["truncated"] and structured["row_count"] == 64
    shown = math.fsum(row["credits"] for row in structured["rows"])
    assert structured["credits_not_shown"] == pytest.approx(math.fsum(credits[50:]), abs=1e-9)
    assert shown + structured["credits_not_shown"] == pytest.approx(structured["total_credits"], abs=1e-9)


# --- the workbook as a report -------------------------------------------------------------------------------------


async def test_the_summary_workbook_reads_like_a_report(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        *[
            make_event(
                tenant="acme",
                credits=float(10 * (7 - i)),
                time=utc(2026, 1, 10 + i),
                user=f"user{i}",
                module=("chat", "agents")[i % 2],
                skill="=cmd|' /C calc'!A0" if i == 0 else f"skill{i}",
            )
            for i in range(7)
        ]
    )
    text = text_of(await call_tool(server_url, "get_credit_usage_summary", JANUARY))
    content = download_bytes(server_url, text)
    workbook = load_workbook(io.BytesIO(content))
    assert workbook.sheetnames == ["Summary", "Data", "About"]

    data = workbook["Data"]
    assert [cell.value for cell in data[1]] == ["user", "module", "product", "tenant", "skill", "credits"]
    assert data.max_row == 8  # the header and every row, nothing else
    assert (data.freeze_panes, data.auto_filter.ref) == ("A2", "A1:F8")
    assert data["F2"].number_format == "#,##0.00####" and data["F2"].value == 70
    assert data.column_dimensions["A"].width == 28

    rows = summary_sheet(content)
    assert rows[0][0] == "AI credit usage breakdown"
    facts = {row[0]: row[1] for row in rows if row[0] and row[1] is not None}
    assert facts["Tenant"] == "acme"
    assert (facts["From (UTC)"], facts["To (UTC, exclusive)"]) == ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
    assert facts["Time zone"] == "UTC" and facts["Generated at (UTC)"] == "2026-01-20T12:00:00Z"
    assert facts["Total credits"] == 280 and facts["Rows in Data"] == 7
    top_users = rows.index(("Top 5 users by credits", None, None, None, None))
    assert rows[top_users + 1][:3] == ("user", "credits", "share")
    assert [row[:3] for row in rows[top_users + 2 : top_users + 7]] == [
        (f"user{i}", 10 * (7 - i), pytest.approx(10 * (7 - i) / 280)) for i in range(5)
    ]
    for title in ("Top 2 modules by credits", "Top 1 product by credits", "Top 5 skills by credits"):
        assert (title, None, None, None, None) in rows
    assert "=cmd|' /C calc'!A0" in [row[0] for row in rows]  # stored as text, never as a formula
    summary_cell = next(c for r in workbook["Summary"].iter_rows() for c in r if c.value == "=cmd|' /C calc'!A0")
    assert summary_cell.data_type == "s"

    (chart,) = charts_of(content).values()
    assert "<barChart>" in chart
    first = top_users + 3  # 1-based row of the first user
    refs = re.findall(r"<f>([^<]+)</f>", chart)
    assert f"'Summary'!$A${first}:$A${first + 4}" in refs and f"'Summary'!$B${first}:$B${first + 4}" in refs
    (bar,) = workbook["Summary"]._charts  # the same chart, as openpyxl reads it back
    assert type(bar).__name__ == "BarChart" and bar.type == "bar"
    assert bar.series[0].val.numRef.f == f"'Summary'!$B${first}:$B${first + 4}"

    about = dict(workbook["About"].iter_rows(values_only=True))
    assert "groupBy" not in about["query"] and "grouped by user, module, product, tenant, skill" in about["query"]
    assert "filter tenant = 'acme'" in about["query"]
    assert about["a row"].startswith("one combination of user, module, product, tenant and skill")
    assert "preceding window" in about["comparison"]


@on_both_apis
async def test_events_and_totals_get_a_summary_sheet_too(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=3, time=utc(2026, 1, 15, 10), user="ann", skill="translate"),
        make_event(tenant="acme", credits=1, time=utc(2026, 1, 15, 11), user="bob", skill="search"),
    )
    day = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    for tool in ("get_credit_events", "get_credit_usage_by_tenant"):
        content = download_bytes(server_url, text_of(await call_tool(server_url, tool, day)))
        rows = summary_sheet(content)
        skills = rows.index(("Top 2 skills by credits", None, None))  # the events table has no skill column
        assert rows[skills + 2][:2] == ("translate", 3)
        assert "<barChart>" in next(iter(charts_of(content).values()))
        if tool == "get_credit_events":
            data = load_workbook(io.BytesIO(content))["Data"]
            assert data["A2"].is_date and data["A2"].number_format == "yyyy-mm-dd hh:mm:ss"


async def test_the_workbook_process_writes_the_same_report(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=i / 8, time=utc(2026, 1, 15, i // 60, i % 60), user=f"u{i % 7}")
            for i in range(150)
        ]
    )
    day = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    threaded_url, process_url = start_server(), start_server(workbook_process_rows=40)
    threaded = download_bytes(threaded_url, text_of(await call_tool(threaded_url, "get_credit_events", day)))
    streamed = download_bytes(process_url, text_of(await call_tool(process_url, "get_credit_events", day)))
    assert summary_sheet(streamed) == summary_sheet(threaded)
    assert charts_of(streamed) == charts_of(threaded) != {}
    data = [list(load_workbook(io.BytesIO(c))["Data"].iter_rows(values_only=True)) for c in (streamed, threaded)]
    assert data[0] == data[1]


# --- structured results -------------------------------------------------------------------------------------------


async def test_every_tool_declares_an_output_schema_and_titles(server_url: str) -> None:
    async with httpx2.AsyncClient() as http, Client(streamable_http_client(f"{server_url}/mcp", http_client=http)) as c:
        tools = {tool.name: tool for tool in (await c.list_tools()).tools}
    assert set(tools) == {*TOOLS, "get_credit_forecast"}
    for tool in tools.values():
        schema = tool.output_schema
        assert schema is not None and schema["type"] == "object"
        rows = "days" if tool.name == "get_credit_forecast" else "rows"  # a forecast's rows are its days
        for key in ("tenant", "window", "total_credits", "row_count", rows, "truncated", "download_url"):
            assert key in schema["required"], (tool.name, key)
        assert tool.title
        assert tool.annotations is not None
        assert (tool.annotations.read_only_hint, tool.annotations.idempotent_hint) == (True, True)
        assert tool.annotations.open_world_hint is False
    assert "movers" in tools["get_credit_usage_summary"].output_schema["properties"]  # type: ignore[index]
    assert "unusual_periods" in tools["get_credit_usage_trend"].output_schema["properties"]  # type: ignore[index]


@on_both_apis
@pytest.mark.parametrize("tool", TOOLS)
async def test_structured_content_says_what_the_text_says(
    server_url: str, openmeter: OpenMeterStandIn, tool: str
) -> None:
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=1.25 * i, time=NOW - timedelta(hours=i), user=f"a|b{i % 3}")
            for i in range(1, 70)
        ]
    )
    result = await call_tool(server_url, tool)  # the client checks structuredContent against the output schema
    text = text_of(result)
    structured = result.structured_content
    assert result.content[0].type == "text" and structured is not None
    assert f"Total credits: {structured['total_credits']:,.2f}" in text
    assert f"[Download Excel]({structured['download_url']})" in text
    assert structured["window"] == {"from": "2026-01-13T12:00:00Z", "to": "2026-01-20T12:00:00Z"}
    assert structured["expires_at"] == "2026-01-20T12:10:00Z" and structured["demo"] is False
    assert (structured["row_count"] > 50) == structured["truncated"] == ("Showing 50 of" in text)
    shown = table_rows(text)
    assert len(shown) == len(structured["rows"])
    if tool == "get_credit_usage_trend":
        assert [row[0] for row in shown] == [row["period"] for row in structured["rows"]]
        assert [row[-1] for row in shown] == [f"{row['credits']:,.2f}" for row in structured["rows"]]
        return
    for cells_shown, row in zip(shown, structured["rows"], strict=True):
        expected = [f"{value:,.2f}" if name == "credits" else escape_cell(str(value)) for name, value in row.items()]
        assert cells_shown == expected


async def test_errors_and_refusals_carry_no_structured_content(server_url: str) -> None:
    bad = await call_tool(server_url, "get_credit_usage_summary", {"from_date": "someday"})
    refused = await call_tool(server_url, "get_credit_usage_trend", headers={"X-Tenant-Name": "acme"})
    for result in (bad, refused):
        assert result.is_error and result.structured_content is None
        assert len(text_of(result).splitlines()) == 1


# --- the preview cap ----------------------------------------------------------------------------------------------


async def test_the_preview_stays_under_20000_characters_whatever_the_names(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    tenant = "T" * 1500
    long_names = [f"{i:02d}" + "|x\n" * 2000 for i in range(60)]
    openmeter.ingest(
        *[
            make_event(tenant=tenant, credits=100 - i, time=NOW - timedelta(hours=1), user=name, skill=name)
            for i, name in enumerate(long_names)
        ]
    )
    headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
    result = await call_tool(server_url, "get_credit_usage_summary", headers=headers)
    text = text_of(result)
    assert not result.is_error, text[:300]
    assert len(text) <= MAX_PREVIEW_CHARS
    rows = table_rows(text)
    assert len(rows) == 50 and all(len(row) == 6 for row in rows)
    assert rows[0][0].startswith("00\\|x<br>\\|x") and rows[0][0].endswith("…")
    assert "Showing 50 of 60 rows" in text and "Total credits: 4,230.00" in text
    structured = result.structured_content
    assert structured is not None and structured["cells_shortened"] is True
    assert structured["rows"][0]["user"].endswith("…") and len(structured["rows"][0]["user"]) < 250
    workbook = load_workbook(io.BytesIO(download_bytes(server_url, text)))
    users = [row[0] for row in workbook["Data"].iter_rows(min_row=2, values_only=True)]
    assert users == long_names  # whole in the workbook


async def test_ordinary_names_are_never_shortened(server_url: str, openmeter: OpenMeterStandIn) -> None:
    name = "a.very.long.but.ordinary.name-" + "x" * 120 + "@tenant.example"
    openmeter.ingest(make_event(tenant="acme", credits=1, time=NOW - timedelta(hours=1), user=name))
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert f"| {name} |" in text_of(result)
    assert result.structured_content["cells_shortened"] is False  # type: ignore[index]
