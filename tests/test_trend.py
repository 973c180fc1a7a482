"""Issue 7: the trend tool. Periods, zero-filling, partial periods, time zones across DST, the top 5 plus Other
and the unusual-period rule, first as functions, then end to end through the real MCP client."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx2
import pytest
from openpyxl import load_workbook
from opentelemetry.trace import StatusCode

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.questions.trend import (
    OTHER,
    Trend,
    TrendError,
    build_trend,
    choose_granularity,
    parse_time_zone,
    periods_of,
)
from ai_credit_usage.runtime.window import Window, resolve_window
from tests.conftest import call_tool, download_bytes, on_both_apis, text_of
from tests.otel_capture import telemetry_capture
from tests.sent import meter_queries

PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")
TREND = "get_credit_usage_trend"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


# --- periods, as functions ----------------------------------------------------------------------------------------


def test_a_paris_day_across_the_spring_dst_change_is_23_hours() -> None:
    window = Window(utc(2026, 3, 28, 12), utc(2026, 3, 31))
    periods = periods_of(window, "day", PARIS)
    assert [p.label for p in periods] == [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30), date(2026, 3, 31)]
    spring = periods[1]
    assert (spring.start, spring.end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # CET, then CEST
    assert spring.end - spring.start == timedelta(hours=23)
    assert [p.partial for p in periods] == [True, False, False, True]  # cut by 12:00Z and by 00:00Z (02:00 CEST)


def test_a_paris_day_across_the_autumn_dst_change_is_25_hours() -> None:
    (autumn,) = periods_of(Window(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)), "day", PARIS)
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert not autumn.partial


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    window = Window(utc(2026, 1, 1), utc(2026, 2, 1))  # a Thursday to a Sunday
    weeks = periods_of(window, "week", ZoneInfo("UTC"))
    assert [p.label for p in weeks] == [date(2025, 12, 29), date(2026, 1, 5), date(2026, 1, 12), date(2026, 1, 19),
                                        date(2026, 1, 26)]  # fmt: skip
    assert all(p.label.weekday() == 0 for p in weeks)
    assert [p.partial for p in weeks] == [True, False, False, False, True]
    months = periods_of(Window(utc(2025, 11, 15), utc(2026, 2, 1)), "month", ZoneInfo("UTC"))
    assert [(p.label, p.partial) for p in months] == [
        (date(2025, 11, 1), True), (date(2025, 12, 1), False), (date(2026, 1, 1), False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("days", "expected"), [(1, "day"), (45, "day"), (46, "week"), (182, "week"), (183, "month"), (800, "month")]
)
def test_the_default_granularity_follows_the_window(days: int, expected: str) -> None:
    window = Window(utc(2026, 1, 1), utc(2026, 1, 1) + timedelta(days=days))
    assert choose_granularity(window, ZoneInfo("UTC")) == expected


def test_the_default_granularity_counts_local_calendar_days() -> None:
    # 45 Paris days across the October DST change are 45 days and 1 hour in UTC: still daily.
    autumn = resolve_window("2026-10-01", "2026-11-14", utc(2026, 12, 1), PARIS)
    assert autumn.end - autumn.start == timedelta(days=45, hours=1)
    assert choose_granularity(autumn, PARIS) == "day"
    assert choose_granularity(resolve_window("2026-10-01", "2026-11-15", utc(2026, 12, 1), PARIS), PARIS) == "week"


def test_too_many_periods_ask_for_a_coarser_granularity() -> None:
    with pytest.raises(TrendError, match="coarser granularity"):
        periods_of(Window(utc(2020, 1, 1), utc(2026, 1, 1)), "day", ZoneInfo("UTC"))


@pytest.mark.parametrize("name", ["Mars/Olympus", "europe/paris", "../etc/passwd", "+02:00"])
def test_unknown_time_zones_name_the_parameter(name: str) -> None:
    with pytest.raises(TrendError, match="time_zone"):
        parse_time_zone(name)
    assert parse_time_zone(None) == ZoneInfo("UTC")
    assert parse_time_zone(" Asia/Tokyo ") == ZoneInfo("Asia/Tokyo")


# --- series, as functions -----------------------------------------------------------------------------------------


def test_missing_periods_are_zero_filled() -> None:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 8)), "day", ZoneInfo("UTC"))
    trend = build_trend(periods, "day", "UTC", None, [(date(2026, 1, 2), "", 5.0), (date(2026, 1, 6), "", 2.5)])
    assert trend.totals == [0.0, 5.0, 0.0, 0.0, 0.0, 2.5, 0.0]
    assert trend.series == []


def test_the_top_five_and_other_add_up_to_each_total_exactly() -> None:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 11)), "day", ZoneInfo("UTC"))
    samples = [
        (date(2026, 1, 1 + day), f"user{user}", 0.1 * (user + 1) + day / 3 + 1e-9 * user)
        for day in range(10)
        for user in range(9)
        if (day + user) % 4  # gaps, so some series are missing in some periods
    ]
    trend = build_trend(periods, "day", "UTC", "user", samples)
    per_user = {name: math.fsum(v for _, n, v in samples if n == name) for name in {n for _, n, _ in samples}}
    assert trend.series == [*sorted(per_user, key=lambda name: -per_user[name])[:5], OTHER]
    assert trend.has_other
    for values, total in zip(trend.values, trend.totals, strict=True):
        assert math.fsum(values) == total  # exactly: the total is what the row shows
    everything = math.fsum(value for _, _, value in samples)
    assert math.fsum(trend.totals) == pytest.approx(everything, rel=1e-12)
    assert set(trend.series_totals) == {f"user{i}" for i in range(9)}


def test_a_series_called_other_is_kept_apart_from_the_rest() -> None:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 2)), "day", ZoneInfo("UTC"))
    names = ["Other", "a", "b", "c", "d", "e", ""]
    trend = build_trend(periods, "day", "UTC", "user", [(date(2026, 1, 1), n, 10.0 - i) for i, n in enumerate(names)])
    assert trend.series == ["Other", "a", "b", "c", "d", "Other (rest)"]
    assert trend.values[0][-1] == 5.0 + 4.0  # "e" and the usage without a user
    assert "(none)" in trend.series_totals


def test_one_spike_is_unusual_and_the_rest_is_not() -> None:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 15)), "day", ZoneInfo("UTC"))
    normal = [100, 104, 97, 101, 99, 103, 98, 102, 100, 96, 105, 101, 100]
    credits = [*normal[:9], 900, *normal[9:]]
    trend = build_trend(periods, "day", "UTC", None, [(p.label, "", c) for p, c in zip(periods, credits, strict=True)])
    assert trend.typical == 100.5  # the median ignores the spike (mean: 157)
    assert trend.deviation == 2.0
    assert [found.index for found in trend.unusual] == [9]
    assert trend.unusual[0].times_typical == pytest.approx(900 / 100.5)
    assert not trend.typical_with_usage


def daily(credits: list[float]) -> Trend:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 1) + timedelta(days=len(credits))), "day", UTC_ZONE)
    return build_trend(periods, "day", "UTC", None, [(p.label, "", c) for p, c in zip(periods, credits, strict=True)])


@pytest.mark.parametrize(("value", "flagged"), [(152.5, False), (152.75, True)])
def test_on_a_noisy_series_the_limit_is_three_deviations(value: float, flagged: bool) -> None:
    trend = daily([70, 130, 100, 80, 120, 100, 75, 125, 100, 85, 115, 100, 100, value])
    assert (trend.typical, trend.deviation) == (100, 17.5)  # 3 deviations above: 152.5, more than 1.5 times 100
    assert [found.index for found in trend.unusual] == ([13] if flagged else [])


@pytest.mark.parametrize(("value", "flagged"), [(101, False), (149.99, False), (150, True)])
def test_on_a_steady_series_an_unusual_period_is_at_least_one_and_a_half_times_typical(
    value: float, flagged: bool
) -> None:
    trend = daily([100] * 13 + [value])
    assert (trend.typical, trend.deviation) == (100, 0)  # any value above 100 is "more than 3 deviations" above
    assert [found.index for found in trend.unusual] == ([13] if flagged else [])


def test_when_most_days_had_no_usage_the_typical_day_is_one_with_usage() -> None:
    usage = {2: 8, 5: 9, 6: 10, 9: 11, 12: 12, 15: 10, 16: 9, 19: 11, 22: 10, 25: 10, 27: 12, 29: 8}
    credits = [float(usage.get(day, 0)) for day in range(30)]
    quiet = daily(credits)
    assert quiet.judged and quiet.typical_with_usage
    assert (quiet.typical, quiet.deviation, quiet.complete_with_usage) == (10, 1, 12)
    assert quiet.unusual == []  # before: all 12 days with usage "where the typical day had no usage"
    assert quiet.typical_name() == "typical day with usage"
    spiky = daily([50.0 if day == 15 else value for day, value in enumerate(credits)])
    assert [(found.index, found.times_typical) for found in spiky.unusual] == [(15, 5.0)]


def test_too_few_days_with_usage_are_not_judged() -> None:
    sparse = daily([0.0] * 27 + [5.0, 6.0, 90.0])
    assert not sparse.judged and sparse.too_few_with_usage and sparse.unusual == []
    assert (sparse.complete, sparse.complete_with_usage) == (30, 3)
    assert daily([0.0] * 26 + [5.0, 6.0, 5.0, 90.0]).unusual[0].index == 29  # 4 with usage are enough


def test_flat_usage_has_nothing_unusual_and_few_periods_are_not_judged() -> None:
    periods = periods_of(Window(utc(2026, 1, 1), utc(2026, 1, 11)), "day", ZoneInfo("UTC"))
    flat = build_trend(periods, "day", "UTC", None, [(p.label, "", 0.1 + 0.2) for p in periods])
    assert flat.judged and flat.unusual == []
    short = periods_of(Window(utc(2026, 1, 1, 12), utc(2026, 1, 5, 12)), "day", ZoneInfo("UTC"))  # 3 complete days
    assert not build_trend(short, "day", "UTC", None, [(short[1].label, "", 1000.0)]).judged


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@on_both_apis
async def test_zero_filled_days_with_partial_ends(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=1.5, time=utc(2026, 1, 10, 18)),  # the first, partial day
        make_event(tenant="acme", credits=2, time=utc(2026, 1, 12, 9)),
        make_event(tenant="acme", credits=3, time=utc(2026, 1, 12, 23, 59, 59)),
        make_event(tenant="acme", credits=4, time=utc(2026, 1, 14, 5)),  # the last, partial day
        make_event(tenant="acme", credits=99, time=utc(2026, 1, 14, 6)),  # the window has ended
        make_event(tenant="globex", credits=50, time=utc(2026, 1, 11, 12)),
    )
    result = await call_tool(
        server_url, TREND, {"from_date": "2026-01-10T12:00:00Z", "to_date": "2026-01-14T06:00:00Z"}
    )
    text = text_of(result)
    assert not result.is_error, text
    assert text.splitlines()[0] == (
        "Tenant acme, 2026-01-10T12:00:00Z to 2026-01-14T06:00:00Z (end exclusive), daily in UTC:"
    )
    assert table_rows(text) == [
        ["day", "partial", "credits"],
        ["2026-01-10", "yes", "1.50"],
        ["2026-01-11", "no", "0.00"],
        ["2026-01-12", "no", "5.00"],
        ["2026-01-13", "no", "0.00"],
        ["2026-01-14", "yes", "4.00"],
    ]
    assert "Total credits: 10.50" in text
    assert "2 days marked partial" in text
    assert "Too few complete days (3) to say which are unusual" in text
    structured = result.structured_content
    assert structured is not None
    assert [(p["period"], p["partial"], p["credits"]) for p in structured["rows"]] == [
        ("2026-01-10", True, 1.5), ("2026-01-11", False, 0), ("2026-01-12", False, 5),
        ("2026-01-13", False, 0), ("2026-01-14", True, 4),
    ]  # fmt: skip
    assert structured["rows"][0]["start"] == "2026-01-10T00:00:00Z"
    assert (structured["granularity"], structured["time_zone"], structured["group_by"]) == ("day", "UTC", None)
    workbook = load_workbook(io.BytesIO(download_bytes(server_url, text)))
    data = list(workbook["Data"].iter_rows(values_only=True))
    assert data[0] == ("day", "partial", "credits")
    assert data[1] == (datetime(2026, 1, 10), "yes", 1.5)  # the day as a real Excel date
    assert workbook["Data"]["A2"].number_format == "yyyy-mm-dd"
    (trend_query,) = [query for query in meter_queries(openmeter) if query.unit]
    assert (trend_query.unit, trend_query.time_zone) == ("day", "UTC")
    assert trend_query.group_by == ["tenant"]


@pytest.mark.anyio
@on_both_apis
async def test_paris_days_across_dst_put_each_event_on_its_local_day(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=1, time=utc(2026, 3, 28, 22, 59)),  # 23:59 CET on the 28th
        make_event(tenant="acme", credits=10, time=utc(2026, 3, 28, 23, 0)),  # 00:00 CET on the 29th
        make_event(tenant="acme", credits=20, time=utc(2026, 3, 29, 21, 59)),  # 23:59 CEST on the 29th
        make_event(tenant="acme", credits=100, time=utc(2026, 3, 29, 22, 0)),  # 00:00 CEST on the 30th
    )
    arguments = {"from_date": "2026-03-28", "to_date": "2026-03-30", "time_zone": "Europe/Paris"}
    result = await call_tool(server_url, TREND, arguments)
    text = text_of(result)
    assert not result.is_error, text
    # Dates without an offset are read in the trend's time zone: the window is three whole Paris days.
    assert text.splitlines()[0].startswith("Tenant acme, 2026-03-27T23:00:00Z to 2026-03-30T22:00:00Z")
    assert "daily in Europe/Paris" in text.splitlines()[0]
    assert table_rows(text)[1:] == [
        ["2026-03-28", "no", "1.00"],
        ["2026-03-29", "no", "30.00"],
        ["2026-03-30", "no", "100.00"],
    ]
    rows = result.structured_content["rows"]  # type: ignore[index]
    assert [(row["start"], row["end"]) for row in rows] == [
        ("2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z"),
        ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),  # 23 hours
        ("2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"),
    ]
    (query,) = [query for query in meter_queries(openmeter) if query.unit]
    assert (query.time_zone, query.start) == ("Europe/Paris", "2026-03-27T23:00:00Z")


@pytest.mark.anyio
@on_both_apis
async def test_weeks_fold_days_and_group_by_keeps_five_series_and_other(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    events = []
    for day in range(21):  # 2026-01-05 is a Monday: three whole weeks
        for user in range(7):
            if (day + user) % 3:
                events.append(
                    make_event(
                        tenant="acme",
                        credits=round(1 + user * 0.7 + day * 0.01, 2),
                        time=utc(2026, 1, 5 + day, 10),
                        user=f"user{user}",
                    )
                )
    openmeter.ingest(*events)
    arguments = {"from_date": "2026-01-05", "to_date": "2026-01-25", "granularity": "week", "group_by": "user"}
    result = await call_tool(server_url, TREND, arguments)
    text = text_of(result)
    assert not result.is_error, text
    header, *rows = table_rows(text)
    assert header == ["week", "partial", "user6", "user5", "user4", "user3", "user2", "Other", "total"]
    assert [row[0] for row in rows] == ["2026-01-05", "2026-01-12", "2026-01-19"]
    assert "by user (the top 5, the rest as Other)" in text.splitlines()[0]
    structured = result.structured_content
    assert structured is not None
    assert structured["series"] == header[2:-1]
    for row in structured["rows"]:
        assert math.fsum(row["series_credits"]) == row["credits"]
    expected_total = math.fsum(event["data"]["credits"] for event in events)
    assert structured["total_credits"] == pytest.approx(expected_total)
    content = download_bytes(server_url, text)
    workbook = load_workbook(io.BytesIO(content))
    assert workbook.sheetnames == ["Summary", "Data", "About"]
    data = list(workbook["Data"].iter_rows(values_only=True))
    assert data[0] == tuple(header)
    assert math.fsum(row[-1] for row in data[1:]) == pytest.approx(expected_total)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        charts = sorted(name for name in archive.namelist() if name.startswith("xl/charts/chart"))
        line = next(archive.read(name).decode() for name in charts if "<lineChart>" in archive.read(name).decode())
    refs = re.findall(r"<f>([^<]+)</f>", line)
    assert "'Data'!$C$2:$C$4" in refs and "'Data'!$H$2:$H$4" in refs  # user6 .. Other, not the total
    assert "'Data'!$I$2:$I$4" not in refs
    about = dict(workbook["About"].iter_rows(values_only=True))
    day = "granularity P1D" if openmeter.api == "v3" else "windowSize DAY"  # OpenMeter has no week: days folded
    assert day in about["query"] and "ISO weeks" in about["granularity"]
    (query,) = [query for query in meter_queries(openmeter) if query.unit]
    assert (query.unit, query.group_by) == ("day", ["tenant", "user"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"granularity": "hourly"}, "granularity"),
        ({"group_by": "tenant"}, "group_by"),
    ],
)
async def test_bad_trend_arguments_are_one_sentence_naming_the_parameter(
    server_url: str, openmeter: OpenMeterStandIn, arguments: dict[str, str], named: str
) -> None:
    result = await call_tool(server_url, TREND, arguments)
    assert result.is_error
    assert text_of(result).startswith(named)
    assert len(text_of(result).splitlines()) == 1
    assert not [r for r in openmeter.requests if r.path.endswith("/query")]


@pytest.mark.anyio
async def test_the_trend_input_schema_offers_the_choices(server_url: str) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient() as http, Client(streamable_http_client(f"{server_url}/mcp", http_client=http)) as c:
        (trend,) = [tool for tool in (await c.list_tools()).tools if tool.name == TREND]
    properties = trend.input_schema["properties"]
    assert json.dumps(properties["granularity"]).count('"day", "week", "month"') == 1
    assert ["user", "module", "product", "skill"] in [option.get("enum") for option in properties["group_by"]["anyOf"]]
    assert "IANA" in properties["time_zone"]["description"]


@pytest.mark.anyio
@on_both_apis
async def test_sparse_usage_is_judged_against_the_days_with_usage(server_url: str, openmeter: OpenMeterStandIn) -> None:
    usage = {2: 8, 5: 9, 6: 10, 9: 11, 12: 12, 15: 50, 16: 9, 19: 11, 22: 10, 25: 10, 27: 12, 29: 8}
    first = utc(2025, 12, 21, 9)
    openmeter.ingest(*[make_event(tenant="acme", credits=c, time=first + timedelta(days=d)) for d, c in usage.items()])
    result = await call_tool(server_url, TREND, {"from_date": "2025-12-21", "to_date": "2026-01-19"})
    text = text_of(result)
    assert not result.is_error, text
    assert (
        "Most complete days had no usage, so the typical day with usage is the median of the 12 complete days that "
        "had some."
    ) in text
    assert "above the typical day with usage (10.00) and at least 1.5 times it:" in text
    assert "- 2026-01-05: 50.00 credits, 5.0 times the typical day with usage" in text
    assert "where the typical day had no usage" not in text
    structured = result.structured_content
    assert structured is not None
    assert (structured["typical_credits"], structured["typical_basis"]) == (10, "complete periods with usage")
    assert [(u["period"], u["times_typical"]) for u in structured["unusual_periods"]] == [("2026-01-05", 5.0)]
    workbook = load_workbook(io.BytesIO(download_bytes(server_url, text)))
    summary = list(workbook["Summary"].iter_rows(values_only=True))
    facts = {row[0]: row[1] for row in summary if row[0]}
    assert facts["Typical day with usage"] == 10 and facts["Unusual days"] == "1 (listed below)"
    heading = [row[:4] for row in summary].index(("day", "credits", "times the typical day with usage", "partial"))
    assert summary[heading - 1][0].endswith("above the typical day with usage (the median complete day that had some)")
    assert summary[heading + 1][:4] == ("2026-01-05", 50, 5, "no")


@pytest.mark.anyio
@on_both_apis
async def test_too_few_days_with_usage_say_so(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(*[make_event(tenant="acme", credits=c, time=utc(2026, 1, d, 9)) for d, c in ((3, 5), (9, 80))])
    result = await call_tool(server_url, TREND, {"from_date": "2026-01-01", "to_date": "2026-01-19"})
    text = text_of(result)
    assert (
        "Most complete days had no usage and only 2 had some: too few days with usage to say which are unusual; "
        "at least 4 are needed."
    ) in text
    assert result.structured_content["typical_basis"] is None  # type: ignore[index]
    facts = {row[0]: row[1] for row in load_workbook(io.BytesIO(download_bytes(server_url, text)))["Summary"].values}
    assert facts["Unusual days"] == "too few days with usage to judge (2; 4 needed)"


@pytest.mark.anyio
@on_both_apis
@pytest.mark.parametrize("group_by", [None, "module"])
async def test_the_trend_workbook_summary_has_every_top_five_and_both_charts(
    server_url: str, openmeter: OpenMeterStandIn, group_by: str | None
) -> None:
    openmeter.ingest(
        *[
            make_event(
                tenant="acme",
                credits=float(7 - i),
                time=utc(2026, 1, 5 + i, 10),
                user=f"user{i}",
                module=f"module{i % 3}",
                product=f"product{i % 2}",
                skill=f"skill{i % 4}",
            )
            for i in range(7)
        ],
        make_event(tenant="globex", credits=1000, time=utc(2026, 1, 6), user="intruder"),
    )
    arguments = {"from_date": "2026-01-05", "to_date": "2026-01-18", **({"group_by": group_by} if group_by else {})}
    result = await call_tool(server_url, TREND, arguments)
    text = text_of(result)
    assert not result.is_error, text
    workbook = load_workbook(io.BytesIO(download_bytes(server_url, text)))
    sheet = workbook["Summary"]
    rows = list(sheet.iter_rows(values_only=True))
    top = {row[0]: index for index, row in enumerate(rows) if row[0] and str(row[0]).startswith("Top ")}
    assert set(top) == {
        "Top 5 users by credits", "Top 3 modules by credits", "Top 2 products by credits", "Top 4 skills by credits",
    }  # fmt: skip
    users = rows[top["Top 5 users by credits"] + 2 : top["Top 5 users by credits"] + 7]
    assert [row[:3] for row in users] == [(f"user{i}", 7 - i, pytest.approx((7 - i) / 28)) for i in range(5)]
    modules = rows[top["Top 3 modules by credits"] + 2 : top["Top 3 modules by credits"] + 5]
    assert [row[:2] for row in modules] == [("module0", 12), ("module1", 9), ("module2", 7)]
    # openpyxl 3.1 reads charts back: the trend's line chart and the bar chart of the top users.
    kinds = sorted(type(chart).__name__ for chart in sheet._charts)
    assert kinds == ["BarChart", "LineChart"]
    (bar,) = [chart for chart in sheet._charts if type(chart).__name__ == "BarChart"]
    first = top["Top 5 users by credits"] + 3  # 1-based row of the first user
    assert bar.series[0].val.numRef.f == f"'Summary'!$B${first}:$B${first + 4}"
    queries = meter_queries(openmeter)
    (breakdown,) = [query for query in queries if not query.unit and query.start == "2026-01-05T00:00:00Z"]
    assert breakdown.group_by == ["user", "module", "product", "tenant", "skill"]
    about = dict(workbook["About"].iter_rows(values_only=True))
    assert f"without {'granularity' if openmeter.api == 'v3' else 'windowSize'}" in about["Summary query"]


@pytest.mark.anyio
@on_both_apis
async def test_more_than_50_periods_preview_the_newest(server_url: str, openmeter: OpenMeterStandIn) -> None:
    start = date(2025, 10, 22)
    days = [start + timedelta(days=offset) for offset in range(90)]
    noon = [datetime.combine(day, time(12), UTC) for day in days]
    openmeter.ingest(*[make_event(tenant="acme", credits=1 + i % 5, time=moment) for i, moment in enumerate(noon)])
    arguments = {"from_date": "2025-10-22", "to_date": "2026-01-19", "granularity": "day"}
    result = await call_tool(server_url, TREND, arguments)
    text = text_of(result)
    assert not result.is_error, text
    shown = table_rows(text)[1:]
    assert [row[0] for row in shown] == [d.isoformat() for d in days[40:]]  # the newest 50, oldest first
    assert (
        "Showing the newest 50 of 90 days (2025-12-01 to 2026-01-19); the Excel file has all 90, from 2025-10-22."
    ) in text
    older = math.fsum(1 + i % 5 for i in range(40))
    assert f"The 40 older days not shown hold {older:,.2f} credits (with the days shown, they make the total)." in text
    structured = result.structured_content
    assert structured is not None and structured["truncated"] and structured["row_count"] == 90
    assert [row["period"] for row in structured["rows"]] == [d.isoformat() for d in days[40:]]
    assert structured["credits_not_shown"] == older
    assert math.fsum(row["credits"] for row in structured["rows"]) + older == structured["total_credits"]
    data = list(load_workbook(io.BytesIO(download_bytes(server_url, text)))["Data"].iter_rows(values_only=True))
    assert len(data) == 91 and data[1][0] == datetime(2025, 10, 22) and data[-1][0] == datetime(2026, 1, 19)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "error"),
    [({"from_date": "someday"}, "WindowError"), ({"time_zone": "Mars/Olympus"}, "TrendError")],
)
async def test_a_caller_mistake_is_an_invalid_call_not_a_server_error(
    server_url: str, arguments: dict[str, str], error: str
) -> None:
    otel = telemetry_capture()
    with otel.capture() as captured:
        result = await call_tool(server_url, TREND, arguments)
    assert result.is_error
    tool = captured.span(f"tool {TREND}")
    assert dict(tool.attributes or {})["ai_credits.outcome"] == "invalid"
    assert tool.status.status_code == StatusCode.UNSET
    calls = captured.metric("ai_credits.tool.calls", ai_credits__outcome="invalid")
    assert [point.value for point in calls] == [1]
    assert captured.metric("ai_credits.tool.calls", ai_credits__outcome="error") == []
