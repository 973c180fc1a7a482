"""The concurrent walk over a tenant's raw events: time slices paged at the same time, fed to the sink in order.

The walk starts as one slice over the whole window. After every page a slice estimates, from how much time that page
covered, how many pages its unread part still holds; above PAGES_PER_SLICE it splits that part into new slices (at
most `max_slices` in all), which other workers read at the same time. So a burst anywhere in the window (one busy day
in a quiet month) is found where it is and read in parallel, not only what the first page suggests.

The result is exactly the sequential walk's: slices partition the window on whole seconds (OpenMeter's time
resolution), each slice comes back newest first, and slices are emitted newest first. Out-of-order slices wait in
memory until their turn.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from ai_credit_usage.openmeter.interface import CloudEvent, OpenMeter
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.questions.filters import NO_FILTERS, Filters
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.runtime.errors import UserFacingError, first_error
from ai_credit_usage.runtime.window import Window

logger = logging.getLogger(__name__)

PAGES_PER_SLICE = 8  # enough pages per time slice that the extra partial pages of a split cost little
MAX_SLICES = 32
EventRow = tuple[Any, ...]  # (time, user, module, product, tenant, credits)


@dataclass(eq=False)
class _Slice:
    """A part [start, end) of the window, read chunk by chunk, newest first; slices are emitted newest first.

    A slice that finds more pages ahead of it than it should read alone gives its unread older part away to new
    slices (its `start` rises). Chunks it had already finished are then handed over as rows (`per_chunk` of the new
    slice, up to `first_chunk`), so every slice still merges all chunks over exactly its own seconds.
    """

    start: datetime
    end: datetime
    first_chunk: int
    per_chunk: list[list[EventRow]]
    done: anyio.Event = field(default_factory=anyio.Event)
    next: _Slice | None = None  # the next older slice; set by splits, read once this slice is done


class _NewestFirst:
    """At most `slots` slices read at once; a freed slot goes to the waiting slice that is emitted first (the
    newest), so rows wait in memory as little as possible."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, newest: datetime) -> AsyncIterator[None]:
        if self._free > 0:  # a free slot means nobody is waiting: release hands slots straight to waiters
            self._free -= 1
        else:
            granted = anyio.Event()
            entry = (-newest.timestamp(), next(self._order), granted)
            heapq.heappush(self._waiting, entry)
            try:
                await granted.wait()
            except BaseException:
                if granted.is_set():
                    self._release()
                else:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[2].set()
        else:
            self._free += 1


class EventWalk:
    """One events question: time slices paged concurrently, each with its own cursor, fed to the sink in order."""

    def __init__(
        self,
        openmeter: OpenMeter,
        meter: Meter,
        tenant: str,
        window: Window,
        chunks: list[list[str]],
        sink: TableSink,
        max_rows: int,
        max_slices: int,
        skills: dict[str, float],
        filters: Filters = NO_FILTERS,
    ) -> None:
        self._openmeter, self._meter, self._tenant, self._window = openmeter, meter, tenant, window
        self._chunks, self._sink, self._max_rows, self._max_slices = chunks, sink, max_rows, max_slices
        self._skills = skills  # credits per skill, which the rows do not carry
        # The events API cannot filter on event data: the subjects were chosen with the filters, and each event read
        # is checked against them here (MAX_EVENT_ROWS counts only the rows kept).
        self._filters = filters
        self._rows = self._pages = self._skipped = 0
        self._slices = 1
        self._estimated_pages: float | None = None
        self._start_walk: Callable[[_Slice], None] | None = None

    async def run(self, parallel: int) -> None:
        slots = _NewestFirst(parallel)
        # Whole seconds, as OpenMeter reads the filter's times: the rows kept at a split must match its filter.
        window = Window(self._window.start.replace(microsecond=0), self._window.end.replace(microsecond=0))
        first = _Slice(window.start, window.end, 0, [])

        async def walk(piece: _Slice) -> None:
            async with slots.slot(piece.end):
                await self._walk_slice(piece)
            piece.done.set()

        try:
            async with anyio.create_task_group() as tasks:

                def start(piece: _Slice) -> None:
                    tasks.start_soon(walk, piece)

                self._start_walk = start
                start(first)
                piece: _Slice | None = first
                while piece is not None:  # newest slice first, as soon as each is complete
                    await piece.done.wait()
                    rows = _merged(piece.per_chunk)
                    piece.per_chunk = []
                    await self._sink.add(rows)
                    piece = piece.next
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self._start_walk = None
            if self._skipped:
                logger.warning("skipped %d events without a numeric credits value or a time", self._skipped)

    async def _walk_slice(self, piece: _Slice) -> None:
        for index in range(piece.first_chunk, len(self._chunks)):
            rows: list[EventRow] = []
            piece.per_chunk.append(rows)
            window = Window(piece.start, piece.end)  # the cursor belongs to this filter, even if `start` rises
            newer, cursor = piece.end, None
            while True:
                events, cursor = await self._page(window, self._chunks[index], cursor)
                kept = [event for event in events if event.time is None or event.time >= piece.start]
                rows.extend(self._rows_of(kept))  # the rest belongs to slices split off meanwhile: they read it
                if cursor is None or len(kept) < len(events):
                    break
                oldest = min((event.time for event in events if event.time is not None), default=None)
                if oldest is not None:
                    self._split(piece, index, oldest, page_span=newer - oldest)
                    newer = oldest

    def _split(self, piece: _Slice, chunk: int, oldest: datetime, page_span: timedelta) -> None:
        """Give the unread part [piece.start, oldest) to new slices when it looks like more than PAGES_PER_SLICE
        pages at the pace of the page just read."""
        budget = self._max_slices - self._slices
        top = oldest.replace(microsecond=0)  # whole seconds: every row read so far is at or after it
        seconds = int((top - piece.start).total_seconds())
        if budget <= 0 or seconds < 2 or self._start_walk is None:
            return
        pages_ahead = (oldest - piece.start).total_seconds() / max(page_span.total_seconds(), 1.0)
        parts = min(math.ceil(pages_ahead / PAGES_PER_SLICE), budget + 1, seconds)
        if parts < 2:
            return
        bounds = [piece.start] + [top - timedelta(seconds=seconds * (parts - k) // parts) for k in range(1, parts)]
        finished = piece.per_chunk[:chunk]
        handed = [_older_than(rows, bounds[-1]) for rows in finished]  # finished chunks' rows of the part given away
        for rows, given in zip(finished, handed, strict=True):
            del rows[len(rows) - len(given) :]
        new: list[_Slice] = []
        for k in reversed(range(parts - 1)):  # newest first
            lower, upper = bounds[k], bounds[k + 1]
            own = [[row for row in rows if row[0] >= lower] for rows in handed]
            handed = [rows[len(mine) :] for rows, mine in zip(handed, own, strict=True)]
            new.append(_Slice(lower, upper, chunk, own))
        for newer_slice, older_slice in zip(new, [*new[1:], piece.next], strict=True):
            newer_slice.next = older_slice
        piece.next, piece.start = new[0], bounds[-1]
        self._slices += len(new)
        for added in new:
            self._start_walk(added)

    def _estimate(self, events: list[CloudEvent], cursor: str | None) -> None:
        """The page count progress reports show as the total, from the walk's first page."""
        if cursor is None:
            self._estimated_pages = float(len(self._chunks))
            return
        oldest = min((event.time for event in events if event.time is not None), default=self._window.start)
        covered = max((self._window.end - oldest).total_seconds(), 1.0)
        span = (self._window.end - self._window.start).total_seconds()
        self._estimated_pages = span / covered * len(self._chunks)

    async def _page(
        self, window: Window, subjects: list[str], cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        page = await self._openmeter.event_page(self._meter, window, subjects, cursor)
        self._pages += 1
        if self._pages == 1:
            self._estimate(*page)
        if self._pages <= 10 or self._pages % 10 == 0:  # enough to show movement without a notification per page
            estimate = round(self._estimated_pages) if self._estimated_pages else None
            await self._sink.progress(f"fetched {self._pages} pages of events", self._pages, estimate)
        return page

    def _rows_of(self, events: list[CloudEvent]) -> list[EventRow]:
        meter, tenant, filters = self._meter, self._tenant, self._filters
        rows: list[EventRow] = []
        for event in events:
            if event.type != meter.event_type or meter.dimension(event.data, "tenant") != tenant:
                continue
            if filters and not filters.matches(functools.partial(meter.dimension, event.data)):
                continue
            credits = meter.credits(event.data)
            if credits is None or event.time is None:  # the meter does not count it either
                self._skipped += 1
                continue
            self._skills[meter.dimension(event.data, "skill")] += credits
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


def _event_time(row: EventRow) -> datetime:
    moment: datetime = row[0]
    return moment


def _merged(per_chunk: list[list[EventRow]]) -> list[EventRow]:
    """One slice's rows, newest first; at an identical time, the earlier subject chunk first (merge is stable)."""
    if len(per_chunk) == 1:
        return per_chunk[0]
    return list(heapq.merge(*per_chunk, key=_event_time, reverse=True))


def _older_than(rows: list[EventRow], moment: datetime) -> list[EventRow]:
    """The tail of `rows` (newest first) before `moment`."""
    keep = len(rows)
    while keep and rows[keep - 1][0] < moment:
        keep -= 1
    return rows[keep:]
