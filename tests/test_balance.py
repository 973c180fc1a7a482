"""get_credit_balance end to end: SDK client over HTTP with TAIS headers -> server -> stand-in OpenMeter, whose
entitlements are computed from the same events its meter sees; the clock is injected, never waited for."""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openpyxl import load_workbook

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import API_KEY, NOW, FakeClock, ServerStarter, call_tool, download_bytes, on_both_apis, text_of

pytestmark = pytest.mark.anyio
TOOL = "get_credit_balance"
PERIOD_START = datetime(2026, 1, 1, tzinfo=UTC)
RESULT_FIELDS = {"tenant", "as_of", "balance", "usage", "overage", "has_access", "period", "grants", "runway"}
GRANT_FIELDS = {"name", "amount", "remaining", "effective_at", "expires_at", "recurring"}


@pytest.fixture
def balance_server(start_server: ServerStarter, openmeter: OpenMeterStandIn, clock: FakeClock) -> Callable[..., str]:
    """A server with the credits feature set; the stand-in's entitlements see the same clock. On v3 the stand-in
    serves the entitlement value (upstream's newer endpoint) from the same entitlements, so a test written with
    entitlements runs on both APIs; the ledger's own tests are in test_balance_v3.py."""
    openmeter.entitlements.clock = clock
    openmeter.credits.serves_entitlement_value = True

    def start(**overrides: Any) -> str:
        return start_server(openmeter_credits_feature="ai_credits", **overrides)

    return start


def spend(openmeter: OpenMeterStandIn, subject: str, credits: float, when: datetime, tenant: str = "acme") -> None:
    openmeter.ingest(make_event(tenant=tenant, credits=credits, time=when, subject=subject, user=subject))


def allowance(openmeter: OpenMeterStandIn, customer: str = "acme", **options: Any) -> None:
    openmeter.entitlements.add_customer(customer, subject_keys=options.pop("subject_keys", ()))
    openmeter.entitlements.add_entitlement(
        customer, "ai_credits", anchor=PERIOD_START, created_at=datetime(2025, 10, 1, tzinfo=UTC), **options
    )


async def list_tools(url: str) -> Any:
    async with httpx2.AsyncClient() as http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        return client.instructions, (await client.list_tools()).tools


@on_both_apis
async def test_offered_only_when_the_credits_feature_is_set(
    start_server: ServerStarter, balance_server: Callable[..., str]
) -> None:
    instructions, tools = await list_tools(start_server())
    assert TOOL not in {tool.name for tool in tools}
    assert TOOL not in (instructions or "")
    instructions, tools = await list_tools(balance_server())
    (tool,) = [tool for tool in tools if tool.name == TOOL]
    assert tool.input_schema.get("properties", {}) == {}
    assert RESULT_FIELDS | {"download_url"} <= set(tool.output_schema["properties"])
    assert "How many credits do we have left?" in (tool.description or "")
    assert "get_credit_balance" in (instructions or "")
    refused = await call_tool(start_server(), TOOL)
    assert refused.is_error  # not offered: the SDK knows no such tool


async def test_balance_grants_and_reset_of_a_metered_allowance(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter, subject_keys=["acme-bot"])
    add = openmeter.entitlements.add_grant
    add("acme", "ai_credits", amount=1000, effective_at=PERIOD_START, recurrence=("MONTH", PERIOD_START), name="Plan")
    add("acme", "ai_credits", amount=200, effective_at=datetime(2026, 1, 10, tzinfo=UTC), priority=2,
        expiration=("DAY", 30), name="Top-up | =cmd")  # fmt: skip
    spend(openmeter, "acme", 300, datetime(2026, 1, 5, tzinfo=UTC))
    spend(openmeter, "acme-bot", 50.5, datetime(2026, 1, 19, tzinfo=UTC))
    spend(openmeter, "acme", 999, datetime(2025, 12, 20, tzinfo=UTC))  # last period: the plan refilled since
    url = balance_server()
    result = await call_tool(url, TOOL)
    text = text_of(result)
    assert not result.is_error, text
    first = text.splitlines()[0]
    assert "**849.50 credits left**" in first and "as of 2026-01-20 12:00 UTC" in first
    assert "350.50 used this period" in first and "resets on 2026-02-01 00:00 UTC (in 12 days)" in first
    assert "| Plan | 1,000.00 | 649.50 | never | monthly |" in text
    assert "| Top-up \\| =cmd | 200.00 | 200.00 | 2026-02-09 00:00 UTC | no |" in text  # escaped, not a column
    assert "Overage" not in text and "soft limit" not in text
    data = result.structured_content
    assert data is not None
    assert set(data) >= RESULT_FIELDS
    assert (data["tenant"], data["balance"], data["usage"], data["overage"], data["has_access"]) == (
        "acme", 849.5, 350.5, 0, True,
    )  # fmt: skip
    assert data["period"] == {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    assert data["as_of"] == "2026-01-20T12:00:00Z"
    assert [set(grant) >= GRANT_FIELDS for grant in data["grants"]] == [True, True]
    assert data["grants"][0]["recurring"] and data["grants"][1]["expires_at"] == "2026-02-09T00:00:00Z"
    workbook = load_workbook(io.BytesIO(download_bytes(url, text)))
    assert workbook.sheetnames == ["Summary", "Grants", "Daily", "About"]
    grants = list(workbook["Grants"].iter_rows(values_only=True))
    assert grants[0][:3] == ("grant", "amount", "left")
    assert grants[2][0] == "Top-up | =cmd"  # literal text, never a formula
    daily = list(workbook["Daily"].iter_rows(values_only=True))
    assert daily[0] == ("day", "credits", "used this period", "projected", "low 80%", "high 80%", "allowance")
    this_period = [row for row in daily[1:] if row[2] is not None]
    assert this_period[-1][2] == pytest.approx(350.5) and this_period[-1][6] == pytest.approx(1200)
    ahead = [row for row in daily[1:] if row[1] is None]  # the days to the reset: projected only
    assert ahead[-1][0].date() == date(2026, 1, 31)
    assert all(row[4] <= row[3] <= row[5] for row in ahead)
    assert workbook["Summary"]._charts  # cumulative usage against the allowance


@on_both_apis
async def test_a_short_link_life_is_said_in_seconds_as_on_every_answer(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=100, effective_at=PERIOD_START, name="Plan")
    text = text_of(await call_tool(balance_server(download_ttl_seconds=30), TOOL))
    assert text.endswith("(link expires at 2026-01-20T12:00:30Z, in 30 seconds)"), text


async def test_no_customer_or_no_entitlement_is_one_sentence_not_an_error(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    url = balance_server()
    result = await call_tool(url, TOOL)
    assert not result.is_error
    assert text_of(result) == "No credit allowance is set up for tenant acme."
    data = result.structured_content
    assert data is not None
    assert (data["status"], data["balance"], data["grants"], data["download_url"]) == ("none", None, [], None)
    openmeter.entitlements.add_customer("acme")  # a customer, but no entitlement to the feature
    assert text_of(await call_tool(url, TOOL)) == "No credit allowance is set up for tenant acme."


async def test_boolean_entitlement_has_no_metered_allowance(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    openmeter.entitlements.add_customer("acme")
    openmeter.entitlements.add_entitlement("acme", "ai_credits", type="boolean", created_at=PERIOD_START)
    result = await call_tool(balance_server(), TOOL)
    assert not result.is_error
    assert "no metered credit allowance" in text_of(result)
    assert re.search(r"\d", text_of(result)) is None  # no figures
    assert result.structured_content is not None and result.structured_content["status"] == "not_metered"


async def test_overage_and_soft_limit_are_said(balance_server: Callable[..., str], openmeter: OpenMeterStandIn) -> None:
    allowance(openmeter, is_soft_limit=True)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=100, effective_at=PERIOD_START)
    spend(openmeter, "acme", 130, datetime(2026, 1, 3, tzinfo=UTC))
    result = await call_tool(balance_server(), TOOL)
    text = text_of(result)
    assert "**0.00 credits left**" in text
    assert "Overage: 30.00 credits used this period beyond what the grants cover." in text
    assert "soft limit: usage may go on beyond the balance" in text
    assert result.structured_content is not None
    assert (result.structured_content["overage"], result.structured_content["has_access"]) == (30, True)


async def test_usage_under_unmapped_subjects_is_named_in_one_line(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=1000, effective_at=PERIOD_START)
    spend(openmeter, "acme", 10, datetime(2026, 1, 10, tzinfo=UTC))
    spend(openmeter, "anna@acme.example", 25, datetime(2026, 1, 11, tzinfo=UTC))  # tenant acme, subject not mapped
    text = text_of(await call_tool(balance_server(), TOOL))
    assert "**990.00 credits left**" in text  # the unmapped subject does not burn the balance
    (note,) = [line for line in text.splitlines() if line.startswith("Note:")]
    assert "entitlement counted 10.00 credits but the tenant meter shows 35.00" in note


async def test_mapped_usage_gives_no_disagreement_line(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter, subject_keys=["anna@acme.example"])
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=1000, effective_at=PERIOD_START)
    spend(openmeter, "anna@acme.example", 25, datetime(2026, 1, 11, tzinfo=UTC))
    text = text_of(await call_tool(balance_server(), TOOL))
    assert "**975.00 credits left**" in text
    assert "Note:" not in text


async def test_customer_key_template_and_exact_keys_keep_tenants_apart(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter, "tais-acme")
    allowance(openmeter, "tais-acme-eu")  # another tenant whose key starts with acme's
    allowance(openmeter, "acme")  # not under the template: never acme's
    openmeter.entitlements.add_grant("tais-acme", "ai_credits", amount=10, effective_at=PERIOD_START)
    openmeter.entitlements.add_grant("tais-acme-eu", "ai_credits", amount=777, effective_at=PERIOD_START)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=555, effective_at=PERIOD_START)
    url = balance_server(openmeter_customer_key="tais-{tenant}")
    text = text_of(await call_tool(url, TOOL))
    assert "**10.00 credits left**" in text and "777" not in text and "555" not in text
    acm = await call_tool(url, TOOL, headers={"X-Tenant-Name": "acm", "X-User-UserRole": "admin"})
    assert text_of(acm) == "No credit allowance is set up for tenant acm."  # no partial match on tais-acme
    paths = {request.path for request in openmeter.requests if "/customers/" in request.path}
    assert paths <= {
        f"/api/v2/customers/{key}/entitlements/ai_credits{tail}"
        for key in ("tais-acme", "tais-acm")
        for tail in ("", "/value", "/grants", "/history")
    }
    assert not openmeter.requests_to("/api/v1/customers")  # never the customer list's search


@on_both_apis
@pytest.mark.parametrize("tenant", ["globex/../acme", "..", "acme/x", "50%2Facme"])
async def test_a_tenant_name_that_would_change_the_path_is_refused(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn, tenant: str
) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=10, effective_at=PERIOD_START)
    result = await call_tool(balance_server(), TOOL, headers={"X-Tenant-Name": tenant, "X-User-UserRole": "admin"})
    assert result.is_error
    assert "cannot be used to look up its credit allowance" in text_of(result)
    assert not [request for request in openmeter.requests if "/customers/" in request.path]


@on_both_apis
async def test_only_admins_and_no_arguments(balance_server: Callable[..., str], openmeter: OpenMeterStandIn) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=10, effective_at=PERIOD_START)
    url = balance_server()
    user = await call_tool(url, TOOL, headers={"X-Tenant-Name": "acme", "X-User-UserRole": "user"})
    assert user.is_error and "Only tenant administrators" in text_of(user)
    other = await call_tool(url, TOOL, {"tenant": "globex"})
    assert other.is_error and "takes no arguments" in text_of(other)
    assert not [request for request in openmeter.requests if "/customers/" in request.path]


async def test_the_clock_moves_the_period(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn, clock: FakeClock
) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant(
        "acme", "ai_credits", amount=100, effective_at=PERIOD_START, recurrence=("MONTH", PERIOD_START)
    )
    spend(openmeter, "acme", 60, datetime(2026, 1, 15, tzinfo=UTC))
    url = balance_server()
    assert "**40.00 credits left**" in text_of(await call_tool(url, TOOL))
    clock.advance(days=13)  # 2026-02-02: a new period, the grant refilled
    text = text_of(await call_tool(url, TOOL))
    assert "**100.00 credits left**" in text and "resets on 2026-03-01 00:00 UTC" in text
    assert NOW + timedelta(days=13) == clock()


def steady_usage(openmeter: OpenMeterStandIn, subject: str = "acme", days: int = 84) -> float:
    """40 credits each weekday and 4 each weekend day at 09:00 UTC, for the `days` days up to NOW; returns this
    period's part."""
    this_period = 0.0
    for back in range(days + 1):
        when = (NOW - timedelta(days=back)).replace(hour=9, minute=0)
        if when >= NOW:
            continue
        credits = 4.0 if when.weekday() >= 5 else 40.0
        spend(openmeter, subject, credits, when)
        this_period += credits if when >= PERIOD_START else 0.0
    return this_period


async def test_runway_is_a_range_before_the_reset_from_the_entitlements_own_pace(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    used = steady_usage(openmeter)
    plan = used + 200  # about five weekdays left, twelve days before the reset
    openmeter.entitlements.add_grant(
        "acme",
        "ai_credits",
        amount=plan,
        effective_at=datetime(2025, 10, 1, tzinfo=UTC),
        recurrence=("MONTH", PERIOD_START),
    )
    spend(openmeter, "someone-else", 5000, NOW - timedelta(days=2))  # tenant acme in the meter, not the entitlement
    result = await call_tool(balance_server(), TOOL)
    text = text_of(result)
    (line,) = [line for line in text.splitlines() if line.startswith("Runway:")]
    assert "before the period resets on 2026-02-01" in line and "(80% range 2026-01-2" in line
    runway = result.structured_content["runway"] if result.structured_content else None
    assert runway is not None and runway["before_reset"] is True
    earliest, latest = (datetime.fromisoformat(runway[key]).date() for key in ("earliest", "latest"))
    assert NOW.date() < earliest < latest < date(2026, 2, 1)
    assert latest - earliest <= timedelta(days=6)  # the 5,000 of the unmapped subject did not set the pace


async def test_a_comfortable_balance_has_no_runway_and_says_it_lasts(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    steady_usage(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=100_000, effective_at=PERIOD_START)
    result = await call_tool(balance_server(), TOOL)
    assert "Runway: at the recent pace the balance lasts until the period resets on 2026-02-01." in text_of(result)
    assert result.structured_content is not None and result.structured_content["runway"] is None


async def test_the_forecast_says_when_a_configured_balance_runs_out(
    start_server: ServerStarter, balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    used = steady_usage(openmeter)
    openmeter.entitlements.add_grant(
        "acme", "ai_credits", amount=used + 200, effective_at=datetime(2025, 10, 1, tzinfo=UTC),
        recurrence=("MONTH", PERIOD_START),
    )  # fmt: skip
    result = await call_tool(balance_server(), "get_credit_forecast")
    (line,) = [line for line in text_of(result).splitlines() if line.startswith("Balance:")]
    assert line.startswith("Balance: 200.00 credits left; at the allowance's own pace it runs out around 2026-01-2")
    assert line.endswith("before the allowance resets on 2026-02-01.")
    data = result.structured_content
    assert data is not None and data["balance"] == pytest.approx(200)
    crossing = data["balance_runs_out"]
    assert crossing["earliest"] <= crossing["likely"] <= crossing["latest"] < "2026-02-01"
    plain = await call_tool(start_server(), "get_credit_forecast")  # no balance configured: no such line
    assert "Balance:" not in text_of(plain)
    assert plain.structured_content is not None and plain.structured_content["balance"] is None


async def test_at_most_50_grants_in_the_text_and_all_in_the_workbook(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    for n in range(55):
        openmeter.entitlements.add_grant(
            "acme", "ai_credits", amount=1, effective_at=PERIOD_START + timedelta(minutes=n), name=f"g{n:02d}"
        )
    url = balance_server()
    result = await call_tool(url, TOOL)
    text = text_of(result)
    assert len([line for line in text.splitlines() if re.match(r"\| g\d\d \|", line)]) == 50
    assert "Showing 50 of 55 grants; the Excel file has all of them." in text
    data = result.structured_content
    assert data is not None and len(data["grants"]) == 50 and data["grants_total"] == 55
    workbook = load_workbook(io.BytesIO(download_bytes(url, text)))
    assert workbook["Grants"].max_row == 56


async def test_no_credits_left_without_a_soft_limit_says_access_is_denied(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=50, effective_at=PERIOD_START)
    spend(openmeter, "acme", 50, datetime(2026, 1, 2, tzinfo=UTC))
    result = await call_tool(balance_server(), TOOL)
    text = text_of(result)
    assert "No credits are left: OpenMeter denies access until the period resets or a new grant starts." in text
    assert "Runway: nothing is left to run down." in text
    assert result.structured_content is not None and result.structured_content["has_access"] is False


@on_both_apis
async def test_a_customer_key_with_a_space_goes_as_one_escaped_segment(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter, "Initech Ltd")
    openmeter.entitlements.add_grant("Initech Ltd", "ai_credits", amount=10, effective_at=PERIOD_START)
    headers = {"X-Tenant-Name": "Initech Ltd", "X-User-UserRole": "admin"}
    result = await call_tool(balance_server(), TOOL, headers=headers)
    assert "**10.00 credits left**" in text_of(result)


@on_both_apis
async def test_openmeter_trouble_is_one_sentence_and_an_error(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter)
    customers = "/api/v3/openmeter/customers" if openmeter.api == "v3" else "/api/v2/customers"
    openmeter.fail(status=500, times=100, path_prefix=customers)
    result = await call_tool(balance_server(), TOOL)
    assert result.is_error
    assert text_of(result) == "OpenMeter had an internal error (HTTP 500); try again in a few minutes."


async def test_a_mid_day_measure_start_makes_no_false_disagreement(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    allowance(openmeter, measure_usage_from=datetime(2026, 1, 5, 10, tzinfo=UTC))
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=100, effective_at=PERIOD_START)
    spend(openmeter, "acme", 7, datetime(2026, 1, 5, 12, tzinfo=UTC))  # counted, on a day history leaves out
    spend(openmeter, "acme", 3, datetime(2026, 1, 8, 12, tzinfo=UTC))
    text = text_of(await call_tool(balance_server(), TOOL))
    assert "**90.00 credits left**" in text
    assert "Note:" not in text


async def test_the_api_key_never_shows_and_odd_replies_are_one_sentence(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    allowance(openmeter)
    openmeter.entitlements.add_grant("acme", "ai_credits", amount=10, effective_at=PERIOD_START)
    url = balance_server()
    result = await call_tool(url, TOOL)
    with zipfile.ZipFile(io.BytesIO(download_bytes(url, text_of(result)))) as archive:
        for name in archive.namelist():
            assert API_KEY not in archive.read(name).decode("utf-8", "replace")
    hostile = 'acme"},"$or":[{"$ne":"x"}],"x":{"$eq":"'
    odd = await call_tool(url, TOOL, headers={"X-Tenant-Name": hostile, "X-User-UserRole": "admin"})
    assert text_of(odd).startswith('No credit allowance is set up for tenant acme"}')  # exact key: nothing found
    grants = "/api/v2/customers/acme/entitlements/ai_credits/grants"
    openmeter.fail(status=200, body=b'{"unexpected": true}', content_type="application/json", path_prefix=grants)
    broken = await call_tool(url, TOOL)
    assert broken.is_error and "could not be read" in text_of(broken)
    assert API_KEY not in text_of(result) + text_of(broken) + caplog.text
