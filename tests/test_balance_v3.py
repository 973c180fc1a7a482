"""get_credit_balance on the v3 API (Kong Konnect), end to end: SDK client over HTTP -> server -> the v3 stand-in,
whose customers, credits ledger and entitlement value follow Konnect's published spec and the Go handlers. Every
request the server sends here is also checked against upstream's and Konnect's specs (conftest's start_server),
and every answer of the stand-in against the specs' 200 schemas (below)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from openpyxl import load_workbook

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import NOW, FakeClock, ServerStarter, call_tool, download_bytes, standin_client, text_of
from tests.request_contract import load, response_problems

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("api", ["v3"], indirect=True)]
TOOL = "get_credit_balance"
MONTH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def balance_server(start_server: ServerStarter, openmeter: OpenMeterStandIn, clock: FakeClock) -> Callable[..., str]:
    openmeter.entitlements.clock = clock

    def start(**overrides: Any) -> str:
        return start_server(openmeter_credits_feature="ai_credits", **overrides)

    return start


def spend(
    openmeter: OpenMeterStandIn, credits: float, when: datetime, subject: str = "acme", tenant: str = "acme"
) -> None:
    openmeter.ingest(make_event(tenant=tenant, credits=credits, time=when, subject=subject, user=subject))


def ledger(openmeter: OpenMeterStandIn, customer: str = "acme", **grant: Any) -> str:
    if not any(c.key == customer for c in openmeter.entitlements.customers):
        openmeter.entitlements.add_customer(customer)
    return openmeter.credits.add_credit_grant(customer, **{"amount": 1000, "effective_at": MONTH, **grant})


async def test_the_ledger_answers_with_live_balance_grants_and_no_made_up_left(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    ledger(openmeter, amount=1000, name="Plan", priority=5, expires_at=datetime(2026, 2, 1, tzinfo=UTC))
    ledger(openmeter, amount=200, name="Top-up | =cmd", priority=1, effective_at=datetime(2026, 1, 10, tzinfo=UTC))
    ledger(openmeter, amount=50, name="Next month", effective_at=datetime(2026, 2, 1, tzinfo=UTC))
    ledger(openmeter, amount=70, name="Old", effective_at=datetime(2025, 12, 1, tzinfo=UTC),
           expires_at=datetime(2025, 12, 31, tzinfo=UTC))  # fmt: skip
    for day in range(2, 20):
        spend(openmeter, 10, MONTH + timedelta(days=day, hours=9))
    url = balance_server()
    result = await call_tool(url, TOOL)
    text = text_of(result)
    assert not result.is_error, text
    # 1,200 granted in effect, 180 used (the 70 expired before any usage): 1,020 live; 50 pending
    assert text.startswith("Tenant acme: **1,020.00 credits left** (USD ledger, live) as of 2026-01-20 12:00 UTC")
    assert "180.00 used since 2026-01-01, when its active grants took effect; 50.00 more granted but not booked" in text
    assert "| grant | amount | status | priority | effective | expires |" in text
    assert "| Top-up \\| =cmd | 200.00 | active | 1 | 2026-01-10 00:00 UTC | never |" in text
    assert "| Plan | 1,000.00 | active | 5 | 2026-01-01 00:00 UTC | 2026-02-01 00:00 UTC |" in text
    assert "| Next month | 50.00 | pending | 10 |" in text and "| Old | 70.00 | expired |" in text
    assert "left" not in text.split("| grant |")[1].split("\n")[0]  # no 'left' column
    assert "The ledger keeps no remaining amount per grant" in text
    assert "Runway: at the recent pace the balance" in text and "tenant's own daily usage" in text
    data = result.structured_content
    assert data is not None
    assert (data["status"], data["source"], data["currency"], data["balance"]) == ("metered", "ledger", "USD", 1020)
    assert data["period"] is None and data["usage_since"] == "2026-01-01T00:00:00Z"
    assert [g["remaining"] for g in data["grants"]] == [None, None, None, None]
    book = load_workbook(io.BytesIO(download_bytes(url, text)), read_only=True)
    facts = {row[0]: row[1] for row in book["Summary"].iter_rows(values_only=True) if len(row) > 1 and row[0]}
    assert (facts["Currency"], facts["Settled (booked)"], facts["Pending (granted, not booked)"]) == ("USD", 1020, 50)
    grants = list(book["Grants"].iter_rows(values_only=True))
    assert all(row[2] is None for row in grants[1:])  # 'left' stays blank: the ledger keeps none


async def test_the_runway_burns_the_live_balance_at_the_tenants_pace(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    ledger(openmeter, amount=3000, effective_at=datetime(2025, 11, 1, tzinfo=UTC))
    for day in range(80):  # 25 a day for 80 days: 2,000 used, 1,000 left, 40 days at this pace
        spend(openmeter, 25, NOW - timedelta(days=day + 1, hours=-1))
    text = text_of(await call_tool(balance_server(), TOOL))
    assert "**1,000.00 credits left**" in text
    assert "runs out around 2026-02-2" in text or "runs out around 2026-03-0" in text, text
    forecast = text_of(await call_tool(balance_server(), "get_credit_forecast"))
    (line,) = [line for line in forecast.splitlines() if line.startswith("Balance:")]
    assert "at the tenant's recent pace it runs out around" in line and "resets" not in line


async def test_negative_live_balance_is_said(balance_server: Callable[..., str], openmeter: OpenMeterStandIn) -> None:
    ledger(openmeter, amount=100)
    spend(openmeter, 130, MONTH + timedelta(days=3))
    result = await call_tool(balance_server(), TOOL)
    text = text_of(result)
    assert "**-30.00 credits left**" in text
    assert "The USD ledger is 30.00 below zero: usage beyond what the grants cover." in text
    assert "Runway: nothing is left to run down." in text
    assert result.structured_content is not None and result.structured_content["overage"] == 30


async def test_one_currency_never_a_sum(balance_server: Callable[..., str], openmeter: OpenMeterStandIn) -> None:
    ledger(openmeter, amount=1000, currency="USD")
    ledger(openmeter, amount=900, currency="EUR")
    several = await call_tool(balance_server(), TOOL)
    assert several.is_error
    assert text_of(several) == (
        "Tenant acme holds credits in several currencies (EUR, USD), which cannot be added up; ask the operator to "
        "set OPENMETER_CREDITS_CURRENCY to the one that holds the AI credits."
    )
    eur = text_of(await call_tool(balance_server(openmeter_credits_currency="EUR"), TOOL))
    assert "**900.00 credits left** (EUR ledger, live)" in eur and "1,900" not in eur and "USD" not in eur
    gbp = await call_tool(balance_server(openmeter_credits_currency="GBP"), TOOL)
    assert not gbp.is_error
    assert text_of(gbp) == "Tenant acme holds no credits in GBP (OPENMETER_CREDITS_CURRENCY); it holds EUR, USD."


async def test_no_customer_no_credits_and_credits_not_enabled_are_one_sentence_each(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    url = balance_server()
    nobody = await call_tool(url, TOOL)
    assert not nobody.is_error
    assert text_of(nobody) == "Tenant acme has no customer in OpenMeter (customer key acme), so it has no credits."
    assert nobody.structured_content is not None and nobody.structured_content["status"] == "none"
    openmeter.entitlements.add_customer("acme")
    empty = await call_tool(url, TOOL)
    assert text_of(empty) == "Tenant acme has no prepaid credits in OpenMeter: no balance and no grants."
    openmeter.credits.credits_enabled = False  # Konnect: 501 with an empty body
    disabled = await call_tool(url, TOOL)
    assert disabled.is_error
    assert text_of(disabled).startswith("Prepaid credits are not enabled for this OpenMeter organization (it answered")
    assert text_of(disabled).count(".") == 1


async def test_credits_not_enabled_is_the_same_sentence_whichever_ledger_request_answers_first(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    """The balance and the grants are asked together, and the first failure ends both: a 501 on the grants used to
    come back as OpenMeter's bare status sentence when it beat the balance's."""
    openmeter.entitlements.add_customer("acme")
    openmeter.credits.credits_enabled = False
    customer = openmeter.entitlements.customers[0].id
    openmeter.fail(status=200, delay=0.5, path_prefix=f"/api/v3/openmeter/customers/{customer}/credits/balance")
    url = balance_server()
    disabled = await call_tool(url, TOOL)
    assert disabled.is_error
    assert text_of(disabled).startswith("Prepaid credits are not enabled for this OpenMeter organization (it answered")


async def test_the_customer_is_found_by_its_exact_key_and_checked(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    ledger(openmeter, "acme-eu", amount=500)
    ledger(openmeter, "ACME", amount=700)
    url = balance_server()
    assert text_of(await call_tool(url, TOOL)).startswith("Tenant acme has no customer in OpenMeter")
    (listed,) = [r for r in openmeter.requests if r.path == "/api/v3/openmeter/customers"]
    assert listed.query == [("filter[key][eq]", "acme"), ("page[size]", "10")]
    # A server that matched loosely (as a `contains` filter would) hands back another tenant: refused.
    loose = {"data": [{"id": "01K00000000000000000000001", "key": "acme-eu", "name": "acme-eu",
                       "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}],
             "meta": {"page": {"size": 10, "number": 1, "total": 1}}}  # fmt: skip
    openmeter.fail(status=200, body=json.dumps(loose).encode(), content_type="application/json",
                   path_prefix="/api/v3/openmeter/customers")  # fmt: skip
    assert text_of(await call_tool(url, TOOL)).startswith("Tenant acme has no customer in OpenMeter")
    assert not [r for r in openmeter.requests if "/credits/" in r.path]


async def test_the_entitlement_value_comes_first_where_served(
    balance_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    """Upstream's newer endpoint (not in Konnect's published spec yet): where it answers, its figures are the
    answer; where it is not served (404), the ledger is."""
    openmeter.entitlements.add_customer("acme")
    openmeter.entitlements.add_entitlement(
        "acme", "ai_credits", anchor=MONTH, created_at=datetime(2025, 10, 1, tzinfo=UTC)
    )
    grant = openmeter.entitlements.add_grant("acme", "ai_credits", amount=300, effective_at=MONTH)
    openmeter.credits.add_credit_grant("acme", amount=5000, effective_at=MONTH)
    spend(openmeter, 40, MONTH + timedelta(days=4))
    url = balance_server()
    ledger_text = text_of(await call_tool(url, TOOL))
    assert "**4,960.00 credits left** (USD ledger, live)" in ledger_text
    openmeter.credits.serves_entitlement_value = True
    asked = len(openmeter.requests)
    result = await call_tool(url, TOOL)
    text = text_of(result)
    assert text.startswith("Tenant acme: **260.00 credits left** as of 2026-01-20 12:00 UTC; 40.00 used this period.")
    assert f"| grant {grant[-6:]} | - | 260.00 | never | no |" in text
    assert result.structured_content is not None and result.structured_content["source"] == "entitlement"
    assert not [r for r in openmeter.requests[asked:] if "/credits/" in r.path]


# ---- the stand-in's answers against the specs' 200 schemas ---------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> OpenMeterStandIn:
    standin = OpenMeterStandIn(api_key=None, api="v3")
    standin.entitlements.clock = lambda: NOW
    standin.entitlements.add_customer("acme", subject_keys=["anna"])
    standin.entitlements.add_entitlement("acme", "ai_credits", anchor=MONTH, created_at=MONTH)
    standin.entitlements.add_grant("acme", "ai_credits", amount=300, effective_at=MONTH)
    standin.credits.add_credit_grant("acme", amount=100, effective_at=MONTH, key="plan", expires_at=NOW)
    standin.credits.add_credit_grant("acme", amount=50, effective_at=MONTH, voided_at=MONTH + timedelta(days=1))
    standin.credits.serves_entitlement_value = True
    return standin


@pytest.mark.parametrize("spec", ["v3-upstream", "v3-konnect"])
def test_the_standins_answers_conform(fake: OpenMeterStandIn, standin_url: str, spec: str, api: str) -> None:
    customer = fake.entitlements.customers[0].id
    paths = [
        ("/openmeter/customers", {"filter[key][eq]": "acme"}),
        (f"/openmeter/customers/{customer}/credits/balance", {}),
        (f"/openmeter/customers/{customer}/credits/balance", {"timestamp": "2026-01-10T00:00:00Z"}),
        (f"/openmeter/customers/{customer}/credits/grants", {"page[size]": "1", "page[number]": "2"}),
        (f"/openmeter/customers/{customer}/credits/grants", {"filter[status]": "active"}),
    ]
    if spec == "v3-upstream":  # not in Konnect's published spec yet
        paths.append((f"/openmeter/customers/{customer}/entitlement-access/features/ai_credits", {"expand": "value"}))
        paths.append((f"/openmeter/customers/{customer}/entitlement-access/features/other", {}))
    with standin_client(fake, standin_url) as client:
        fake.ingest(make_event(tenant="acme", credits=3, time=MONTH + timedelta(days=2), subject="anna"))
        for path, params in paths:
            response = client.get("/api/v3" + path, params=params)
            assert response.status_code == 200, response.text
            assert response_problems(load(spec), "GET", path, response.json()) == [], path
        balance = client.get(f"/api/v3/openmeter/customers/{customer}/credits/balance").json()
        assert balance["balances"] == [{"currency": "USD", "live": "0", "settled": "0", "pending": "0"}]
        grants = client.get(f"/api/v3/openmeter/customers/{customer}/credits/grants").json()["data"]
        assert [g["status"] for g in grants] == ["expired", "voided"]
        value = client.get(
            f"/api/v3/openmeter/customers/{customer}/entitlement-access/features/ai_credits", params={"expand": "value"}
        ).json()
        assert value["value"]["balance"] == "297" and value["value"]["usage"] == "3"
        nothing = client.get(f"/api/v3/openmeter/customers/{customer}/entitlement-access/features/other").json()
        assert nothing == {"type": "static", "feature_key": "other", "has_access": False}
        assert client.get("/api/v3/openmeter/customers/acme/credits/balance").status_code == 404  # not a ULID
        fake.credits.credits_enabled = False
        try:
            disabled = client.get(f"/api/v3/openmeter/customers/{customer}/credits/balance")
            assert (disabled.status_code, disabled.content) == (501, b"")
        finally:
            fake.credits.credits_enabled = True


async def test_a_tenant_named_like_markup_stays_text_in_the_no_credits_sentence(
    balance_server: Callable[..., str],
) -> None:
    """v1 escapes the tenant in its no-allowance sentence ("No credit allowance is set up for tenant \\[acme\\]...");
    v3's sentences named it raw, so a tenant called like a link or an image became one in a chat that renders the
    answer's markdown."""
    tenant = "[acme](javascript:alert(1)) <img src=x onerror=alert(1)>"
    escaped = r"\[acme\](javascript:alert(1)) \<img src=x onerror=alert(1)\>"
    headers = httpx2.Headers({"X-Tenant-Name": tenant, "X-User-UserRole": "admin"})
    answer = text_of(await call_tool(balance_server(), TOOL, headers=headers))
    assert answer == f"Tenant {escaped} has no customer in OpenMeter (customer key {escaped}), so it has no credits."
