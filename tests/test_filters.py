"""Filters, breakdowns and the top of every dimension (issue 21), end to end on both OpenMeter APIs: every meter
query of a filtered call carries the filter, answers narrow exactly, a filter that matches nothing names the closest
values of the caller's tenant only, hostile values stay data, and the summary's group_by and top 5s are exact.

One server per API over one data set for the whole module (the data is only read), as test_api_parity does."""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from ai_credit_usage.answers.render import escape_cell
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.questions import filters
from ai_credit_usage.questions.filters import FilterError, Filters, nearest, parse_filters
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.window import Window
from tests.conftest import (
    API_KEY,
    FAST_RETRY,
    NOW,
    SETTINGS_VARIABLES,
    FakeClock,
    ServerStarter,
    call_tool,
    on_both_apis,
    text_of,
    v1_client,
    v3_client,
)
from tests.sent import SentQuery, meter_queries
from tests.servers import serve_in_thread

pytestmark = pytest.mark.anyio
WINDOW = {"from_date": "2026-01-13", "to_date": "2026-01-19"}
FIRST_LINE = "2026-01-13T00:00:00Z to 2026-01-20T00:00:00Z (end exclusive)"
ALICE = "alice@acme.example"
# Users of acme whose names look like operators, patterns and lists; each used a distinct power of two.
HOSTILE = {"*": 1, "%": 2, "a,b": 4, "[x]": 8, 'q"uote': 16, '{"$ne": ""}': 32, "alice@acme.example ": 64}
TOOLS = [
    ("get_credit_usage_by_tenant", WINDOW),
    ("get_credit_usage_summary", WINDOW),
    ("get_credit_usage_summary", {**WINDOW, "group_by": ["module"]}),
    ("get_credit_events", WINDOW),
    ("get_credit_usage_trend", WINDOW),
    ("get_credit_usage_trend", {**WINDOW, "group_by": "module", "granularity": "week"}),
    ("get_credit_forecast", {}),
]


def events() -> list[dict[str, Any]]:
    start = datetime(2026, 1, 13, 1, tzinfo=UTC)
    found = []
    for day in range(7):
        when = start + timedelta(days=day)
        found += [
            make_event(tenant="acme", credits=10.1, time=when, user=ALICE, module="chat", product="p1", skill="s1"),
            make_event(tenant="acme", credits=0.2, time=when, user=ALICE, module="search", product="p2", skill="s2"),
            make_event(tenant="acme", credits=7, time=when, user="bob@acme.example", module="chat", skill="s3"),
            make_event(tenant="acme", credits=3.3, time=when, user="carol@acme.example", module="code", product="p3"),
            make_event(tenant="globex", credits=100, time=when, user="mallory@globex.example", module="chat"),
        ]
    for name, credits in HOSTILE.items():
        found.append(make_event(tenant="acme", credits=credits, time=start + timedelta(hours=5), user=name))
    # Three weeks of history before the window, for the comparison and the forecast.
    for day in range(1, 22):
        found.append(make_event(tenant="acme", credits=5, time=start - timedelta(days=day), user=ALICE))
    return found


@contextlib.contextmanager
def server_on(api: str) -> Iterator[tuple[str, OpenMeterStandIn]]:
    standin = OpenMeterStandIn(api_key=API_KEY, api=api, meters=[AI_CREDITS_METER])
    standin.ingest(*events(), ingested_at=NOW)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(standin.app)) + standin.base_path
        yield ServerStarter(stack, url, FakeClock(NOW))(), standin


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[str, OpenMeterStandIn]]]:
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: clean the environment here, not per test
        for name in SETTINGS_VARIABLES:
            patch.delenv(name, raising=False)
        with server_on("v1") as v1, server_on("v3") as v3:
            yield {"v1": v1, "v3": v3}


both = pytest.mark.parametrize("which", ["v1", "v3"])


async def ask(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, tool: str, arguments: dict[str, Any]
) -> tuple[str, dict[str, Any], list[SentQuery], bool]:
    """The text, the structured result, the meter queries this call made, and whether it was an error."""
    url, standin = servers[which]
    before = len(meter_queries(standin))
    result = await call_tool(url, tool, arguments)
    return text_of(result), result.structured_content or {}, meter_queries(standin)[before:], result.is_error


def workbook(servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, text: str) -> tuple[str, Any]:
    url = servers[which][0]
    match = re.search(r"\]\(http://localhost:8765(/download/[\w-]+)\)", text)
    assert match, text
    response = httpx2.get(url + match.group(1))
    return response.headers["content-disposition"], load_workbook(io.BytesIO(response.content))


@both
@pytest.mark.parametrize(("tool", "arguments"), TOOLS)
async def test_every_meter_query_of_a_filtered_call_carries_the_filter(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, tool: str, arguments: dict[str, Any]
) -> None:
    _, _, unfiltered, _ = await ask(servers, which, tool, arguments)
    text, result, sent, error = await ask(servers, which, tool, {**arguments, "user": f"  {ALICE}\t"})
    assert not error, text
    # The main query, the preceding window's, the per-combination one behind the top 5s, the forecast's history,
    # the events' subjects: each narrowed to the tenant and the user, and no more of them than without the filter.
    assert sent and len(sent) == len(unfiltered)
    assert all(query.tenant_filter == {"eq": "acme"} and query.narrowed_to == {"user": ALICE} for query in sent)
    assert text.splitlines()[0].startswith(f"Tenant acme, user {ALICE}, ")
    assert result["filters"] == {"user": ALICE} and result["no_match"] is None
    disposition, book = workbook(servers, which, text)
    assert "_acme_user-alice_acme.example_" in disposition
    facts = {row[0]: row[1] for row in book["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert facts["Only user"] == ALICE
    about = {row[0]: row[1] for row in book["About"].iter_rows(values_only=True) if row and row[0]}
    assert ALICE in about["filters"]
    if tool == "get_credit_events":
        assert {row["user"] for row in result["rows"]} == {ALICE}
        assert result["row_count"] == 14  # matching rows only
    if tool == "get_credit_usage_by_tenant":
        assert result["total_credits"] == 72.1  # 7 x 10.3, and the 64 of "alice@acme.example " is someone else
        assert result["rows"] == [{"tenant": "acme", "credits": 72.1}]
        assert result["comparison"]["previous_credits"] == 35  # alice's own preceding week


@both
async def test_several_filters_narrow_together(servers: dict[str, tuple[str, OpenMeterStandIn]], which: str) -> None:
    arguments = {**WINDOW, "user": ALICE, "module": "search"}
    text, result, sent, error = await ask(servers, which, "get_credit_usage_by_tenant", arguments)
    assert not error, text
    assert all(query.narrowed_to == {"user": ALICE, "module": "search"} for query in sent)
    assert result["total_credits"] == 1.4
    assert text.splitlines()[0].startswith(f"Tenant acme, user {ALICE}, module search, ")


@both
@pytest.mark.parametrize(("tool", "arguments"), TOOLS)
async def test_a_filter_that_matches_nothing_names_the_closest_values_of_the_tenant(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, tool: str, arguments: dict[str, Any]
) -> None:
    _, _, matched, _ = await ask(servers, which, tool, {**arguments, "user": ALICE})
    text, result, sent, error = await ask(servers, which, tool, {**arguments, "user": "ALICE@acme.example"})
    assert not error, text  # not an error: an answer that says so
    found = result["no_match"]
    assert found["dimension"] == "user" and found["value"] == "ALICE@acme.example"
    assert found["closest"][0] == ALICE and len(found["closest"]) == 5  # equal ignoring case comes first
    assert found["message"] in text and "No usage for user 'ALICE@acme.example' from " in text
    # One more query, only on this path: grouped by user, without the user filter, inside the tenant.
    assert len(sent) == len(matched) + 1
    (extra,) = [query for query in sent if not query.narrowed_to]
    assert extra.tenant_filter == {"eq": "acme"} and "user" in extra.group_by
    assert "ALICE@acme.example" not in str(
        result.get("rows") or result.get("days")
    )  # named back, never shown as the tenant's data


@both
async def test_another_tenants_user_is_simply_not_found(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    text, result, _, error = await ask(servers, which, "get_credit_usage_summary", {**WINDOW, "user": "mallory"})
    assert not error, text
    assert result["total_credits"] == 0 and result["rows"] == []
    closest = result["no_match"]["closest"]
    assert len(closest) == 5 and not any("globex" in name for name in closest)  # no cut-off, only acme's
    assert "globex" not in text


@both
async def test_hostile_values_are_matched_literally(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    for name, credits in HOSTILE.items():
        text, result, sent, error = await ask(servers, which, "get_credit_usage_by_tenant", {**WINDOW, "user": name})
        assert not error, text
        if name.strip() != name:  # trimmed, as the tenant header is: then it is alice
            assert result["total_credits"] == 72.1
            continue
        assert result["total_credits"] == credits, name
        assert all(query.narrowed_to == {"user": name} for query in sent)


@both
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"$ne": ""}, "user must be text"),
        (["alice"], "user must be text"),
        ("ali\x00ce", "user 'ali\\x00ce' contains a control character"),
        ("line\nbreak", "contains a control character"),
        ("x" * 10_000, "is 10,000 characters long"),
    ],
)
async def test_values_no_name_can_have_are_refused_with_one_sentence(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, value: Any, says: str
) -> None:
    text, _, sent, error = await ask(servers, which, "get_credit_usage_by_tenant", {"user": value})
    assert error and says in text and text.count(". ") == 0 and len(text) < 300
    assert not sent  # refused before OpenMeter is asked


@both
async def test_a_blank_filter_is_no_filter(servers: dict[str, tuple[str, OpenMeterStandIn]], which: str) -> None:
    plain, plain_result, _, _ = await ask(servers, which, "get_credit_usage_by_tenant", WINDOW)
    text, result, sent, _ = await ask(servers, which, "get_credit_usage_by_tenant", {**WINDOW, "user": "   "})
    assert result["total_credits"] == plain_result["total_credits"]
    assert result["filters"] == {} and not any(query.narrowed_to for query in sent)
    assert text.splitlines()[0] == plain.splitlines()[0] == f"Tenant acme, {FIRST_LINE}:"


@both
async def test_group_by_module_gives_one_row_per_module_and_still_every_top(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    text, result, _, error = await ask(servers, which, "get_credit_usage_summary", {**WINDOW, "group_by": ["module"]})
    assert not error, text
    assert result["columns"] == ["module", "tenant", "credits"]
    rows = [(row["module"], row["credits"]) for row in result["rows"]]
    assert rows == [("chat", 246.7), ("code", 23.1), ("search", 1.4)]  # largest first, exact
    assert all(row["user"] is None and row["skill"] is None for row in result["rows"])
    tops = result["tops"]
    assert set(tops) == {"user", "module", "product", "skill"}
    # A dimension that is a column and a running total is counted once: its sums add up to the total.
    assert math.fsum(top["credits"] for top in tops["module"]) == pytest.approx(result["total_credits"])
    assert tops["module"][0] == {"name": "chat", "credits": 246.7, "share": pytest.approx(246.7 / 271.2)}
    assert tops["user"][0]["name"] == ALICE and tops["user"][0]["credits"] == 72.1
    assert f"Top users: {ALICE} 72.10 (26.6%);" in text
    assert (
        "Top products:" in text
        and "Top skills:" in text
        and "Top modules: chat 246.70 (91.0%); code 23.10 (8.5%); search 1.40 (0.5%)." in text
    )
    assert result["total_credits"] == 271.2
    _, book = workbook(servers, which, text)
    about = {row[0]: row[1] for row in book["About"].iter_rows(values_only=True) if row and row[0]}
    assert about["a row"].startswith("one combination of module and tenant that used credits")


@both
async def test_the_default_summary_names_the_top_skill_exactly(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    text, result, _, _ = await ask(servers, which, "get_credit_usage_summary", WINDOW)
    assert result["columns"] == ["user", "module", "product", "tenant", "skill", "credits"]
    assert result["tops"]["skill"][0]["name"] == "s1"
    assert result["tops"]["skill"][0]["credits"] == 220.8  # alice's chat, carol's code, the hostile users' events
    assert "Top skills: s1 220.80 (81.4%); s3 49.00 (18.1%); s2 1.40 (0.5%)." in text


@both
@pytest.mark.parametrize("group_by", [["tenant"], "module", ["module", 3]])
async def test_group_by_takes_only_a_list_of_dimensions(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, group_by: Any
) -> None:
    text, _, _, error = await ask(servers, which, "get_credit_usage_summary", {"group_by": group_by})
    assert error and text.startswith("group_by must be a list of user, module, product and skill")


@on_both_apis
async def test_the_event_cap_counts_only_matching_rows(
    start_server: ServerStarter, openmeter: OpenMeterStandIn
) -> None:
    start = datetime(2026, 1, 19, tzinfo=UTC)
    openmeter.ingest(
        *[make_event(tenant="acme", credits=1, time=start + timedelta(minutes=i), user=f"u{i % 10}") for i in range(50)]
    )
    url = start_server(max_event_rows=10)
    day = {"from_date": "2026-01-19", "to_date": "2026-01-19"}
    assert (await call_tool(url, "get_credit_events", day)).is_error
    result = await call_tool(url, "get_credit_events", {**day, "user": "u3"})
    assert not result.is_error and (result.structured_content or {})["row_count"] == 5


def test_nearest_values_rank_case_then_prefix_then_substring_then_distance() -> None:
    names = ["alice@acme.example", "Alice", "alicia", "malice", "bob", "carol", "dave"]
    assert nearest("alice", names) == ["Alice", "alice@acme.example", "malice", "alicia", "dave"]
    assert len(nearest("zzzz", names)) == 5  # no cut-off
    assert nearest("x", []) == []


def test_parse_filters_trims_and_refuses_what_no_name_can_be() -> None:
    assert parse_filters({"user": "  a ", "module": " ", "skill": None}) == Filters(user="a")
    assert not parse_filters({})
    with pytest.raises(FilterError, match=r"^skill 'x\\x7f' contains a control character"):
        parse_filters({"skill": "x\x7f"})
    with pytest.raises(FilterError, match="module 'ééé"):
        parse_filters({"module": "é" * 200})  # 400 bytes in UTF-8


# A filtered answer is always part of the tenant's unfiltered one, on both APIs, whatever the names.
NAMES = st.sampled_from(["alice", "Alice", "bob", "*", "%", "a,b", "[x]", '"', "{}", "é"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.sampled_from(["acme", "globex"]), NAMES, NAMES, st.integers(1, 50)), max_size=25),
    user=NAMES,
    module=st.none() | NAMES,
    api=st.sampled_from(["v1", "v3"]),
)
def test_a_filtered_summary_is_part_of_the_unfiltered_one(
    rows: list[tuple[str, str, str, int]], user: str, module: str | None, api: str
) -> None:
    standin = OpenMeterStandIn(api_key=API_KEY, api=api, meters=[AI_CREDITS_METER])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    standin.ingest(
        *[
            make_event(tenant=t, credits=c, time=start + timedelta(hours=i), user=u, module=m)
            for i, (t, u, m, c) in enumerate(rows)
        ],
        ingested_at=NOW,
    )
    window = Window(start, start + timedelta(days=7))

    async def both_answers() -> tuple[TableSink, TableSink]:
        make = v3_client if api == "v3" else v1_client
        transport = httpx2.ASGITransport(app=standin.app)
        client = make("http://openmeter.test" + standin.base_path, retry=FAST_RETRY, transport=transport)
        service = UsageService(client, "ai_credits", max_event_rows=10**6)
        try:
            whole, part = TableSink(), TableSink()
            await service.summary("acme", Query(window), whole)
            await service.summary("acme", Query(window, filters=Filters(user=user, module=module)), part)
            return whole, part
        finally:
            await service.aclose()
            await client.aclose()

    whole, part = anyio.run(both_answers)
    kept = [row for row in whole.preview_rows if row[0] == user and (module is None or row[1] == module)]
    assert sorted(part.preview_rows) == sorted(kept)
    expected = math.fsum(c for t, u, m, c in rows if t == "acme" and u == user and module in (None, m))
    assert part.total_credits == expected
    assert all(row[3] == "acme" for row in part.preview_rows)  # another tenant's user is simply not found


@both
async def test_group_by_sent_as_json_text_and_a_filter_that_looks_like_json_stay_what_they_say(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    arguments = {**WINDOW, "group_by": '["module"]', "user": "null"}
    text, result, sent, error = await ask(servers, which, "get_credit_usage_summary", arguments)
    assert not error, text
    assert result["columns"] == ["module", "tenant", "credits"]
    assert result["filters"] == {"user": "null"} and result["no_match"]["value"] == "null"  # text, not JSON null
    assert all(query.narrowed_to == {"user": "null"} for query in sent if query.narrowed_to)


def test_the_no_match_sentence_keeps_each_name_apart() -> None:
    from ai_credit_usage.questions.filters import no_match

    found = no_match(Filters(user="ab"), "A", "B", {"user": ["a,b", "abc", " ab", "zzz"]})
    assert (
        found.sentence() == "No usage for user 'ab' from A to B; users with usage then include abc, ' ab', 'a,b', zzz."
    )
    assert no_match(Filters(user="x"), "A", "B", {"user": []}).sentence() == (
        "No usage for user 'x' from A to B; no user has usage in this tenant then."
    )
    both = no_match(Filters(user="a", module="m"), "A", "B", {"user": ["a"], "module": ["m"]})
    assert both.dimension is None
    assert (
        both.sentence() == "No usage for user 'a' with module 'm' from A to B; each has usage then, but not together."
    )


def test_a_closest_name_longer_than_any_filter_is_cut_in_the_sentence() -> None:
    # A dimension value may be far longer than a filter can be (MAX_FILTER_BYTES): the answer's text stays in budget.
    from ai_credit_usage.questions.filters import MAX_FILTER_BYTES, no_match

    found = no_match(Filters(user="x"), "A", "B", {"user": ["x" * 100_000, "y, z" * 50_000]})
    sentence = found.sentence()
    assert len(sentence) < 3 * MAX_FILTER_BYTES
    assert f"include {'x' * (MAX_FILTER_BYTES - 1)}…, 'y, z" in sentence


async def test_ranking_the_closest_names_never_holds_up_other_calls(
    server_url: str, openmeter: OpenMeterStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking a value that matched nothing is CPU work: an edit distance per name of the tenant (about 1 s for
    2,000 names and a long value, growing with the tenant). On the event loop it held up every other tenant's calls
    and /health until it was done; off it, the server answers meanwhile. The ranking here waits until /health has
    answered (at most 10 s): on the loop, /health could not answer first."""
    openmeter.ingest(make_event(tenant="acme", credits=1, time=NOW - timedelta(hours=1), user=ALICE))
    ranking, release = threading.Event(), threading.Event()
    measured = filters.edit_distance

    def held_up(a: str, b: str) -> int:
        ranking.set()
        release.wait(10)
        return measured(a, b)

    monkeypatch.setattr(filters, "edit_distance", held_up)
    async with anyio.create_task_group() as calls, httpx2.AsyncClient(timeout=3) as http:
        answer: list[str] = []

        async def miss() -> None:
            answer.append(text_of(await call_tool(server_url, "get_credit_usage_summary", {"user": "bob"})))

        calls.start_soon(miss)
        assert await anyio.to_thread.run_sync(ranking.wait, 10)
        try:
            health = await http.get(f"{server_url}/health")
        finally:
            release.set()
    assert health.status_code == 200
    assert f"users with usage then include {ALICE}." in answer[0]


@both
@pytest.mark.parametrize(
    "tool", ["get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events", "get_credit_forecast"]
)
async def test_hostile_tenant_and_filter_values_stay_text_in_the_workbook_and_its_file_name(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str, tool: str
) -> None:
    """Filter values are echoed on the Summary and About sheets and in the file name, the tenant too: a formula
    stays a string cell, and nothing of either can end the Content-Disposition value or add a parameter to it."""
    tenant = "acme\"; filename*=UTF-8''evil.exe; x=\""
    formulas = {"user": '=HYPERLINK("https://attacker.example","open")', "module": "@SUM(1+1)", "skill": "-2+3"}
    headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
    arguments = {**(WINDOW if tool != "get_credit_forecast" else {}), **formulas}
    result = await call_tool(servers[which][0], tool, arguments, headers=headers)
    assert not result.is_error, text_of(result)
    disposition, book = workbook(servers, which, text_of(result))
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+\.xlsx"', disposition), disposition
    assert "_user-HYPERLINK_https_attacker.example_open_" in disposition
    echoed = [
        cell
        for sheet in ("Summary", "About")
        for row in book[sheet].iter_rows()
        for cell in row
        if isinstance(cell.value, str) and any(value in cell.value for value in formulas.values())
    ]
    assert {value for value in formulas.values() if any(value == cell.value for cell in echoed)} == set(
        formulas.values()
    )
    assert all(cell.data_type == "s" for cell in echoed)


ACME_NAMES = (ALICE, "bob@acme.example", "carol@acme.example")  # the closest lists are checked whole


@both
async def test_no_tenant_name_or_filter_value_reaches_another_tenants_names(
    servers: dict[str, tuple[str, OpenMeterStandIn]], which: str
) -> None:
    """globex's administrator (and tenant names that look like globex or like several tenants) asks for acme's users
    by name, in other case, as a look-alike, as an operator or a list: nothing of acme in the answer, and the closest
    names suggested are the caller's tenant's own (mallory's), or none."""
    tenants = {"globex": ["mallory@globex.example"], "GLOBEX": [], "gl\u043ebex": [], "globex,acme": []}
    values = (ALICE, "alice@acme.example".upper(), "\u0430lice@acme.example", '{"$in": ["alice@acme.example"]}')
    tools = ("get_credit_usage_summary", "get_credit_events", "get_credit_usage_trend", "get_credit_forecast")
    url = servers[which][0]
    for tenant, closest in tenants.items():
        headers = httpx2.Headers({"X-Tenant-Name": tenant.encode(), "X-User-UserRole": b"admin"})
        for value in values:
            for tool in tools:
                result = await call_tool(url, tool, {"user": value}, headers=headers)
                text = text_of(result)
                assert not result.is_error, text
                assert result.structured_content is not None
                assert result.structured_content["no_match"]["closest"] == closest, (tenant, value, tool)
                named_back = text.replace(escape_cell(value), "").replace(value, "")  # the value itself, as asked
                assert not any(name in named_back for name in ACME_NAMES), text
