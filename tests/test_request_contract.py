"""The contract check itself: the vendored specs (tests/openmeter_spec/) and the small validator that every server
test runs over the requests its server sent (conftest's `start_server`). These pin that it refuses what each spec
refuses, so the check cannot quietly pass everything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, RecordedRequest, make_event
from tests.request_contract import SPECS_OF_API, load, problems, response_problems, sent_problems
from tests.servers import serve_in_thread

EVENTS = "/api/v3/openmeter/events"
ULID = "01J9ZKQX8M0000000000000000"


def get(path: str, *query: tuple[str, str]) -> RecordedRequest:
    return RecordedRequest("GET", path, list(query), {})


TIME_PAIR = (("filter[time][gte]", "2026-01-01T00:00:00Z"), ("filter[time][lt]", "2026-01-02T00:00:00Z"))


def test_two_time_operators_pass_upstream_and_fail_konnect() -> None:
    """The shape the server sent before issue 22: upstream's anyOf takes it, Konnect's oneOf of single-operator
    objects does not."""
    request = get(EVENTS, ("filter[type][eq]", "ai_credits"), *TIME_PAIR, ("page[size]", "100"))
    assert problems(load("v3-upstream"), request, "/api/v3") == []
    (refused,) = problems(load("v3-konnect"), request, "/api/v3")
    assert "filter: time" in refused and "not valid under any of the given schemas" in refused
    assert len(sent_problems("v3", [request])) == 1


def test_one_time_operator_passes_both() -> None:
    request = get(
        EVENTS, ("filter[time][lt]", "2026-01-02T00:00:00Z"), ("filter[subject][oeq]", "a,b"), ("page[after]", "x")
    )
    assert sent_problems("v3", [request]) == []


@pytest.mark.parametrize(
    ("api", "request_"),
    [
        pytest.param("v3", get(EVENTS, ("filter[subject][in]", "a,b")), id="v3-no-in-operator"),
        pytest.param("v3", get(EVENTS, ("filter[tenant]", "acme")), id="v3-no-data-filter"),
        pytest.param("v3", get(EVENTS, ("page[size]", "lots")), id="v3-page-size-not-an-integer"),
        pytest.param("v3", get(EVENTS, ("limit", "100")), id="v3-undeclared-parameter"),
        pytest.param("v3", get("/api/v3/openmeter/meters/ai_credits"), id="v3-meter-key-in-the-path"),
        pytest.param(
            "v3", get(f"/api/v3/openmeter/customers/{ULID}/credits/grants", ("page[size]", "x")), id="v3-grants-page"
        ),
        pytest.param("v3", get("/api/v3/openmeter/customers/acme/credits/balance"), id="v3-customer-key-in-the-path"),
        pytest.param(
            "v3",
            RecordedRequest(
                "POST", f"/api/v3/openmeter/meters/{ULID}/query", [], {}, json.dumps({"windowSize": "DAY"}).encode()
            ),
            id="v3-unknown-body-field",
        ),
        pytest.param("v3", get("/api/v1/meters/ai_credits"), id="v3-a-v1-path"),
        pytest.param("v1", get("/api/v1/meters/ai_credits/query", ("windowSize", "WEEKLY")), id="v1-window-size-enum"),
        pytest.param("v1", get("/api/v1/meters/ai_credits/query", ("from", "2026-01-01")), id="v1-date-only"),
        pytest.param("v1", get("/api/v2/events", ("filter", "{not json")), id="v1-filter-not-json"),
        pytest.param("v1", get("/api/v2/events", ("limit", "100"), ("limit", "50")), id="v1-repeated-scalar"),
        pytest.param("v1", get("/api/v2/events", ("limit", "101")), id="v1-limit-over-100"),
    ],
)
def test_shapes_a_spec_refuses_are_reported(api: str, request_: RecordedRequest) -> None:
    assert sent_problems(api, [request_])


def test_the_entitlement_value_endpoint_is_checked_against_upstream_only() -> None:
    """Konnect's published spec does not have it yet (the server falls back to the ledger when it answers 404);
    upstream's handler does, and its parameters are still checked."""
    path = f"/api/v3/openmeter/customers/{ULID}/entitlement-access/features/ai_credits"
    assert sent_problems("v3", [get(path, ("expand", "value"))]) == []
    assert sent_problems("v3", [get(path, ("expand", "balance"))])
    assert sent_problems("v3", [get(path.replace("ai_credits", "AI-Credits"), ("expand", "value"))])


WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-10T00:00:00Z"}
# (method, path under the API's base, query, body) of the usage reads; the credits reads are test_balance_v3's
USAGE_READS: dict[str, list[tuple[str, str, dict[str, str] | None, Any]]] = {
    "v1": [
        ("GET", "/api/v1/meters/ai_credits", None, None),
        ("GET", "/api/v1/meters/ai_credits/query", {**WINDOW, "windowSize": "DAY", "groupBy": "tenant"}, None),
        ("GET", "/api/v2/events", {"time": json.dumps({"$gte": WINDOW["from"], "$lt": WINDOW["to"]})}, None),
    ],
    "v3": [
        ("GET", "/openmeter/meters", None, None),
        ("GET", f"/openmeter/meters/{ULID}", None, None),
        ("POST", f"/openmeter/meters/{ULID}/query", None, {**WINDOW, "granularity": "P1D", "group_by_dimensions":
            ["tenant"], "filters": {"dimensions": {"tenant": {"eq": "acme"}}}}),
        ("POST", f"/openmeter/meters/{ULID}/query", None, WINDOW),
        ("GET", "/openmeter/events", {"filter[time][lt]": WINDOW["to"]}, None),
    ],
}  # fmt: skip


@pytest.mark.parametrize("api", ["v1", "v3"])
def test_the_standins_usage_answers_conform_to_every_spec_of_their_api(api: str) -> None:
    """The stand-in's meter, query and events answers under the 200 schemas of upstream's spec (and Konnect's, on
    v3), as test_balance_v3 checks its credits answers: the client is tested against answers the real server could
    give."""
    fake = OpenMeterStandIn(api_key=None, api=api)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    fake.ingest(
        *[make_event(tenant="acme", credits=1.5, time=start + timedelta(hours=h), user="anna") for h in range(5)]
    )
    base = "/api/v3" if api == "v3" else ""
    with serve_in_thread(fake.app) as url, httpx2.Client(base_url=url + base, timeout=5) as client:
        for method, path, query, body in USAGE_READS[api]:
            response = client.request(method, path, params=query, json=body)
            assert response.status_code == 200, (path, response.text)
            if "query" in path or "events" in path:  # not vacuous: the events are in the answer
                assert response.json().get("data") or response.json().get("items"), path
            for name in SPECS_OF_API[api]:
                assert response_problems(load(name), method, path, response.json()) == [], (name, path)
