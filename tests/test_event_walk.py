"""The events walk: adaptive time slices find a burst wherever it is and read it in parallel, the rows stay exactly
the sequential walk's, and subject filters are cut so that every request's URL stays short enough for a proxy.

OpenMeter is the stand-in, reached through `httpx2.ASGITransport` wrapped in a transport that only counts (the
network boundary), so concurrency is counted, not timed."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from ai_credit_usage.openmeter.interface import OpenMeter
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, RecordedRequest, make_event
from ai_credit_usage.openmeter.v1 import MAX_QUERY_BYTES
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.window import Window
from tests.conftest import FAST_RETRY, CollectingSink, on_both_apis, v1_client, v3_client
from tests.sent import SentPage, events_path, page_of

pytestmark = pytest.mark.anyio
START = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = Window(START, START + timedelta(days=28))


class CountingTransport(httpx2.AsyncBaseTransport):
    """The stand-in in process; counts the events requests in flight at once and keeps each one's raw query."""

    def __init__(self, openmeter: OpenMeterStandIn) -> None:
        self._inner = httpx2.ASGITransport(app=openmeter.app)
        self._api, self._path = openmeter.api, events_path(openmeter)
        self.in_flight = self.most_in_flight = 0
        self.queries: list[bytes] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != self._path:
            return await self._inner.handle_async_request(request)
        self.queries.append(request.url.query)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    def filters(self) -> list[dict[str, Any]]:
        """The v1 events filters (JSON)."""
        return [json.loads(httpx2.QueryParams(query.decode())["filter"]) for query in self.queries]

    def pages(self) -> list[SentPage]:
        """The events requests, read alike on either API."""
        items = [list(httpx2.QueryParams(query.decode()).multi_items()) for query in self.queries]
        return [page_of(self._api, RecordedRequest("GET", self._path, item, {})) for item in items]


@pytest.fixture
def transport(openmeter: OpenMeterStandIn) -> CountingTransport:
    return CountingTransport(openmeter)


@pytest.fixture
async def client(transport: CountingTransport, api: str) -> AsyncIterator[OpenMeter]:
    """The production client of the stand-in's API (v1 unless the test is marked `on_both_apis`)."""
    make = v3_client if api == "v3" else v1_client
    client = make("http://openmeter.test" + ("/api/v3" if api == "v3" else ""), retry=FAST_RETRY, transport=transport)
    yield client
    await client.aclose()


async def events_of(client: OpenMeter, window: Window, **options: int) -> list[tuple[Any, ...]]:
    sink = CollectingSink()
    service = UsageService(client, "ai_credits", max_event_rows=10**6, **options)
    await service.events("acme", Query(window), sink)
    assert sink.row_count == len(sink.rows)
    return sink.rows


def slices_seen(transport: CountingTransport) -> int:
    return len({(page.start, page.end) for page in transport.pages()})


@on_both_apis
async def test_a_burst_on_one_day_of_a_quiet_month_is_read_in_parallel(
    client: OpenMeter, openmeter: OpenMeterStandIn, transport: CountingTransport
) -> None:
    """5,000 events on the month's first day and 100 over the other 27: the first page (27 quiet days) says
    "one slice", so only splitting as the walk goes can find the burst."""
    busy = [
        make_event(tenant="acme", credits=i, time=START + timedelta(seconds=50 * (i // 3)), user=f"u{i % 5}")
        for i in range(5000)  # three events in each occupied second, so slice bounds fall between equal times
    ]
    quiet = [
        make_event(tenant="acme", credits=1, time=START + timedelta(days=1, hours=6.4 * i), user="q")
        for i in range(100)
    ]
    openmeter.ingest(*busy, *quiet)

    sequential = await events_of(client, MONTH, max_slices=1)
    sequential_pages = len(transport.queries)
    assert transport.most_in_flight == 1
    assert slices_seen(transport) == 1
    transport.queries.clear()
    openmeter.latency = 0.01  # every answer takes a moment, so requests sent together are in flight together

    parallel = await events_of(client, MONTH, parallel_slices=4)

    assert len(sequential) == 5100
    assert parallel == sequential
    assert slices_seen(transport) >= 4
    assert transport.most_in_flight == 4
    assert len(transport.queries) <= 1.25 * sequential_pages


async def test_splits_across_subject_chunks_keep_the_sequential_order(
    client: OpenMeter, openmeter: OpenMeterStandIn, transport: CountingTransport
) -> None:
    """130 subjects (three `$in` chunks): a slice that splits while reading its second or third chunk hands the
    rows of the chunks it finished over to the new slices; ties at one second stay ordered by chunk."""
    rng = random.Random(7)
    events = []
    for i in range(4000):
        second = rng.choice([rng.randrange(0, 3600), 20 * 86400 + rng.randrange(0, 600), rng.randrange(0, 28 * 86400)])
        events.append(
            make_event(tenant="acme", credits=i, time=START + timedelta(seconds=second), user=f"user{i % 130}")
        )
    openmeter.ingest(*events)

    sequential = await events_of(client, MONTH, max_slices=1)
    transport.queries.clear()
    parallel = await events_of(client, MONTH, parallel_slices=3)

    assert len(sequential) == 4000
    assert parallel == sequential
    assert len({tuple(f["subject"]["$in"]) for f in transport.filters()}) == 3
    assert slices_seen(transport) > 3


@pytest.mark.parametrize("seed", range(6))
async def test_random_shapes_of_data_come_back_exactly_as_the_sequential_walk(
    client: OpenMeter, openmeter: OpenMeterStandIn, seed: int
) -> None:
    rng = random.Random(seed)
    subjects = rng.choice([3, 60])
    bursts = [(rng.randrange(0, 7 * 86400), rng.choice([60, 3600, 86400])) for _ in range(rng.randrange(1, 4))]
    events = []
    for i in range(rng.randrange(300, 2500)):
        at, width = rng.choice(bursts) if rng.random() < 0.8 else (0, 7 * 86400)
        second = min(at + rng.randrange(0, width), 7 * 86400 - 1)
        events.append(
            make_event(tenant="acme", credits=i, time=START + timedelta(seconds=second), user=f"u{i % subjects}")
        )
    openmeter.ingest(*events)
    week = Window(START, START + timedelta(days=7))

    sequential = await events_of(client, week, max_slices=1)
    options = {"parallel_slices": rng.randrange(1, 9), "max_slices": rng.randrange(2, 33)}
    assert await events_of(client, week, **options) == sequential, options
    assert len(sequential) == len(events)


@on_both_apis
@pytest.mark.parametrize("seed", range(3))
async def test_events_outside_the_window_stay_out_of_every_slice(
    client: OpenMeter, openmeter: OpenMeterStandIn, seed: int
) -> None:
    """v3 asks only for events before a slice's end (Konnect's one time operator) and cuts at its start itself: with
    busy days on both sides of the window, the sliced walk and the sequential one still hold exactly the window's
    events, newest first."""
    rng = random.Random(seed)
    week = Window(START + timedelta(days=7), START + timedelta(days=14))
    events, inside = [], []
    for i in range(rng.randrange(800, 1600)):
        second = rng.choice([rng.randrange(0, 21 * 86400), 7 * 86400 + rng.randrange(-600, 600)])
        moment = START + timedelta(seconds=second)
        events.append(make_event(tenant="acme", credits=i, time=moment, user=f"u{i % 7}"))
        if week.start <= moment < week.end:
            inside.append((moment, i))
    openmeter.ingest(*events)

    sequential = await events_of(client, week, max_slices=1)
    parallel = await events_of(client, week, parallel_slices=4, max_slices=16)

    assert parallel == sequential
    assert sorted(row[5] for row in sequential) == sorted(i for _, i in inside)
    times = [row[0] for row in sequential]
    assert times == sorted(times, reverse=True)


async def test_long_subjects_are_cut_by_url_length(
    client: OpenMeter, openmeter: OpenMeterStandIn, transport: CountingTransport
) -> None:
    """60 users whose names (their subjects) run to 5,000 characters: 50 to a filter would make a 300 KB URL."""
    names = [f"{index:02d}" + "n" * 4998 for index in range(60)]
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=1, time=START + timedelta(hours=i), user=name)
            for i, name in enumerate(names)
        ]
    )
    rows = await events_of(client, Window(START, START + timedelta(days=7)))
    assert sorted(row[1] for row in rows) == names
    assert max(len(query) for query in transport.queries) <= MAX_QUERY_BYTES
    assert len({tuple(f["subject"]["$in"]) for f in transport.filters()}) == 60


@on_both_apis
async def test_short_subjects_still_share_a_filter_up_to_fifty(
    client: OpenMeter, openmeter: OpenMeterStandIn, transport: CountingTransport
) -> None:
    openmeter.ingest(
        *[make_event(tenant="acme", credits=1, time=START + timedelta(hours=i), user=f"user{i}") for i in range(120)]
    )
    rows = await events_of(client, Window(START, START + timedelta(days=7)))
    assert len(rows) == 120
    sizes = sorted(len(page.subjects or []) for page in transport.pages())
    assert sizes == [20, 50, 50]
