"""The stand-in's v3 API behaves like the real one (openmeter-v3.md: api/v3/openapi.yaml and the Go handlers),
checked over real HTTP.

The v3 client's tests and the tool tests on v3 trust this stand-in, so these pin what a v3 client can get wrong:
ULID-only meter paths (a key is a 404), a query body without unknown fields, decimal-string values, one operator a
filter, 20 events a page by default and a cursor only on full pages, `oeq` and its 50 values, no repeated keys, and
both error shapes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.standin.v3 import numeric
from tests.conftest import standin_client

KEY = "fake-key-123"
METER_ID = AI_CREDITS_METER["id"]
QUERY = f"/api/v3/openmeter/meters/{METER_ID}/query"
EVENTS = "/api/v3/openmeter/events"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
JANUARY = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


@pytest.fixture(scope="module")
def fake() -> OpenMeterStandIn:
    return OpenMeterStandIn(api_key=KEY, api="v3")


@pytest.fixture
def om(fake: OpenMeterStandIn, standin_url: str) -> Iterator[httpx2.Client]:
    with standin_client(fake, standin_url) as client:
        yield client


def api_error(response: httpx2.Response, status: int) -> dict[str, Any]:
    """v3's BaseAPIError: request validation, binding, unknown routes."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].startswith("https://kongapi.info/konnect/")
    assert (body["status"], bool(body["title"]), bool(body["instance"])) == (status, True, True)
    return body


def domain_problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    """The v1 problem shape the v3 handlers use for their domain errors."""
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["type"], body["status"]) == ("about:blank", status)
    return body


def test_the_gateway_wants_the_bearer_token_and_v1_paths_are_unknown(om: httpx2.Client, standin_url: str) -> None:
    api_error(httpx2.get(standin_url + "/v3/openmeter/meters"), 401)
    assert om.get("/v3/openmeter/meters").status_code == 200  # Konnect's base
    assert om.get("/api/v3/openmeter/meters").status_code == 200  # self-hosted OpenMeter's
    assert api_error(om.get("/api/v1/meters/ai_credits"), 404)["detail"] == "The requested route was not found"
    api_error(om.get("/api/v2/events"), 404)
    api_error(om.get("/api/v3/openmeter/nothing"), 404)
    api_error(om.get(QUERY), 405)  # the query is POST only


def test_meters_are_listed_by_key_and_addressed_by_ulid_only(om: httpx2.Client) -> None:
    listed = om.get("/api/v3/openmeter/meters", params={"filter[key]": "ai_credits"}).json()
    (meter,) = listed["data"]
    assert listed["meta"]["page"] == {"size": 20, "number": 1, "total": 1}
    assert (meter["key"], meter["id"], meter["aggregation"], meter["event_type"]) == (
        "ai_credits", METER_ID, "sum", "ai_credits",
    )  # fmt: skip
    assert (meter["value_property"], meter["dimensions"]) == ("$.credits", AI_CREDITS_METER["groupBy"])
    assert om.get("/api/v3/openmeter/meters", params={"filter[key][eq]": "other"}).json()["data"] == []
    assert om.get(f"/api/v3/openmeter/meters/{METER_ID}").json() == meter
    # A key, or a lower-case ULID, fails path validation: 404, not 400. An unknown ULID is the handler's 404.
    assert api_error(om.get("/api/v3/openmeter/meters/ai_credits"), 404)["detail"] == (
        "The requested entity was not found"
    )
    api_error(om.get(f"/api/v3/openmeter/meters/{METER_ID.lower()}"), 404)
    api_error(om.post("/api/v3/openmeter/meters/ai_credits/query", json=JANUARY), 404)
    unknown = domain_problem(om.get("/api/v3/openmeter/meters/01JAAAAAAAAAAAAAAAAAAAAAAA"), 404)
    assert unknown["detail"] == "meter not found: 01JAAAAAAAAAAAAAAAAAAAAAAA"


def test_the_query_sums_per_group_in_decimal_strings_with_exclusive_to(
    om: httpx2.Client, fake: OpenMeterStandIn
) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=10.25, time=T0),
        make_event(tenant="acme", credits="4.5", time=at(days=3)),
        make_event(tenant="acme", credits="n/a", time=at(days=3)),
        make_event(tenant="acme", credits=2, time=at(days=4), user="u2", module=None),
        make_event(tenant="acme", credits=1000, time=at(days=31)),  # exactly `to`
        make_event(tenant="globex", credits=77, time=at(days=5)),
        make_event(tenant="acme", credits=500, time=at(days=5), type="other"),
    )
    body = {**JANUARY, "group_by_dimensions": ["user", "module", "user"]}
    body["filters"] = {"dimensions": {"tenant": {"eq": "acme"}}}
    result = om.post(QUERY, json=body).raise_for_status().json()
    assert (result["from"], result["to"]) == (JANUARY["from"], JANUARY["to"])
    assert sorted(result["data"], key=lambda row: row["dimensions"]["user"]) == [
        {"value": "14.75", **JANUARY, "dimensions": {"user": "u1", "module": "chat"}},
        {"value": "2", **JANUARY, "dimensions": {"user": "u2", "module": ""}},  # missing: "", not absent
    ]
    by_subject = om.post(QUERY, json={**JANUARY, "filters": {"dimensions": {"subject": {"in": ["user-u2"]}}}}).json()
    assert by_subject["data"] == [{"value": "2", **JANUARY, "dimensions": {"subject": "user-u2"}}]


def test_calendar_windows_are_in_the_time_zone_ordered_by_start(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=1, time=at(hours=22, minutes=30)),  # 23:30 in Paris: Jan 1
        make_event(tenant="acme", credits=2, time=at(hours=23, minutes=30)),  # 00:30 in Paris: Jan 2
    )
    body = {**JANUARY, "granularity": "P1D", "time_zone": "Europe/Paris"}
    rows = om.post(QUERY, json=body).json()["data"]
    assert [(row["from"], row["to"], row["value"]) for row in rows] == [
        ("2026-01-01T00:00:00+01:00", "2026-01-02T00:00:00+01:00", "1"),
        ("2026-01-02T00:00:00+01:00", "2026-01-03T00:00:00+01:00", "2"),
    ]
    utc_rows = om.post(QUERY, json={**JANUARY, "granularity": "P1M"}).json()["data"]
    assert [(row["from"], row["value"]) for row in utc_rows] == [("2026-01-01T00:00:00Z", "3")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**JANUARY, "windowSize": "DAY"}, "windowSize", id="v1-field-is-unknown"),
        pytest.param({**JANUARY, "granularity": "P1W"}, "granularity", id="no-week"),
        pytest.param({"from": "2026-01-01", "to": JANUARY["to"]}, "from", id="date-only"),
        pytest.param({"from": "2026-01-01T00:00:00", "to": JANUARY["to"]}, "from", id="no-offset"),
        pytest.param({**JANUARY, "filters": {"tenant": {"eq": "acme"}}}, "filters.tenant", id="filter-not-nested"),
        pytest.param(
            {**JANUARY, "filters": {"dimensions": {"tenant": {"$eq": "acme"}}}},
            "filters.dimensions.tenant.$eq",
            id="v1-operator",
        ),
    ],
)
def test_the_body_schema_is_strict(om: httpx2.Client, body: dict[str, Any], field: str) -> None:
    error = api_error(om.post(QUERY, json=body), 400)
    assert field in [parameter["field"] for parameter in error["invalid_parameters"]]
    assert all(parameter["source"] == "body" for parameter in error["invalid_parameters"])


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param({"group_by_dimensions": ["team"]}, "invalid group by dimension: team", id="group-by"),
        pytest.param({"time_zone": "Mars/Olympus"}, "invalid time zone", id="time-zone"),
        pytest.param({"filters": {"dimensions": {"team": {"eq": "a"}}}}, "invalid dimension filter", id="filter-key"),
        pytest.param(
            {"filters": {"dimensions": {"tenant": {"eq": "a", "neq": "b"}}}},
            'dimension filter "tenant": filter is invalid: multiple operators are set',
            id="two-operators",
        ),
        pytest.param({"filters": {"dimensions": {"tenant": {"eq": ""}}}}, "format mismatch", id="empty-string"),
        pytest.param({"from": JANUARY["from"], "to": JANUARY["from"]}, "from and to cannot be equal", id="equal"),
    ],
)
def test_the_handler_refuses_in_the_v1_problem_shape(om: httpx2.Client, body: dict[str, Any], detail: str) -> None:
    assert detail in domain_problem(om.post(QUERY, json=body), 400)["detail"]


def test_numeric_is_the_shortest_decimal_never_an_exponent() -> None:
    assert [numeric(v) for v in (2.0, 14.75, 0.1 + 0.2, 1e-7, 1e20, -0.0)] == [
        "2", "14.75", "0.30000000000000004", "0.0000001", "100000000000000000000", "0",
    ]  # fmt: skip


def cursor_walk(om: httpx2.Client, params: dict[str, str]) -> list[dict[str, Any]]:
    pages = []
    while True:
        page = om.get(EVENTS, params=params).raise_for_status().json()
        pages.append(page)
        if page["meta"]["page"]["next"] is None:
            return pages
        params = {**params, "page[after]": page["meta"]["page"]["next"]}


def test_events_come_20_a_page_newest_first_with_a_cursor_only_on_full_pages(
    om: httpx2.Client, fake: OpenMeterStandIn
) -> None:
    fake.ingest(*[make_event(tenant="acme", credits=1, time=at(minutes=i), id=f"e{i:02d}") for i in range(40)])
    pages = cursor_walk(om, {})
    assert [len(page["data"]) for page in pages] == [20, 20, 0]  # a last full page is followed by an empty one
    ids = [item["event"]["id"] for page in pages for item in page["data"]]
    assert ids == [f"e{i:02d}" for i in reversed(range(40))]
    first = pages[0]["data"][0]
    assert set(first) == {"event", "ingested_at", "stored_at"}
    assert (first["event"]["specversion"], first["event"]["datacontenttype"]) == ("1.0", "application/json")
    assert pages[0]["meta"]["page"]["previous"] is None
    assert base64.b64decode(pages[0]["meta"]["page"]["next"]).decode().startswith("2026-01-01T00:20:00Z,")
    hundred = om.get(EVENTS, params={"page[size]": "100"}).json()
    assert (len(hundred["data"]), hundred["meta"]["page"]["next"]) == (40, None)


def test_events_filter_on_time_type_and_subject_lists(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=1, time=at(hours=1), subject="a", id="1"),
        make_event(tenant="acme", credits=1, time=at(hours=2), subject="b,c", id="2"),
        make_event(tenant="acme", credits=1, time=at(hours=3), subject="c", id="3"),
        make_event(tenant="acme", credits=1, time=at(hours=4), subject="a", id="4", type="other"),
        make_event(tenant="acme", credits=1, time=at(hours=5), subject="a", id="5"),
    )
    window = {"filter[time][lt]": "2026-01-01T05:00:00Z"}  # one operator: Konnect's schema is a oneOf

    def ids(**params: str) -> list[str]:
        data = om.get(EVENTS, params={**window, **params}).raise_for_status().json()["data"]
        return [item["event"]["id"] for item in data]

    assert ids() == ["4", "3", "2", "1"]  # `lt` is exclusive
    assert ids(**{"filter[type][eq]": "ai_credits"}) == ["3", "2", "1"]
    assert ids(**{"filter[subject][oeq]": "a, c"}) == ["4", "3", "1"]  # trimmed
    assert ids(**{"filter[subject][oeq]": "b,c"}) == ["3"]  # a list cannot name "b,c"
    assert ids(**{"filter[subject][eq]": "b,c"}) == ["2"]
    assert ids(**{"filter[subject]": "c"}) == ["3"]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param([("filter[subject][in]", "a,b")], id="no-in-operator"),
        pytest.param([("filter[subject][oeq]", ",".join(f"s{i}" for i in range(51)))], id="51-values"),
        pytest.param([("filter[tenant]", "acme")], id="no-data-filter"),
        pytest.param([("filter[type][eq]", "a"), ("filter[type][eq]", "b")], id="repeated-key"),
        pytest.param([("page[size]", "101")], id="page-too-big"),
        pytest.param([("page[size]", "0")], id="page-empty"),
        pytest.param([("page[before]", "x")], id="no-backward-paging"),
        pytest.param([("page[after]", "not-a-cursor")], id="bad-cursor"),
        pytest.param([("filter[time][gte]", "2026-01-01")], id="date-only-time"),
        pytest.param(
            [("filter[time][gte]", "2026-01-01T00:00:00Z"), ("filter[time][lt]", "2026-01-02T00:00:00Z")],
            id="two-time-operators-as-konnect-refuses",
        ),
        pytest.param([("sort", "tenant")], id="unknown-sort"),
    ],
)
def test_events_refuse_what_the_server_refuses(om: httpx2.Client, params: list[tuple[str, str]]) -> None:
    api_error(om.get(EVENTS, params=params), 400)


def test_an_empty_filter_value_is_the_handler_s_400(om: httpx2.Client) -> None:
    assert "format mismatch" in domain_problem(om.get(EVENTS, params={"filter[subject][eq]": ""}), 400)["detail"]
