"""The OpenMeter stand-in behaves like the real server (openmeter-api.md), checked over real HTTP.

Other tests trust this fake to catch client mistakes, so these tests pin the semantics a client can get wrong:
exclusive `to`, one operator per filter object, calendar windows, and cursor paging that ends on a short page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from tests.conftest import standin_client

KEY = "fake-key-123"
QUERY = "/api/v1/meters/ai_credits/query"
EVENTS = "/api/v2/events"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


@pytest.fixture(scope="module")
def fake() -> OpenMeterStandIn:
    return OpenMeterStandIn(api_key=KEY)


@pytest.fixture
def om(fake: OpenMeterStandIn, standin_url: str) -> Iterator[httpx2.Client]:
    """A client with the right key, against a fake emptied for this test (the server is shared per module)."""
    with standin_client(fake, standin_url) as client:
        yield client


def problem(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["instance"].startswith("urn:request:standin/")
    return body


def advanced(**filters: Any) -> tuple[str, str]:
    return ("advancedMeterGroupByFilters", json.dumps(filters))


def all_pages(om: httpx2.Client, **params: Any) -> list[dict[str, Any]]:
    """Follow nextCursor like a correct client: stop only when it is absent."""
    pages = []
    while True:
        page = om.get(EVENTS, params=params).raise_for_status().json()
        pages.append(page)
        if "nextCursor" not in page:
            return pages
        params["cursor"] = page["nextCursor"]


def test_every_request_needs_the_bearer_key(om: httpx2.Client, standin_url: str) -> None:
    assert "detail" in problem(httpx2.get(standin_url + "/api/v1/meters/ai_credits"), 401)
    problem(httpx2.get(standin_url + "/api/v1/meters/ai_credits", headers={"Authorization": "Bearer nope"}), 401)
    assert om.get("/api/v1/meters/ai_credits").status_code == 200


def test_meter_by_slug_or_id_and_unknown_paths(om: httpx2.Client) -> None:
    meter = om.get("/api/v1/meters/ai_credits").json()
    assert meter["groupBy"] == AI_CREDITS_METER["groupBy"]
    assert om.get(f"/api/v1/meters/{meter['id']}").json() == meter
    assert "nope" in problem(om.get("/api/v1/meters/nope"), 404)["detail"]
    problem(om.get("/api/v1/meters/nope/query"), 404)
    problem(om.get("/api/v1/nothing"), 404)


@pytest.mark.parametrize("path", ["/api/v1/meters/ai-credits", "/api/v1/meters/AI_CREDITS/query", "/api/v1/meters/a__"])
def test_a_meter_key_outside_the_spec_pattern_is_a_400(om: httpx2.Client, path: str) -> None:
    assert "meterIdOrSlug" in problem(om.get(path), 400)["detail"]


def test_query_sums_one_tenant_per_group_with_exclusive_to(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=10.25, time=T0),  # from is inclusive
        make_event(tenant="acme", credits="4.5", time=at(days=3)),  # a numeric string counts
        make_event(tenant="acme", credits="n/a", time=at(days=3)),  # not a number: ignored
        make_event(tenant="acme", credits=2, time=at(days=4), user="u2", module="search"),
        make_event(tenant="acme", credits="oops", time=at(days=4), user="u3"),  # a group with only NULLs: no row
        make_event(tenant="acme", credits=1000, time=at(days=31)),  # exactly `to`: excluded
        make_event(tenant="acme", credits=1000, time=at(seconds=-1)),  # before from
        make_event(tenant="globex", credits=77, time=at(days=5)),  # another tenant
        make_event(tenant="acme", credits=500, time=at(days=5), type="other"),  # another event type
    )
    params = [("from", "2026-01-01T00:00:00.000Z"), ("to", "2026-02-01T00:00:00Z"), ("groupBy", "user")]
    params += [("groupBy", "module"), advanced(tenant={"$eq": "acme"})]
    body = om.get(QUERY, params=params).raise_for_status().json()
    assert body["from"] == "2026-01-01T00:00:00Z"
    assert body["to"] == "2026-02-01T00:00:00Z"
    assert "windowSize" not in body
    rows = sorted(body["data"], key=lambda row: row["groupBy"]["user"])
    assert rows == [
        {"value": 14.75, "windowStart": body["from"], "windowEnd": body["to"], "subject": None,
         "groupBy": {"user": "u1", "module": "chat"}},
        {"value": 2.0, "windowStart": body["from"], "windowEnd": body["to"], "subject": None,
         "groupBy": {"user": "u2", "module": "search"}},
    ]  # fmt: skip
    assert fake.requests_to("/query")[-1].params("groupBy") == ["user", "module"]


def test_query_groups_missing_and_numeric_dimensions_as_strings(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=1, time=T0, skill=None),
        make_event(tenant="acme", credits=2, time=T0, skill=None, extra_data={"skill": 7}),
    )
    data = om.get(QUERY, params={"groupBy": "skill", "filterGroupBy[tenant]": "acme"}).json()["data"]
    assert sorted((row["groupBy"]["skill"], row["value"]) for row in data) == [("", 1.0), ("7", 2.0)]
    assert {row["windowStart"] for row in data} == {"2026-01-01T00:00:00Z"}  # no from: first event, to the minute
    assert {row["windowEnd"] for row in data} == {"2026-01-01T00:01:00Z"}


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"groupBy": "tenantx"}, "invalid group by: tenantx"),
        (dict([advanced(tenant={"$eq": "acme", "$ne": "x"})]), "multiple operators are set"),
        (dict([advanced(tenant={"$eq": ""})]), "format mismatch"),
        (dict([advanced(region={"$eq": "eu"})]), "meter does not have group by: region"),
        ({"filterGroupBy[tenant]": "a", **dict([advanced(tenant={"$eq": "a"})])}, "cannot be used together"),
        ({"from": "2026-01-01T00:00:00"}, "parameter from"),  # no offset
        ({"from": "2026-01-01T00:00:00 02:00"}, "parameter from"),  # what an unencoded '+' decodes to
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "cannot be equal"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from must be before to"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowSize": "DAY", "windowTimeZone": "Mars/Olympus"}, "invalid time zone"),
    ],
)
def test_query_rejects_what_the_server_rejects(om: httpx2.Client, params: dict[str, str], detail: str) -> None:
    assert detail in problem(om.get(QUERY, params=params), 400)["detail"]


@pytest.mark.parametrize("keys", [["user", "user"], ["subject", "tenant", "subject"]])
def test_a_repeated_group_by_fails_as_the_real_server_fails(om: httpx2.Client, keys: list[str]) -> None:
    """Real OpenMeter does not deduplicate `groupBy`: each one becomes a column of the SQL, so a repeated key asks
    ClickHouse for two columns of one alias (openmeter/meter/httphandler/mapping.go, streaming/clickhouse)."""
    body = problem(om.get(QUERY, params=[("groupBy", key) for key in keys]), 500)
    assert "detail" not in body  # Go's StatusProblem leaves it out of a 500


def test_query_accepts_offsets_and_operator_trees(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(*(make_event(tenant=t, credits=1, time=T0) for t in ("acme", "acme-eu", "globex", "initech")))
    tree = {"$or": [{"$like": "acme%"}, {"$in": ["initech"]}]}
    params = [("from", "2026-01-01T01:00:00+01:00"), ("groupBy", "tenant"), advanced(tenant=tree)]
    data = om.get(QUERY, params=params).raise_for_status().json()["data"]
    assert sorted(row["groupBy"]["tenant"] for row in data) == ["acme", "acme-eu", "initech"]
    assert om.get(f"{QUERY}?from=2026-01-01T01:00:00%2B01:00").status_code == 200
    problem(om.get(f"{QUERY}?from=2026-01-01T01:00:00+01:00"), 400)  # an unencoded '+' decodes to a space


def test_window_size_day_is_calendar_aligned_in_the_time_zone(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(
        make_event(tenant="acme", credits=1, time=at(hours=10)),
        make_event(tenant="acme", credits=2, time=at(hours=23, minutes=30)),  # already Jan 2 in Budapest
        make_event(tenant="acme", credits=4, time=at(days=2, hours=5)),
    )
    params = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-05T00:00:00Z", "windowSize": "DAY"}
    body = om.get(QUERY, params=params).json()
    assert body["windowSize"] == "DAY"
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in body["data"]] == [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 3.0),
        ("2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", 4.0),
    ]  # no zero-filled Jan 2
    budapest = om.get(QUERY, params={**params, "windowTimeZone": "Europe/Budapest"}).json()["data"]
    assert [(r["windowStart"], r["value"]) for r in budapest] == [
        ("2025-12-31T23:00:00Z", 1.0),  # the first window is partial: it starts before `from`
        ("2026-01-01T23:00:00Z", 2.0),
        ("2026-01-02T23:00:00Z", 4.0),
    ]


@pytest.mark.parametrize(("count", "sizes"), [(250, [100, 100, 50]), (200, [100, 100, 0])])
def test_events_page_newest_first_with_cursor_only_on_full_pages(
    om: httpx2.Client, fake: OpenMeterStandIn, count: int, sizes: list[int]
) -> None:
    fake.ingest(*(make_event(tenant="acme", credits=i, time=at(minutes=i), id=f"e{i}") for i in range(count)))
    pages = all_pages(om)
    assert [len(page["items"]) for page in pages] == sizes
    assert ["nextCursor" in page for page in pages] == [True, True, False]
    ids = [item["event"]["id"] for page in pages for item in page["items"]]
    assert ids == [f"e{i}" for i in reversed(range(count))]
    item = pages[0]["items"][0]
    assert item["event"]["time"] == ("2026-01-01T04:09:00Z" if count == 250 else "2026-01-01T03:19:00Z")
    assert set(item) == {"event", "ingestedAt", "storedAt"}


def test_cursor_breaks_same_second_ties_by_store_row(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(*(make_event(tenant="acme", credits=1, time=at(seconds=0.1 * i), id=f"e{i}") for i in range(7)))
    ids = [item["event"]["id"] for page in all_pages(om, limit=2) for item in page["items"]]
    assert ids == [f"e{i}" for i in reversed(range(7))]  # same second: later-stored first, none lost or repeated


def test_events_filter_on_time_range_and_type(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.ingest(*(make_event(tenant="acme", credits=1, time=at(hours=h), id=f"h{h}") for h in range(6)))
    fake.ingest(make_event(tenant="acme", credits=1, time=at(hours=2), id="other", type="other"))
    time_range = {"$and": [{"$gte": "2026-01-01T02:00:00Z"}, {"$lt": "2026-01-01T04:00:00Z"}]}
    items = om.get(EVENTS, params={"filter": json.dumps({"time": time_range})}).json()["items"]
    assert [item["event"]["id"] for item in items] == ["h3", "other", "h2"]
    only_type = {"time": time_range, "type": {"$eq": "ai_credits"}}
    items = om.get(EVENTS, params={"filter": json.dumps(only_type)}).json()["items"]
    assert [item["event"]["id"] for item in items] == ["h3", "h2"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"filter": json.dumps({"time": {"$gte": "2026-01-01T00:00:00Z", "$lt": "2026-01-02T00:00:00Z"}})}, "multiple"),
        ({"filter": json.dumps({"tenant": {"$eq": "acme"}})}, "tenant"),  # no filtering on event data
        ({"filter": json.dumps({"time": {"$and": [{"$and": [{"$gt": "2026-01-01T00:00:00Z"}]}]}})}, "complexity"),
        ({"filter": "{not json"}, "JSON"),
        ({"limit": "101"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_events_reject_what_the_server_rejects(om: httpx2.Client, params: dict[str, str], detail: str) -> None:
    assert detail in problem(om.get(EVENTS, params=params), 400)["detail"]


def test_faults_answer_instead_of_the_real_response(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.fail(status=500)
    assert "detail" not in problem(om.get("/api/v1/meters/ai_credits"), 500)  # Go omits detail on 500
    assert om.get("/api/v1/meters/ai_credits").status_code == 200

    fake.fail(status=429, times=2, path_prefix=EVENTS, headers={"Retry-After": "1"})
    assert om.get("/api/v1/meters/ai_credits").status_code == 200  # other paths are unaffected
    for _ in range(2):
        assert problem(om.get(EVENTS), 429)
        assert om.get(QUERY).status_code == 200
    assert om.get(EVENTS).status_code == 200
    assert [r.path for r in fake.requests_to(EVENTS)] == [EVENTS] * 3

    fake.fail(status=200, body=b"not json", content_type="application/json")
    response = om.get(QUERY)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_a_delayed_answer_trips_client_timeouts(om: httpx2.Client, fake: OpenMeterStandIn) -> None:
    fake.fail(status=200, delay=0.3)
    with pytest.raises(httpx2.ReadTimeout):
        om.get(QUERY, timeout=0.05)
    fake.fail(status=200, delay=0.05)  # slow but otherwise a normal answer
    assert om.get(QUERY).json() == {"data": []}
