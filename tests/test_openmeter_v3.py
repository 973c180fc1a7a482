"""The v3 API (Kong Konnect Metering & Billing) behind the seam, and telling the two APIs apart.

The production clients against the stand-in over real HTTP; the stand-in's own v3 contract is in
tests/test_openmeter_standin_v3.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from mcp.types import CallToolResult

from ai_credit_usage.openmeter.http import OpenMeterError
from ai_credit_usage.openmeter.interface import AggregateQuery, sequential_event_pages
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.v1 import SERVES_V3
from ai_credit_usage.openmeter.v3 import NOT_V3, OpenMeterV3
from ai_credit_usage.runtime.settings import Settings
from ai_credit_usage.runtime.window import Window
from tests.conftest import (
    AI_METER,
    API_KEY,
    FAST_RETRY,
    NOW,
    FakeClock,
    assert_requests_conform,
    call_tool,
    text_of,
    v1_client,
    v3_client,
)
from tests.servers import serve_in_thread

pytestmark = pytest.mark.anyio
KONG_NOT_FOUND = {
    "type": "https://kongapi.info/konnect/not-found",
    "status": 404,
    "title": "Not Found",
    "instance": "kong:trace:123",
    "detail": "The requested route was not found",
}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(KONG_NOT_FOUND, id="v3-problem"),
        pytest.param({"message": "no Route matched with those values"}, id="kong-gateway"),
    ],
)
async def test_a_v1_client_told_that_the_url_speaks_v3(
    openmeter: OpenMeterStandIn, openmeter_url: str, body: dict[str, object]
) -> None:
    openmeter.fail(status=404, body=json.dumps(body).encode(), path_prefix="/api/v1/")
    client = v1_client(openmeter_url)
    try:
        with pytest.raises(OpenMeterError) as caught:
            await client.meter("ai_credits")
    finally:
        await client.aclose()
    assert str(caught.value) == SERVES_V3
    assert "OPENMETER_API=v3" in SERVES_V3


async def test_a_v1_meter_that_is_not_there_is_still_no_meter(openmeter_url: str) -> None:
    client = v1_client(openmeter_url)
    try:
        with pytest.raises(OpenMeterError, match="OpenMeter has no meter 'nope'"):
            await client.meter("nope")
    finally:
        await client.aclose()


# ---- the v3 client against the v3 stand-in ----------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JANUARY = Window(T0, datetime(2026, 2, 1, tzinfo=UTC))
JANUARY_FROM = "2026-01-01T00:00:00Z"


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


@pytest.fixture
def v3(openmeter_v3_url: str) -> OpenMeterV3:
    return v3_client(openmeter_v3_url)


@pytest.fixture
def standin_v3(request: pytest.FixtureRequest) -> Iterator[OpenMeterStandIn]:
    standin = OpenMeterStandIn(api_key=API_KEY, api="v3")
    yield standin
    assert_requests_conform(request, standin)


@pytest.fixture
def openmeter_v3_url(standin_v3: OpenMeterStandIn) -> Iterator[str]:
    with serve_in_thread(standin_v3.app) as url:
        yield url + "/api/v3"


async def test_the_meter_is_found_by_key_then_asked_for_by_its_ulid(
    v3: OpenMeterV3, standin_v3: OpenMeterStandIn
) -> None:
    standin_v3.add_meter({**AI_CREDITS_METER, "eventFrom": "2025-06-01T00:00:00Z"})
    first = await v3.meter("ai_credits")
    second = await v3.meter("ai_credits")
    await v3.aclose()
    assert first == second
    assert first.slug == "ai_credits" and first.id == AI_CREDITS_METER["id"] and first.event_type == "ai_credits"
    assert first.value_path == ("credits",)
    assert set(first.dimension_paths) == {"tenant", "user", "module", "product", "skill"}
    assert first.events_from == datetime(2025, 6, 1, tzinfo=UTC)
    listed, by_id = standin_v3.requests
    assert (listed.path, listed.query) == ("/api/v3/openmeter/meters", [("filter[key][eq]", "ai_credits")])
    assert by_id.path == f"/api/v3/openmeter/meters/{AI_CREDITS_METER['id']}"


async def test_a_meter_the_list_does_not_hold_is_no_meter(v3: OpenMeterV3) -> None:
    with pytest.raises(
        OpenMeterError, match=r"^OpenMeter has no meter 'nope'; ask the operator to check OPENMETER_METER\."
    ):
        await v3.meter("nope")
    await v3.aclose()


@pytest.mark.sends_invalid_requests  # a v3 path to a v1 server is the mistake under test
async def test_a_v3_client_at_a_v1_server_is_told_so(openmeter_url: str) -> None:
    client = v3_client(openmeter_url)  # the v1 stand-in: no /openmeter/meters
    with pytest.raises(OpenMeterError) as caught:
        await client.meter("ai_credits")
    await client.aclose()
    assert str(caught.value) == NOT_V3


async def test_a_query_sends_only_the_schema_s_fields_and_reads_decimal_strings(
    v3: OpenMeterV3, standin_v3: OpenMeterStandIn
) -> None:
    standin_v3.ingest(
        make_event(tenant="acme", credits=0.1, time=T0, user="ann"),
        make_event(tenant="acme", credits="0.2", time=T0 + timedelta(days=1), user="ann"),
        make_event(tenant="acme", credits=5, time=T0 + timedelta(days=1), user="bob", subject="s,with comma"),
        make_event(tenant="acme", credits=7, time=T0 + timedelta(days=1), user=None),
        make_event(tenant="globex", credits=99, time=T0, user="ann"),
    )
    meter = await v3.meter("ai_credits")
    rows = await v3.query(meter, AggregateQuery(JANUARY, ("user", "tenant"), "acme"))
    by_subject = await v3.query(meter, AggregateQuery(JANUARY, ("subject",), "acme"))
    daily = await v3.query(meter, AggregateQuery(JANUARY, ("tenant",), "acme", "day", "Europe/Paris"))
    await v3.aclose()
    users = sorted((row.dimensions["user"], row.value) for row in rows)
    assert users == [("", 7.0), ("ann", 0.1 + 0.2), ("bob", 5.0)]  # a missing dimension is ""
    assert all(row.dimensions["tenant"] == "acme" and row.subject is None for row in rows)
    assert sorted((row.subject, row.value) for row in by_subject) == [
        ("s,with comma", 5.0),
        ("user-None", 7.0),
        ("user-ann", 0.1 + 0.2),
    ]
    assert all(row.dimensions == {} for row in by_subject)
    paris = ZoneInfo("Europe/Paris")
    assert [(row.window_start, row.value) for row in daily] == [
        (datetime(2026, 1, 1, tzinfo=paris), 0.1),
        (datetime(2026, 1, 2, tzinfo=paris), 12.2),
    ]
    query, *_ = [r for r in standin_v3.requests if r.path.endswith("/query")]
    assert query.method == "POST" and query.path == f"/api/v3/openmeter/meters/{AI_CREDITS_METER['id']}/query"
    assert query.json() == {
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00Z",
        "group_by_dimensions": ["user", "tenant"],
        "filters": {"dimensions": {"tenant": {"eq": "acme"}}},
    }
    daily_body = [r for r in standin_v3.requests if r.path.endswith("/query")][-1].json()
    assert (daily_body["granularity"], daily_body["time_zone"]) == ("P1D", "Europe/Paris")


async def test_a_deleted_meter_is_looked_up_again(v3: OpenMeterV3, standin_v3: OpenMeterStandIn) -> None:
    meter = await v3.meter("ai_credits")
    standin_v3.meters.clear()
    standin_v3.add_meter({**AI_CREDITS_METER, "id": "01JAAAAAAAAAAAAAAAAAAAAAAA"})
    with pytest.raises(OpenMeterError, match="OpenMeter has no meter 'ai_credits'"):
        await v3.query(meter, AggregateQuery(JANUARY, ("tenant",), "acme"))
    again = await v3.meter("ai_credits")
    await v3.aclose()
    assert again.id == "01JAAAAAAAAAAAAAAAAAAAAAAA"
    assert standin_v3.requests[-1].query == [("filter[key][eq]", "ai_credits")]


def test_subjects_ride_in_oeq_lists_of_50_and_a_comma_goes_alone() -> None:
    client = v3_client("http://openmeter.invalid/api/v3")
    subjects = [f"user-{i:03d}" for i in range(120)]
    subjects[60:60] = ["b,c", " padded"]
    chunks = client.subject_chunks(AI_METER, JANUARY, subjects)
    assert [len(chunk) for chunk in chunks] == [50, 10, 1, 1, 50, 10]
    assert chunks[2:4] == [["b,c"], [" padded"]]  # a comma list would split or trim these: asked for with `eq`
    assert [s for chunk in chunks for s in chunk] == subjects  # in order, each once
    long = ["x" * 300 + str(i) for i in range(10)]  # one `oeq` value may hold at most 1024 bytes
    assert all(len(",".join(chunk).encode()) <= 1024 for chunk in client.subject_chunks(AI_METER, JANUARY, long))
    with pytest.raises(OpenMeterError, match="too long to ask OpenMeter for its events"):
        client.subject_chunks(AI_METER, JANUARY, ["y" * 1025])


async def test_event_pages_ask_100_newest_first_follow_the_cursor_and_repeat_no_key(
    v3: OpenMeterV3, standin_v3: OpenMeterStandIn
) -> None:
    standin_v3.ingest(
        *[
            make_event(tenant="acme", credits=1, time=T0 + timedelta(minutes=i), subject=f"s{i % 3}")
            for i in range(250)
        ],
        make_event(tenant="acme", credits=1, time=T0, subject="b,c", id="comma"),
        make_event(tenant="acme", credits=1, time=T0, subject="s0", type="other"),
    )
    meter = await v3.meter("ai_credits")
    pages = [page async for page in sequential_event_pages(v3, meter, JANUARY, ["s0", "s1"])]
    (comma,) = [page async for page in sequential_event_pages(v3, meter, JANUARY, ["b,c"])]
    await v3.aclose()
    events = [event for page in pages for event in page]
    assert [len(page) for page in pages] == [100, 67]
    assert [event.subject for event in events] == [f"s{i % 3}" for i in reversed(range(250)) if i % 3 != 2]
    assert [event.id for event in comma] == ["comma"]
    sent = [r for r in standin_v3.requests if r.path == "/api/v3/openmeter/events"]
    for request in sent:
        keys = [key for key, _ in request.query]
        assert len(keys) == len(set(keys))
        assert request.param("page[size]") == "100"
        assert request.param("filter[type][eq]") == "ai_credits"
        # One time operator (Konnect's schema): before the window's end; the reader cuts at its start.
        assert (request.param("filter[time][lt]"), request.param("filter[time][gte]")) == ("2026-02-01T00:00:00Z", None)
    assert [r.param("filter[subject][oeq]") for r in sent[:2]] == ["s0,s1", "s0,s1"]
    assert sent[0].param("page[after]") is None and sent[1].param("page[after]") is not None
    assert sent[2].param("filter[subject][eq]") == "b,c"
    assert await v3.event_page(meter, JANUARY, [], None) == ([], None)  # no subject, no request
    assert len([r for r in standin_v3.requests if r.path == "/api/v3/openmeter/events"]) == len(sent)


async def test_event_pages_cut_at_the_window_start_and_stop_there(
    v3: OpenMeterV3, standin_v3: OpenMeterStandIn
) -> None:
    """Only `lt` the end is sent, so OpenMeter hands out older events too: the reader keeps exactly the window's
    (whole seconds, as the old `gte` bound was), newest first, and asks for no page past the start."""
    start = T0 + timedelta(days=3, seconds=30)
    standin_v3.ingest(
        *[make_event(tenant="acme", credits=1, time=start + timedelta(minutes=i), id=f"in{i}") for i in range(150)],
        make_event(tenant="acme", credits=1, time=start, id="at-start"),
        make_event(tenant="acme", credits=1, time=start - timedelta(seconds=1), id="just-before"),
        *[make_event(tenant="acme", credits=1, time=T0 + timedelta(minutes=i), id=f"old{i}") for i in range(300)],
    )
    meter = await v3.meter("ai_credits")
    window = Window(start + timedelta(microseconds=400_000), JANUARY.end)  # a fraction of a second: sent as :30
    pages = [page async for page in sequential_event_pages(v3, meter, window)]
    await v3.aclose()
    ids = [event.id for page in pages for event in page]
    # newest first; at the start's second the later-stored event first (store row id descending)
    assert ids == [f"in{i}" for i in reversed(range(1, 150))] + ["at-start", "in0"]
    assert [len(page) for page in pages] == [100, 51]
    assert len([r for r in standin_v3.requests if r.path == "/api/v3/openmeter/events"]) == 2


def test_main_with_a_konnect_url_and_token_answers_from_the_v3_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`uv run main.py` as a Konnect operator configures it: only OPENMETER_URL (a Konnect region's v3 base) and a
    system-account token; the API follows from the URL. The network is the stand-in (an ASGI transport in place of
    Konnect), everything above it is main.py's own start-up."""
    import anyio
    import uvicorn

    import main
    import server

    token = "spat_0123456789abcdefTEST"
    standin = OpenMeterStandIn(api_key=token, api="v3")
    standin.ingest(make_event(tenant="acme", credits=2.5, time=NOW - timedelta(hours=1)))
    monkeypatch.setenv("OPENMETER_URL", "https://eu.api.konghq.com/v3")
    monkeypatch.setenv("OPENMETER_API_KEY", token)
    real_create_app = server.create_app

    def create_app(settings: Settings, **options: Any) -> Any:
        transport = httpx2.ASGITransport(app=standin.app)
        return real_create_app(settings, openmeter_transport=transport, clock=FakeClock(NOW), **options)

    answered: list[CallToolResult] = []

    def run(app: Any, **options: Any) -> None:  # instead of uvicorn's loop: serve, ask one question, stop
        with serve_in_thread(app) as url:
            answered.append(anyio.run(call_tool, url, "get_credit_usage_by_tenant"))

    monkeypatch.setattr(server, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(main, "configure_logging", lambda: None)
    assert main.main([]) == 0
    (result,) = answered
    assert not result.is_error, text_of(result)
    assert "Total credits: 2.50" in text_of(result)
    paths = [request.path for request in standin.requests]
    assert paths[0] == "/v3/openmeter/meters" and paths[1].startswith("/v3/openmeter/meters/")
    assert all(request.headers["authorization"] == f"Bearer {token}" for request in standin.requests)


@pytest.mark.parametrize(
    ("status", "body", "sentence"),
    [
        pytest.param(
            400,
            {"type": "https://kongapi.info/konnect/bad-request", "status": 400, "title": "Bad Request",
             "instance": "urn:request:x", "detail": "Bad Request: windowSize [additionalProperties]: unsupported",
             "invalid_parameters": [{"field": "windowSize", "reason": "unsupported", "source": "body"}]},
            "OpenMeter rejected the query (HTTP 400); this is a fault in the credits server",
            id="base-api-error",
        ),
        pytest.param(
            400,
            {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "invalid group by dimension: x",
             "extensions": {"validationErrors": [{"code": "invalid_group_by", "message": "x", "field": "x"}]}},
            "OpenMeter rejected the query (HTTP 400); this is a fault in the credits server",
            id="v1-problem-shape",
        ),
        pytest.param(
            404,
            {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "meter not found: 01J"},
            "OpenMeter has no meter 'ai_credits'; ask the operator to check OPENMETER_METER.",
            id="meter-gone",
        ),
        pytest.param(
            401,
            {"status": 401, "title": "Unauthorized", "instance": "kong:trace:1", "detail": "Unauthorized"},
            "OpenMeter refused this server's API key; ask the operator to check OPENMETER_API_KEY.",
            id="gateway-401",
        ),
        pytest.param(
            500, {"type": "about:blank", "title": "Internal Server Error", "status": 500},
            "OpenMeter had an internal error (HTTP 500); try again in a few minutes.",
            id="500-without-detail",
        ),
    ],
)  # fmt: skip
async def test_both_error_shapes_become_v1_s_sentences(
    v3: OpenMeterV3, standin_v3: OpenMeterStandIn, status: int, body: dict[str, Any], sentence: str
) -> None:
    meter = await v3.meter("ai_credits")
    standin_v3.fail(status=status, body=json.dumps(body).encode(), path_prefix="/api/v3/openmeter/meters/")
    with pytest.raises(OpenMeterError) as caught:
        await v3.query(meter, AggregateQuery(JANUARY, ("tenant",), "acme"))
    await v3.aclose()
    assert str(caught.value).startswith(sentence)


async def test_a_query_is_retried_like_a_get(standin_v3: OpenMeterStandIn, openmeter_v3_url: str) -> None:
    client = v3_client(openmeter_v3_url, retry=FAST_RETRY)
    standin_v3.ingest(make_event(tenant="acme", credits=3, time=T0))
    meter = await client.meter("ai_credits")
    standin_v3.fail(status=503, times=2, path_prefix=f"/api/v3/openmeter/meters/{meter.id}/query")
    (row,) = await client.query(meter, AggregateQuery(JANUARY, ("tenant",), "acme"))
    await client.aclose()
    assert row.value == 3.0
    assert [r.method for r in standin_v3.requests_to("/query")] == ["POST"] * 3


@pytest.mark.sends_invalid_requests  # a v1 path to a v3-only server is the mistake under test
@pytest.mark.parametrize("api", ["v3"], indirect=True)
async def test_a_v1_server_pointed_at_a_v3_only_openmeter_says_so_on_the_first_call(
    start_server: Any, openmeter: OpenMeterStandIn, openmeter_url: str
) -> None:
    """Only the answer shows it: a root URL (so v1 by the rules) of an OpenMeter that serves only v3, as Konnect does
    behind a custom domain. The v1 meter path's 404 is in v3's words, and the chat user reads what to set."""
    root = openmeter_url.removesuffix("/api/v3")
    url = start_server(openmeter_url=root)
    result = await call_tool(url, "get_credit_usage_summary")
    assert result.is_error
    assert text_of(result) == SERVES_V3
    assert [r.path for r in openmeter.requests] == ["/api/v1/meters/ai_credits"]
