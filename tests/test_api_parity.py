"""The same events give the same answers on v1 and v3: every tool's text, structured result and workbook rows,
from two servers, one on each API's stand-in, over an awkward data set (float noise, numeric strings, values the
meter does not count, missing dimensions, more subjects than one events filter holds, a subject with a comma and
one with a blank at its end, ties within a second, days that differ in Paris and UTC)."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from openpyxl import load_workbook

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from tests.conftest import API_KEY, NOW, SETTINGS_VARIABLES, FakeClock, ServerStarter, call_tool
from tests.request_contract import sent_problems
from tests.servers import serve_in_thread

pytestmark = pytest.mark.anyio
START = datetime(2026, 1, 5, tzinfo=UTC)
WINDOW = {"from_date": "2026-01-05", "to_date": "2026-01-18"}
ASKED = [
    ("get_credit_usage_by_tenant", WINDOW),
    ("get_credit_usage_summary", WINDOW),
    ("get_credit_events", WINDOW),
    ("get_credit_usage_trend", WINDOW),
    ("get_credit_usage_trend", {**WINDOW, "granularity": "week", "group_by": "user", "time_zone": "Europe/Paris"}),
    ("get_credit_usage_trend", {"from_date": "2025-10-01", "to_date": "2026-01-19", "granularity": "month"}),
    ("get_credit_forecast", {"time_zone": "Europe/Paris"}),
    ("get_credit_usage_summary", {**WINDOW, "group_by": ["module", "skill"], "user": "user3"}),
    ("get_credit_events", {**WINDOW, "module": "search", "skill": "s2"}),
    ("get_credit_usage_by_tenant", {**WINDOW, "user": "User3"}),  # no match: the closest values
]


def awkward_events() -> list[dict[str, Any]]:
    events = []
    subjects = [f"svc-{i:02d}" for i in range(57)] + ["team, ops", "trailing "]
    for i in range(700):
        when = START + timedelta(minutes=27 * i)
        credits: Any = (0.1, 0.2, "0.7", 3, "n/a", None, 1e-7, "12.5")[i % 8]
        events.append(
            make_event(
                tenant="acme" if i % 5 else "globex",
                credits=credits,
                time=when,
                user=(f"user{i % 11}", None)[i % 13 == 0],
                module=("chat", "search", None)[i % 3],
                skill=f"s{i % 4}",
                subject=subjects[i % len(subjects)],
                id=f"e{i:04d}",
            )
        )
    events += [make_event(tenant="acme", credits=2, time=START + timedelta(hours=50), id=f"tie{i}") for i in range(5)]
    events.append(make_event(tenant="acme", credits=4, time=datetime(2025, 10, 20, tzinfo=UTC), id="old"))
    return events


@contextlib.contextmanager
def server_on(api: str, events: list[dict[str, Any]]) -> Iterator[tuple[str, OpenMeterStandIn]]:
    standin = OpenMeterStandIn(api_key=API_KEY, api=api, meters=[AI_CREDITS_METER])
    standin.ingest(*events, ingested_at=NOW)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(standin.app)) + standin.base_path
        yield ServerStarter(stack, url, FakeClock(NOW))(), standin
    assert not sent_problems(api, standin.requests)  # every request valid under its API's spec(s)


def answer(url: str, text: str, structured: Any) -> tuple[str, Any, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    match = re.search(r"\]\(http://localhost:8765(/download/[\w-]+)\)", text)
    assert match, text
    workbook = load_workbook(io.BytesIO(httpx2.get(url + match.group(1)).content))
    data = list(workbook["Data"].iter_rows(values_only=True))
    summary = list(workbook["Summary"].iter_rows(values_only=True))
    link_free = text.replace(match.group(1), "/download/<token>")
    if isinstance(structured, dict):
        structured = {**structured, "download_url": "<token>"}
    return link_free, structured, data, summary


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[str, OpenMeterStandIn]]]:
    events = awkward_events()
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: clean the environment here, not per test
        for name in SETTINGS_VARIABLES:
            patch.delenv(name, raising=False)
        with server_on("v1", events) as v1, server_on("v3", events) as v3:
            yield {"v1": v1, "v3": v3}


@pytest.mark.parametrize(("tool", "arguments"), ASKED)
async def test_both_apis_give_the_same_answer(
    servers: dict[str, tuple[str, OpenMeterStandIn]], tool: str, arguments: dict[str, str]
) -> None:
    answers = {}
    for api, (url, _) in servers.items():
        result = await call_tool(url, tool, arguments)
        text = "\n".join(block.text for block in result.content if block.type == "text")
        assert not result.is_error, text
        answers[api] = answer(url, text, result.structured_content)
    assert answers["v1"] == answers["v3"]
    text, structured, data, _ = answers["v3"]
    if structured.get("no_match"):  # the same closest values on both
        assert structured["no_match"]["closest"][0] == "user3"
        return
    assert len(data) >= 2 and "Total credits: 0.00" not in text  # a real answer, not two empty ones
    if tool == "get_credit_events":  # v3 asked for the subject with a comma on its own, the rest in lists of 50
        v3_pages = [r for r in servers["v3"][1].requests if r.path.endswith("/events")]
        assert "team, ops" in {r.param("filter[subject][eq]") for r in v3_pages}
        assert max(len((r.param("filter[subject][oeq]") or "").split(",")) for r in v3_pages) == 50
