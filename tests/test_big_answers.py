"""Issue 6: parallel paging returns exactly the sequential walk, cost follows the tenant's own events, big
workbooks stream into a child process, and progress is reported. Timings live in scripts/bench.py, not here."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import re
import signal
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from multiprocessing import forkserver
from typing import Any

import anyio
import httpx2
import pytest
from openpyxl import load_workbook

from ai_credit_usage.answers.workbook_writer import WORKBOOK_FAILED, ProcessWorkbookWriter
from ai_credit_usage.openmeter.interface import sequential_event_pages
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.v1 import OpenMeterV1
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.window import Window
from tests.conftest import AI_METER, FAST_RETRY, CollectingSink, ServerStarter, call_tool, text_of, v1_client

pytestmark = pytest.mark.anyio
START = datetime(2026, 1, 15, tzinfo=UTC)
WINDOW = Window(START, START + timedelta(seconds=1000))


@pytest.fixture
async def client(openmeter_url: str) -> AsyncIterator[OpenMeterV1]:
    client = v1_client(openmeter_url, retry=FAST_RETRY)
    yield client
    await client.aclose()


async def events_of(client: OpenMeterV1, tenant: str, window: Window = WINDOW, **options: int) -> list[tuple]:
    sink = CollectingSink()
    service = UsageService(client, "ai_credits", max_event_rows=10**6, **options)
    await service.events(tenant, Query(window), sink)
    assert sink.row_count == len(sink.rows)
    return sink.rows


async def naive_walk(client: OpenMeterV1, tenant: str, window: Window = WINDOW) -> list[tuple]:
    """The straightforward way: one cursor over every event of the type, filtered here."""
    rows = []
    async for page in sequential_event_pages(client, AI_METER, window):
        for event in page:
            data = event.data
            if data["tenant"] == tenant:
                rows.append((event.time, data["user"], data["module"], data["product"], tenant, float(data["credits"])))
    return rows


def time_filters(openmeter: OpenMeterStandIn) -> set[str]:
    return {str(r.param("filter")).split('"time"')[1] for r in openmeter.requests_to("/api/v2/events")}


async def test_parallel_slices_return_exactly_the_sequential_walk(
    client: OpenMeterV1, openmeter: OpenMeterStandIn
) -> None:
    # Three acme events in every second of the window (so every slice boundary falls on occupied seconds, with
    # identical timestamps on both sides of it), interleaved with another tenant's.
    events = []
    for second in range(1000):
        at = START + timedelta(seconds=second)
        events += [
            make_event(tenant="acme", credits=second + k / 10, time=at, user=f"u{(second + k) % 7}") for k in range(3)
        ]
        events.append(make_event(tenant="globex", credits=1, time=at, user="g"))
    openmeter.ingest(*events)

    reference = await naive_walk(client, "acme")
    sequential = await events_of(client, "acme", max_slices=1)
    parallel = await events_of(client, "acme", parallel_slices=4)

    assert len(reference) == 3000
    assert sequential == reference
    assert parallel == reference
    assert len(time_filters(openmeter)) > 3  # the parallel walk really did slice the window


async def test_many_subjects_are_chunked_and_still_complete(client: OpenMeterV1, openmeter: OpenMeterStandIn) -> None:
    events = [
        make_event(tenant="acme", credits=1 + i % 5, time=START + timedelta(seconds=i % 997), user=f"user{i % 130}")
        for i in range(2600)
    ]
    events += [
        make_event(tenant="globex", credits=9, time=START + timedelta(seconds=i), user="user1") for i in range(300)
    ]  # shares a subject with acme: the tenant check still drops these
    openmeter.ingest(*events)

    reference = await naive_walk(client, "acme")
    parallel = await events_of(client, "acme", parallel_slices=4)
    assert sorted(parallel) == sorted(reference)
    assert [row[0] for row in parallel] == sorted((row[0] for row in parallel), reverse=True)
    assert {row[4] for row in parallel} == {"acme"}
    filters = [json.loads(str(r.param("filter"))) for r in openmeter.requests_to("/api/v2/events")]
    subject_filters = {tuple(f["subject"]["$in"]) for f in filters if "subject" in f}
    assert len(subject_filters) == 3  # 130 subjects in chunks of 50


async def test_one_tenants_call_reads_about_its_own_events(client: OpenMeterV1, openmeter: OpenMeterStandIn) -> None:
    week = Window(START, START + timedelta(days=7))
    for tenant_index in range(20):
        tenant = f"tenant{tenant_index:02d}"
        openmeter.ingest(
            *[
                make_event(
                    tenant=tenant,
                    credits=1,
                    time=START + timedelta(seconds=600 * i + tenant_index),
                    user=f"{tenant}-u{i % 12}",
                )
                for i in range(1000)
            ]
        )
    rows = await events_of(client, "tenant07", week, parallel_slices=4)
    assert len(rows) == 1000
    pages = len(openmeter.requests_to("/api/v2/events"))
    assert pages <= 1.2 * 1000 / 100 + 1  # +1: the first page, which only sizes the slices
    queries = openmeter.requests_to("/query")
    assert sorted(query.params("groupBy") for query in queries) == [["subject"], ["tenant", "user"]]  # + comparison


async def test_no_subjects_means_no_event_pages(client: OpenMeterV1, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(make_event(tenant="globex", credits=1, time=START))
    assert await events_of(client, "acme") == []
    assert openmeter.requests_to("/api/v2/events") == []


def download(url: str, text: str) -> list[tuple]:
    match = re.search(r"(/download/[\w-]+)", text)
    assert match, text
    workbook = load_workbook(io.BytesIO(httpx2.get(url + match.group(1)).content))
    return list(workbook["Data"].iter_rows(values_only=True))


@pytest.fixture
def temporary_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """Where this process's temporary files go (a workbook process's own directory is made here)."""
    # The forkserver starts first, with its socket in the usual temporary directory: started here, the socket's
    # path under xdist's tmp_path can pass the 107 bytes AF_UNIX allows (CI hit it).
    forkserver.ensure_running()
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def leftovers(directory: Any) -> list[str]:
    """What is left in the temporary directory, besides the forkserver's socket directory if it started here."""
    return [path.name for path in directory.iterdir() if not path.name.startswith("pymp-")]


def signal_workbook_process_before(monkeypatch: pytest.MonkeyPatch, method: str, signum: int) -> list[int]:
    """Signal the workbook process just before the server's next `ProcessWorkbookWriter.<method>` call."""
    signalled: list[int] = []
    original = getattr(ProcessWorkbookWriter, method)

    async def signal_then_call(self: ProcessWorkbookWriter, *args: Any) -> Any:
        if not signalled:
            (child,) = multiprocessing.active_children()
            os.kill(child.pid, signum)
            if signum == signal.SIGKILL:
                child.join()
            signalled.append(signum)
        return await original(self, *args)

    monkeypatch.setattr(ProcessWorkbookWriter, method, signal_then_call)
    return signalled


@pytest.mark.parametrize("moment", ["append", "finish"])
async def test_a_killed_workbook_process_is_a_clear_error(
    start_server: ServerStarter,
    openmeter: OpenMeterStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    temporary_directory: Any,
    moment: str,
) -> None:
    openmeter.ingest(*[make_event(tenant="acme", credits=1, time=START + timedelta(seconds=i)) for i in range(900)])
    url = start_server(workbook_process_rows=100)
    killed = signal_workbook_process_before(monkeypatch, moment, signal.SIGKILL)  # as the OOM killer would
    with caplog.at_level(logging.WARNING, logger="ai_credit_usage.answers.workbook_writer"):
        result = await call_tool(url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    assert killed
    assert result.is_error
    assert text_of(result) == WORKBOOK_FAILED
    assert "the workbook process is gone" in caplog.text
    assert multiprocessing.active_children() == []
    assert leftovers(temporary_directory) == []


async def test_the_deadline_does_not_wait_for_a_stuck_workbook_process(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, monkeypatch: pytest.MonkeyPatch, temporary_directory: Any
) -> None:
    openmeter.ingest(*[make_event(tenant="acme", credits=1, time=START + timedelta(seconds=i)) for i in range(300)])
    url = start_server(workbook_process_rows=100, tool_deadline_seconds=3)
    stopped = signal_workbook_process_before(monkeypatch, "finish", signal.SIGSTOP)  # never answers "finish"
    with anyio.fail_after(60):  # only so that a regression fails instead of hanging; the deadline is 3 s
        result = await call_tool(url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    assert stopped
    assert result.is_error
    assert "took longer than 3 seconds" in text_of(result)
    assert multiprocessing.active_children() == []  # close() killed the stopped child
    assert leftovers(temporary_directory) == []


async def test_big_results_stream_into_a_workbook_process(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, temporary_directory: Any
) -> None:
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=i / 4, time=START + timedelta(seconds=i), user=f"=u{i % 9}")
            for i in range(900)
        ]
    )
    args = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    in_thread = download(url := start_server(), text_of(await call_tool(url, "get_credit_events", args)))
    streamed_url = start_server(workbook_process_rows=100)
    streamed = download(streamed_url, text_of(await call_tool(streamed_url, "get_credit_events", args)))
    assert len(streamed) == 901
    assert streamed == in_thread
    assert streamed[1][1] == "=u8"  # still text, never a formula
    assert multiprocessing.active_children() == []
    assert leftovers(temporary_directory) == []


async def test_a_failed_walk_leaves_no_process_no_files_and_no_download(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, temporary_directory: Any
) -> None:
    openmeter.ingest(*[make_event(tenant="acme", credits=1, time=START + timedelta(seconds=i)) for i in range(900)])
    url = start_server(workbook_process_rows=100)
    openmeter.fail(path_prefix="/api/v2/events", after=4, times=1000, status=500)
    result = await call_tool(url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    assert result.is_error
    assert "internal error (HTTP 500)" in text_of(result)
    assert multiprocessing.active_children() == []
    assert leftovers(temporary_directory) == []
    assert len(start_server.apps[url].state.downloads) == 0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_is_reported_when_asked_for(server_url: str, openmeter: OpenMeterStandIn, mode: str) -> None:
    """In the default stateless mode too (issue 16 F2): progress rides the call's own SSE response."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    openmeter.ingest(*[make_event(tenant="acme", credits=1, time=START + timedelta(seconds=i)) for i in range(450)])
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    headers = {"X-Tenant-Name": "acme", "X-User-UserRole": "admin"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{server_url}/mcp", http_client=http), mode=mode) as client,
    ):
        result = await client.call_tool(
            "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"}, progress_callback=on_progress
        )
    assert "Showing 50 of 450 rows" in text_of(result)
    assert len(updates) >= 3
    values = [value for value, _, _ in updates]
    assert values == sorted(set(values))  # strictly increasing, as MCP requires
    assert any("pages of events" in (message or "") for _, _, message in updates)
    assert "writing 450 rows" in (updates[-1][2] or "")


async def test_workbook_processes_are_capped_and_calls_beyond_the_cap_wait(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, monkeypatch: pytest.MonkeyPatch, temporary_directory: Any
) -> None:
    """Issue 16 F4: every big answer started its own child, with no cap (8 concurrent calls: 10 processes)."""
    tenants = ("acme", "globex", "initech")
    for tenant in tenants:
        openmeter.ingest(*[make_event(tenant=tenant, credits=1, time=START + timedelta(seconds=i)) for i in range(600)])
    url = start_server(workbook_process_rows=100, workbook_processes=1)
    alive_after_start: list[int] = []
    original = ProcessWorkbookWriter.start

    async def counting_start(*args: Any, **kwargs: Any) -> ProcessWorkbookWriter:
        writer = await original(*args, **kwargs)
        alive_after_start.append(len(multiprocessing.active_children()))
        return writer

    monkeypatch.setattr(ProcessWorkbookWriter, "start", counting_start)
    texts: dict[str, str] = {}

    async def ask(tenant: str) -> None:
        headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
        result = await call_tool(
            url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"}, headers=headers
        )
        assert not result.is_error, text_of(result)
        texts[tenant] = text_of(result)

    async with anyio.create_task_group() as group:
        for tenant in tenants:
            group.start_soon(ask, tenant)
    assert alive_after_start == [1, 1, 1]  # one child at a time; the others waited for it
    assert all(len(download(url, texts[tenant])) == 601 for tenant in tenants)
    assert multiprocessing.active_children() == []
    assert leftovers(temporary_directory) == []
