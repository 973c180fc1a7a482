"""The questions the tools answer, as `(tenant, window, sink)`: rows go into the sink in their final order.

This is the only place that knows which OpenMeter call answers which question. The tenant always arrives from the
caller's header; nothing here takes it from arguments.
"""

from __future__ import annotations

import heapq
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.meter import Meter
from ai_credit_usage.openmeter import CloudEvent, OpenMeterClient
from ai_credit_usage.table import TableSink
from ai_credit_usage.window import Window

logger = logging.getLogger(__name__)

TENANT_COLUMNS = ("tenant", "credits")
SUMMARY_COLUMNS = ("user", "module", "product", "tenant", "skill", "credits")
EVENT_COLUMNS = ("time", "user", "module", "product", "tenant", "credits")
SUBJECTS_PER_FILTER = 50  # subjects in one `$in` filter, which travels in the URL
PAGES_PER_SLICE = 8  # enough pages per time slice that the extra partial page of each slice costs little
MAX_SLICES = 32


class UsageService:
    def __init__(
        self,
        client: OpenMeterClient,
        meter_slug: str,
        *,
        max_event_rows: int,
        parallel_slices: int = 8,
        max_slices: int = MAX_SLICES,
    ) -> None:
        self._max_slices = max_slices
        self._client = client
        self._meter_slug = meter_slug
        self._max_event_rows = max_event_rows
        self._parallel_slices = parallel_slices

    async def meter(self) -> Meter:
        return Meter.from_definition(await self._client.get_meter(self._meter_slug))

    async def tenant_total(self, tenant: str, window: Window, sink: TableSink) -> None:
        """One row, even at zero usage: the tenant's credits over the window."""
        meter = await self.meter()
        rows = await self._client.query_meter(meter.slug, window, ["tenant"], _tenant_filter(tenant))
        await sink.add([(tenant, math.fsum(row.value for row in rows if row.groupBy.get("tenant") == tenant))])

    async def summary(self, tenant: str, window: Window, sink: TableSink) -> None:
        """One row per (user, module, product, tenant, skill) combination, largest credits first."""
        meter = await self.meter()
        dimensions = [name for name in SUMMARY_COLUMNS[:-1] if name in meter.dimension_paths]
        rows = await self._client.query_meter(meter.slug, window, dimensions, _tenant_filter(tenant))
        table = [
            (*(row.groupBy.get(name) or "" for name in SUMMARY_COLUMNS[:-1]), row.value)
            for row in rows
            if row.groupBy.get("tenant") == tenant  # belt and braces: OpenMeter already filtered on it
        ]
        table.sort(key=lambda row: (-row[-1], row[:-1]))
        await sink.add(table)

    async def events(self, tenant: str, window: Window, sink: TableSink) -> None:
        """Every raw event of the tenant in the window, newest first.

        The events API cannot filter on event data, so we first ask the meter which subjects carry this tenant's
        usage, then page only those subjects' events and keep the ones whose tenant dimension is exactly the
        caller's: one tenant's call costs about its own events, not everyone's.
        """
        meter = await self.meter()
        rows = await self._client.query_meter(meter.slug, window, ["subject"], _tenant_filter(tenant))
        subjects = sorted({row.subject for row in rows if row.subject is not None})
        if not subjects:
            return
        chunks = [subjects[i : i + SUBJECTS_PER_FILTER] for i in range(0, len(subjects), SUBJECTS_PER_FILTER)]
        walk = _EventWalk(self._client, meter, tenant, window, chunks, sink, self._max_event_rows, self._max_slices)
        await walk.run(self._parallel_slices)


class _EventWalk:
    """One events question: time slices paged concurrently, each with its own cursor, fed to the sink in order.

    The result is exactly the sequential walk's: slices partition the window on whole seconds (OpenMeter's time
    resolution), each slice comes back newest first, and slices are emitted newest first. Out-of-order slices wait
    in memory until their turn.
    """

    def __init__(
        self,
        client: OpenMeterClient,
        meter: Meter,
        tenant: str,
        window: Window,
        chunks: list[list[str]],
        sink: TableSink,
        max_rows: int,
        max_slices: int,
    ) -> None:
        self._client, self._meter, self._tenant, self._window = client, meter, tenant, window
        self._chunks, self._sink, self._max_rows, self._max_slices = chunks, sink, max_rows, max_slices
        self._rows = self._pages = self._skipped = 0
        self._estimated_pages: float | None = None

    async def run(self, parallel: int) -> None:
        first = await self._page(self._window, self._chunks[0], None)
        slices = self._slices(first)
        try:
            if len(slices) == 1:
                await self._sink.add(await self._walk_slice(self._window, first))
            else:
                await self._walk_in_parallel(slices, parallel)
        finally:
            if self._skipped:
                logger.warning("skipped %d events without a numeric credits value or a time", self._skipped)

    async def _walk_in_parallel(self, slices: list[Window], parallel: int) -> None:
        results: list[list[tuple[Any, ...]] | None] = [None] * len(slices)
        finished = [anyio.Event() for _ in slices]
        limiter = anyio.CapacityLimiter(parallel)

        async def walk(index: int) -> None:
            async with limiter:
                results[index] = await self._walk_slice(slices[index], None)
            finished[index].set()

        try:
            async with anyio.create_task_group() as tasks:
                for index in range(len(slices)):
                    tasks.start_soon(walk, index)
                for index in range(len(slices)):  # newest slice first, as soon as each is complete
                    await finished[index].wait()
                    rows, results[index] = results[index] or [], None
                    await self._sink.add(rows)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _walk_slice(
        self, window: Window, first: tuple[list[CloudEvent], str | None] | None
    ) -> list[tuple[Any, ...]]:
        per_chunk: list[list[tuple[Any, ...]]] = []
        for index, chunk in enumerate(self._chunks):
            events, cursor = first if first is not None and index == 0 else await self._page(window, chunk, None)
            rows = self._rows_of(events)
            while cursor is not None:
                events, cursor = await self._page(window, chunk, cursor)
                rows.extend(self._rows_of(events))
            per_chunk.append(rows)
        if len(per_chunk) == 1:
            return per_chunk[0]
        return list(heapq.merge(*per_chunk, key=_event_time, reverse=True))

    async def _page(
        self, window: Window, subjects: list[str], cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        page = await self._client.event_page(window, self._meter.event_type, subjects, cursor)
        self._pages += 1
        if self._pages <= 10 or self._pages % 10 == 0:  # enough to show movement without a notification per page
            estimate = round(self._estimated_pages) if self._estimated_pages else None
            await self._sink.progress(f"fetched {self._pages} pages of events", self._pages, estimate)
        return page

    def _slices(self, first: tuple[list[CloudEvent], str | None]) -> list[Window]:
        """As many time slices as the first page suggests: about PAGES_PER_SLICE pages each, at most MAX_SLICES."""
        events, cursor = first
        start, end = self._window.start, self._window.end
        if cursor is None:
            self._estimated_pages = float(len(self._chunks))
            return [self._window]
        oldest = min((event.time for event in events if event.time is not None), default=start)
        covered = max((end - oldest).total_seconds(), 1.0)
        span = int((end - start).total_seconds())
        self._estimated_pages = span / covered * len(self._chunks)
        count = max(1, min(self._max_slices, span, math.ceil(self._estimated_pages / PAGES_PER_SLICE)))
        if count == 1:
            return [self._window]
        bounds = [start + timedelta(seconds=span * k // count) for k in range(count)] + [end]
        return [Window(bounds[k], bounds[k + 1]) for k in reversed(range(count))]

    def _rows_of(self, events: list[CloudEvent]) -> list[tuple[Any, ...]]:
        meter, tenant = self._meter, self._tenant
        rows: list[tuple[Any, ...]] = []
        for event in events:
            if event.type != meter.event_type or meter.dimension(event.data, "tenant") != tenant:
                continue
            credits = meter.credits(event.data)
            if credits is None or event.time is None:  # the meter does not count it either
                self._skipped += 1
                continue
            rows.append(
                (
                    event.time.astimezone(UTC),
                    meter.dimension(event.data, "user"),
                    meter.dimension(event.data, "module"),
                    meter.dimension(event.data, "product"),
                    tenant,
                    credits,
                )
            )
        self._rows += len(rows)
        if self._rows > self._max_rows:
            raise UserFacingError(
                f"There are more than {self._max_rows:,} credit events in this window, more than one download can "
                "hold; ask for a shorter window."
            )
        return rows


def _tenant_filter(tenant: str) -> dict[str, Any]:
    return {"tenant": {"$eq": tenant}}


def _event_time(row: tuple[Any, ...]) -> datetime:
    return row[0]


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that ended a task group: a user-facing one if any, else the first (cancellations are echoes)."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    return next((e for e in leaves if isinstance(e, UserFacingError)), leaves[0])
