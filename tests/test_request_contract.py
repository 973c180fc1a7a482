"""The contract check itself: the vendored specs (tests/openmeter_spec/) and the small validator that every server
test runs over the requests its server sent (conftest's `start_server`). These pin that it refuses what each spec
refuses, so the check cannot quietly pass everything."""

from __future__ import annotations

import json

import pytest

from ai_credit_usage.openmeter.standin import RecordedRequest
from tests.request_contract import load, problems, sent_problems

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
