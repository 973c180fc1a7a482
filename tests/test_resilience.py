"""Issue 5: OpenMeter trouble (retries, cuts, timeouts, deadline, bounded concurrency), hostile input at the
HTTP edge, the optional bearer token, the Host check, and the audit line."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from datetime import UTC, datetime, timedelta

import anyio
import httpx2
import pytest
from mcp import MCPError

from ai_credit_usage.openmeter import RetryPolicy
from ai_credit_usage.openmeter.interface import AggregateQuery
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.v1 import MAX_QUERY_BYTES
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.window import Window
from tests.conftest import AI_METER, API_KEY, NOW, ServerStarter, call_tool, raw_initialize, text_of, v1_client

pytestmark = pytest.mark.anyio
QUERY = "/api/v1/meters/ai_credits/query"
EVENTS = "/api/v2/events"
ONE_DAY = {"from_date": "2026-01-15", "to_date": "2026-01-15"}


@pytest.fixture
def busy_day(openmeter: OpenMeterStandIn) -> None:
    """250 acme events on 2026-01-15: three cursor pages."""
    start = datetime(2026, 1, 15, tzinfo=UTC)
    openmeter.ingest(
        *[make_event(tenant="acme", credits=1, time=start + timedelta(minutes=5 * i), user="ann") for i in range(250)]
    )


def requests_to(openmeter: OpenMeterStandIn, path: str, start: str | None = None) -> int:
    """How many requests went to `path`; with `start`, only the meter queries over the window starting there (the
    preceding window's comparison query runs beside them)."""
    return len([r for r in openmeter.requests if r.path == path and start in (None, r.param("from"))])


DEFAULT_START = "2026-01-13T12:00:00Z"  # the default window of the injected clock


async def test_transient_503s_are_retried(server_url: str, openmeter: OpenMeterStandIn, busy_day: None) -> None:
    openmeter.fail(status=503, times=2, path_prefix=QUERY)
    result = await call_tool(server_url, "get_credit_usage_by_tenant", ONE_DAY)
    assert "| acme | 250.00 |" in text_of(result)
    assert requests_to(openmeter, QUERY) == 4  # the window's and the comparison's queries, two 503s between them


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
async def test_permanent_errors_are_not_retried(server_url: str, openmeter: OpenMeterStandIn, status: int) -> None:
    openmeter.fail(status=status, times=10, path_prefix=QUERY)
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert result.is_error
    assert requests_to(openmeter, QUERY, DEFAULT_START) == 1


async def test_retries_give_up_with_the_last_error(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.fail(status=503, times=100, path_prefix=QUERY)
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert text_of(result) == "OpenMeter had an internal error (HTTP 503); try again in a few minutes."
    assert requests_to(openmeter, QUERY, DEFAULT_START) == RetryPolicy().attempts


async def test_retry_after_is_honoured_up_to_the_cap(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    url = start_server(retry=RetryPolicy(first_wait=0.001, max_retry_after=0.05))
    openmeter.fail(status=429, times=1, path_prefix=QUERY, headers={"Retry-After": "0.03"})
    result = await call_tool(url, "get_credit_usage_by_tenant")
    assert not result.is_error, text_of(result)
    waits = re.findall(r"query: retrying in ([\d.]+) s", caplog.text)
    assert waits == ["0.03"]


async def test_a_retry_after_beyond_the_cap_is_reported_at_once(
    server_url: str, openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Retrying before OpenMeter's Retry-After would only be refused again: say how long it asked for instead."""
    openmeter.fail(status=429, times=100, path_prefix=QUERY, headers={"Retry-After": "3600"})
    result = await call_tool(server_url, "get_credit_usage_by_tenant")
    assert text_of(result) == (
        "OpenMeter is rate-limiting requests right now and asked to wait 3,600 seconds; try again after that."
    )
    assert requests_to(openmeter, QUERY, DEFAULT_START) == 1
    assert "retrying" not in caplog.text


async def test_rate_limit_that_persists_is_its_own_sentence(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.fail(status=429, times=100, path_prefix=QUERY, headers={"Retry-After": "0.001"})
    result = await call_tool(server_url, "get_credit_usage_by_tenant")
    assert text_of(result) == "OpenMeter is rate-limiting requests right now; try again in a minute."
    assert requests_to(openmeter, QUERY, DEFAULT_START) == RetryPolicy().attempts


async def test_a_408_is_a_timeout_that_is_retried(server_url: str, openmeter: OpenMeterStandIn, busy_day: None) -> None:
    """Real OpenMeter answers 408 when the request's context was cancelled (pkg/models/problem.go): it may pass."""
    openmeter.fail(status=408, times=1, path_prefix=QUERY, query={"from": "2026-01-15T00:00:00Z"})
    result = await call_tool(server_url, "get_credit_usage_by_tenant", ONE_DAY)
    assert "| acme | 250.00 |" in text_of(result)
    assert requests_to(openmeter, QUERY, "2026-01-15T00:00:00Z") == 2


async def test_a_408_that_persists_says_openmeter_did_not_answer_in_time(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    openmeter.fail(status=408, times=100, path_prefix=QUERY)
    result = await call_tool(server_url, "get_credit_usage_by_tenant")
    assert text_of(result) == "OpenMeter did not answer in time; try again in a minute, or ask for a shorter window."
    assert requests_to(openmeter, QUERY, DEFAULT_START) == RetryPolicy().attempts


async def test_a_timed_out_attempt_is_retried_however_long_the_timeout(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    """The defaults had a 30 s timeout and gave up retrying 20 s after the first try: a timeout was never retried.
    Here the timeout (0.2 s) is again longer than all the waits allowed (0.1 s); only the waits count."""
    retry = RetryPolicy(first_wait=0.001, max_wait=0.005, max_total_wait=0.1)
    url = start_server(retry=retry, openmeter_timeout_seconds=0.2)
    openmeter.fail(status=200, delay=1, times=1, path_prefix=QUERY, query={"from": DEFAULT_START})
    result = await call_tool(url, "get_credit_usage_summary")
    assert not result.is_error, text_of(result)
    assert requests_to(openmeter, QUERY, DEFAULT_START) == 2


async def test_waiting_for_a_request_slot_does_not_use_up_the_retries(
    openmeter: OpenMeterStandIn, openmeter_url: str
) -> None:
    """Under load a request may wait long for one of the OPENMETER_MAX_CONCURRENCY slots; a 503 it then meets is
    retried all the same."""
    retry = RetryPolicy(first_wait=0.001, max_wait=0.005, max_total_wait=0.1)
    client = v1_client(openmeter_url, max_concurrency=1, retry=retry)
    openmeter.fail(status=200, delay=0.5, times=1, path_prefix=QUERY)  # holds the only slot for 0.5 s
    openmeter.fail(status=503, times=1, path_prefix=QUERY)  # what the request that waited meets first
    window = Window(NOW - timedelta(days=1), NOW)
    answers: list[object] = []

    async def ask() -> None:
        answers.append(await client.query(AI_METER, AggregateQuery(window, ("tenant",), "acme")))

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ask)
            tasks.start_soon(ask)
    finally:
        await client.aclose()
    assert answers == [[], []]
    assert requests_to(openmeter, QUERY) == 3


async def test_no_retry_waits_past_the_tool_calls_deadline(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    """A wait that would end at the deadline is not started: the user reads what OpenMeter said, not a bare
    "took longer than"."""
    url = start_server(retry=RetryPolicy(first_wait=0.001, max_retry_after=30), tool_deadline_seconds=5)
    openmeter.fail(status=429, times=100, path_prefix=QUERY, headers={"Retry-After": "10"})
    result = await call_tool(url, "get_credit_usage_by_tenant")
    assert text_of(result) == "OpenMeter is rate-limiting requests right now; try again in a minute."
    assert requests_to(openmeter, QUERY, DEFAULT_START) == 1


async def test_a_cut_connection_mid_paging_is_retried_and_nothing_is_lost(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, busy_day: None
) -> None:
    url = start_server()
    openmeter.fail(path_prefix=EVENTS, after=1, cut=True)  # the second page dies half-way
    result = await call_tool(url, "get_credit_events", ONE_DAY)
    assert "Showing 50 of 250 rows" in text_of(result)
    assert "Total credits: 250.00" in text_of(result)


async def test_paging_that_keeps_failing_stores_no_partial_workbook(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, busy_day: None
) -> None:
    url = start_server()
    openmeter.fail(path_prefix=EVENTS, after=1, cut=True, times=100)
    result = await call_tool(url, "get_credit_events", ONE_DAY)
    assert result.is_error
    assert text_of(result).startswith("OpenMeter cannot be reached right now")
    assert "Download" not in text_of(result)
    assert len(start_server.apps[url].state.downloads) == 0


async def test_a_slow_openmeter_times_out_cleanly(start_server: ServerStarter, openmeter: OpenMeterStandIn) -> None:
    url = start_server(openmeter_timeout_seconds=0.1)
    openmeter.fail(status=200, delay=0.5, times=100, path_prefix=QUERY)
    result = await call_tool(url, "get_credit_usage_by_tenant")
    assert text_of(result) == "OpenMeter did not answer in time; try again in a minute, or ask for a shorter window."
    assert requests_to(openmeter, QUERY, DEFAULT_START) == RetryPolicy().attempts


async def test_the_whole_call_has_a_deadline(start_server: ServerStarter, openmeter: OpenMeterStandIn) -> None:
    url = start_server(tool_deadline_seconds=0.2)
    openmeter.fail(status=200, delay=2, times=100, path_prefix=QUERY)
    result = await call_tool(url, "get_credit_usage_summary")
    assert result.is_error
    assert text_of(result).startswith("The answer took longer than 0.2 seconds")
    assert httpx2.get(f"{url}/health").json() == {"status": "ok"}


async def test_concurrency_towards_openmeter_is_bounded(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    url = start_server(openmeter_max_concurrency=2)
    openmeter.fail(status=200, delay=0.05, times=1000)  # every request is slow, so calls pile up

    async with anyio.create_task_group() as tasks:
        for index in range(8):
            tenant = f"tenant{index}"
            headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
            tasks.start_soon(lambda h=headers: call_tool(url, "get_credit_usage_summary", headers=h))
    assert openmeter.max_in_flight == 2
    assert requests_to(openmeter, QUERY) == 16  # each call: its window and the preceding one


@pytest.mark.parametrize(
    "tenant",
    [
        pytest.param("Müller & Söhne GmbH", id="unicode"),
        pytest.param("株式会社テスト", id="cjk"),
        pytest.param("x" * 1024, id="1kB"),
        pytest.param('acme"},"$or":[{"$ne":"x"}],"x":{"$eq":"', id="operator-injection"),
        pytest.param("{'$gt': ''}", id="braces"),
    ],
)
async def test_hostile_and_foreign_tenant_names_see_exactly_their_own_data(
    server_url: str, openmeter: OpenMeterStandIn, tenant: str
) -> None:
    at = NOW - timedelta(hours=1)
    openmeter.ingest(
        make_event(tenant=tenant, credits=7, time=at, user="own-user"),
        make_event(tenant="acme", credits=1000, time=at, user="acme-user"),
        make_event(tenant="", credits=1000, time=at, user="no-tenant-user"),
    )
    headers = {"X-Tenant-Name": tenant.encode(), "X-User-UserRole": b"admin"}  # UTF-8 on the wire, as TAIS sends
    for tool in ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events"):
        result = await call_tool(server_url, tool, headers=headers)  # type: ignore[arg-type]
        text = text_of(result)
        assert "Total credits: 7.00" in text, text
        assert "acme-user" not in text
        assert "no-tenant-user" not in text
    for request in openmeter.requests_to(QUERY):
        assert json.loads(request.param("advancedMeterGroupByFilters")) == {"tenant": {"$eq": tenant}}


async def test_bearer_token_guards_mcp_only(start_server: ServerStarter) -> None:
    url = start_server(mcp_auth_token="tais-shared-secret")
    with pytest.raises(Exception) as refused:  # noqa: PT011 -- the SDK wraps the 401 in its own error types
        await call_tool(url, "get_credit_usage_by_tenant")
    assert "401" in repr(refused.value) or isinstance(refused.value, (MCPError, ExceptionGroup))
    raw = httpx2.post(f"{url}/mcp", json={}, headers={"Authorization": "Bearer wrong"})
    assert raw.status_code == 401
    assert "tais-shared-secret" not in raw.text
    headers = {"X-Tenant-Name": "acme", "X-User-UserRole": "admin", "Authorization": "Bearer tais-shared-secret"}
    result = await call_tool(url, "get_credit_usage_by_tenant", headers=headers)
    link = re.search(r"(/download/[\w-]+)", text_of(result))
    assert link
    assert httpx2.get(url + link.group(1)).status_code == 200  # the link is its own capability
    assert httpx2.get(f"{url}/health").status_code == 200


def initialize_with_host(url: str, host: str) -> int:
    return raw_initialize(url, {"Host": host})


async def test_dns_rebinding_protection_stays_on(start_server: ServerStarter) -> None:
    url = start_server(mcp_allowed_hosts="mcp.example.com, ai-credits.internal:8443")
    port = url.rsplit(":", 1)[1]
    assert initialize_with_host(url, f"127.0.0.1:{port}") == 200
    assert initialize_with_host(url, "evil.example") == 421
    assert initialize_with_host(url, f"evil.example:{port}") == 421
    assert initialize_with_host(url, "mcp.example.com") == 200
    assert initialize_with_host(url, "mcp.example.com:443") == 200
    assert initialize_with_host(url, "ai-credits.internal:8443") == 200
    assert initialize_with_host(url, "ai-credits.internal:9999") == 421


async def test_one_audit_line_per_call_without_credits_or_names(
    server_url: str, openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_credit_usage.audit")
    openmeter.ingest(make_event(tenant="acme", credits=123.45, time=NOW - timedelta(hours=2), user="Jane Doe"))
    await call_tool(server_url, "get_credit_usage_summary")
    await call_tool(server_url, "get_credit_events", headers={"X-Tenant-Name": "acme", "X-User-UserRole": "user"})
    await call_tool(server_url, "get_credit_events", {"from_date": "not a date"})

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ai_credit_usage.audit"]
    assert [(line["tool"], line["outcome"]) for line in lines] == [
        ("get_credit_usage_summary", "ok"),
        ("get_credit_events", "refused"),
        ("get_credit_events", "invalid"),  # a date the caller can fix: not a server error
    ]
    ok = lines[0]
    assert ok["tenant"] == "acme"
    assert ok["role"] == "admin"
    assert (ok["window_from"], ok["window_to"]) == ("2026-01-13T12:00:00Z", "2026-01-20T12:00:00Z")
    assert ok["rows"] == 1
    assert ok["bytes"] > 1000
    assert ok["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ok["time"])
    assert lines[2]["reason"] == "WindowError"
    audit_text = "\n".join(r.getMessage() for r in caplog.records if r.name == "ai_credit_usage.audit")
    assert "Jane Doe" not in audit_text
    assert "123.45" not in audit_text


@pytest.mark.parametrize("api", ["v1", "v3"])
def test_the_soak_script_runs_and_finds_no_leak(capsys: pytest.CaptureFixture[str], api: str) -> None:
    """A small soak, so the script cannot rot: it exits non-zero on any cross-tenant row or wrong total. In this
    process (its own servers, its own stand-in): what the script does, without paying for a second interpreter. On
    v3 too: the one resilience run on both APIs (faults on POST queries and cursor pages)."""
    from scripts.soak import main as soak

    options = "--clients 4 --calls 12 --tenants 3 --events-per-tenant 120 --fault-every 5 --latency 0 --max-seconds 120"
    returncode = soak([*options.split(), "--api", api])
    out = capsys.readouterr()
    result = subprocess.CompletedProcess([], returncode, out.out, out.err)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "calls made        12 of 12" in result.stdout
    assert "cross-tenant rows 0 in answers, 0 in workbooks" in result.stdout
    assert "workbooks         12 of 12 linked downloaded and read, 0 not downloadable" in result.stdout
    assert "wrong totals      0" in result.stdout
    # Read before shutdown empties the store: one live link per call.
    assert re.search(r"download store    12 live links, [\d.]+ MB at the end; peak 12 links", result.stdout)


def test_the_soak_workbook_check_counts_another_tenants_rows() -> None:
    import io

    from openpyxl import Workbook

    from scripts.soak import foreign_workbook_rows

    workbook = Workbook()
    data = workbook.active
    data.title = "Data"
    for row in [("user", "tenant", "credits"), ("u1", "acme", 1.0), ("u2", "globex", 2.0), ("u3", "acme", 3.0)]:
        data.append(row)
    content = io.BytesIO()
    workbook.save(content)
    assert foreign_workbook_rows(content.getvalue(), "acme") == 1
    assert foreign_workbook_rows(content.getvalue(), "globex") == 2


async def test_line_breaks_in_a_tenant_name_cannot_escape(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    """HTTP cannot carry CR/LF in a header, but TENANT_OVERRIDE can: the name stays data in the filter and text."""
    tenant = 'acme\r\n| evil | row |\n"},{"$ne":"'
    url = start_server(tenant_override=tenant, role_override="admin")
    openmeter.ingest(make_event(tenant="acme", credits=5, time=NOW - timedelta(hours=1), user="acme-user"))
    result = await call_tool(url, "get_credit_usage_summary", headers={})
    text = text_of(result)
    assert "Total credits: 0.00" in text
    assert "acme-user" not in text
    assert "| evil | row |" not in text
    assert text.splitlines()[0].startswith("Tenant acme<br>\\| evil \\| row \\|<br>")
    queries = openmeter.requests_to(QUERY)
    assert len(queries) == 2  # the window and the preceding one
    for query in queries:
        assert json.loads(query.param("advancedMeterGroupByFilters")) == {"tenant": {"$eq": tenant}}


def test_the_bench_writer_comparison_runs() -> None:
    """scripts/bench.py takes half an hour at full size: its parts must not rot between runs."""
    from scripts.bench import percentile, writer_ratio

    figures = writer_ratio(200)
    assert figures["xlsx_bytes"] > 5000
    assert figures["csv_s"] > 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


UNREADABLE = "OpenMeter sent an answer that could not be read; try again, and report it if it persists."
DEEP_JSON = b"[" * 200_000 + b"]" * 200_000  # deeper than Python's parser can go: RecursionError, not ValueError


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"this is not gzip", {"Content-Encoding": "gzip"}, id="gzip-that-is-not"),
        pytest.param(DEEP_JSON, {}, id="json-200k-deep"),
        pytest.param(b'{"data": [{"value": "x"', {}, id="cut-json"),
    ],
)
async def test_a_body_that_cannot_be_decoded_is_the_unreadable_sentence(
    server_url: str, openmeter: OpenMeterStandIn, body: bytes, headers: dict[str, str]
) -> None:
    openmeter.fail(
        status=200, body=body, headers=headers, content_type="application/json", times=100, path_prefix=QUERY
    )
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert text_of(result) == UNREADABLE
    assert requests_to(openmeter, QUERY, DEFAULT_START) == 1  # not retried


async def test_an_error_status_with_a_body_too_deep_to_parse_keeps_its_sentence(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    openmeter.fail(status=503, body=DEEP_JSON, content_type="application/problem+json", times=100, path_prefix=QUERY)
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert text_of(result) == "OpenMeter had an internal error (HTTP 503); try again in a few minutes."


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"groupBy": ["tenant", "user"]}, id="groupBy-list"),
        pytest.param({"groupBy": {"tenant": 5}}, id="groupBy-value-number"),
        pytest.param({"valueProperty": 5}, id="valueProperty-number"),
        pytest.param({"eventType": ["ai_credits"]}, id="eventType-list"),
        pytest.param({"aggregation": None}, id="aggregation-null"),
    ],
)
async def test_a_meter_definition_of_the_wrong_shape_is_the_unreadable_sentence(
    server_url: str, openmeter: OpenMeterStandIn, change: dict[str, object]
) -> None:
    meter = {**AI_CREDITS_METER, **change}
    openmeter.fail(
        status=200, body=json.dumps(meter).encode(), content_type="application/json", path_prefix="/api/v1/meters"
    )
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert text_of(result) == UNREADABLE


async def test_a_redirect_names_the_setting_to_check(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.fail(status=301, body=b"", headers={"Location": "https://openmeter.example/"}, path_prefix="/api")
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert text_of(result) == "OpenMeter answered with a redirect (HTTP 301); ask the operator to check OPENMETER_URL."


async def test_a_request_that_cannot_be_built_is_a_clear_sentence(openmeter_url: str) -> None:
    client = v1_client(openmeter_url)
    try:
        with pytest.raises(UserFacingError) as raised:  # httpx2.InvalidURL is not an httpx2.HTTPError
            await client.query(AI_METER, AggregateQuery(Window(NOW - timedelta(days=1), NOW), (), "y" * 70_000))
    finally:
        await client.aclose()
    assert str(raised.value) == (
        "The credits server could not build its request to OpenMeter; this is a fault in the credits server, "
        "please report it to the operator."
    )


async def test_a_subject_too_long_for_any_url_is_a_clear_sentence(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        make_event(tenant="acme", credits=1, time=NOW - timedelta(hours=1), user="u" * MAX_QUERY_BYTES),
        make_event(tenant="acme", credits=2, time=NOW - timedelta(hours=1), user="short"),
    )
    result = await call_tool(server_url, "get_credit_events")
    assert text_of(result) == (
        "One of the names OpenMeter files your tenant's usage under (its subject) is 6,005 characters long, too "
        "long to ask OpenMeter for its events; the credit totals and the summary still work, and the operator "
        "should check how usage is reported to OpenMeter."
    )
    assert openmeter.requests_to(EVENTS) == []
    assert "| acme | 3.00 |" in text_of(await call_tool(server_url, "get_credit_usage_by_tenant"))


async def test_the_warning_line_carries_openmeters_request_id(
    server_url: str, openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    problem = {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "clickhouse down"}
    for instance in ("urn:request:om-7f3a9c", "forged\nWARNING injected line"):
        openmeter.fail(status=503, body=json.dumps({**problem, "instance": instance}).encode(), path_prefix=QUERY)
    await call_tool(server_url, "get_credit_usage_by_tenant")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "-> 503" in r.getMessage()]
    assert len(lines) == 2
    assert "clickhouse down" in lines[0]
    assert "(request 'urn:request:om-7f3a9c')" in lines[0]
    assert "\n" not in lines[1]  # OpenMeter's text cannot forge a log line
    assert API_KEY not in caplog.text


async def test_an_api_key_with_a_trailing_newline_still_works(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    """Keys pasted from a secret file often end in a newline, which no HTTP header may carry."""
    url = start_server(openmeter_api_key=API_KEY + "\n")
    result = await call_tool(url, "get_credit_usage_by_tenant")
    assert not result.is_error, text_of(result)
