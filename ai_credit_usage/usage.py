"""The questions the tools answer, as `(tenant, window, sink) -> Findings`: rows go into the sink in their final
order, and what was found besides (the comparison with the preceding window, movers, a trend) comes back.

This is the only place that knows which OpenMeter call answers which question. The tenant always arrives from the
caller's header; nothing here takes it from arguments. The preceding window is one more meter query, asked at the
same time as the question's own; if only that one fails, the answer stands without its comparison.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import anyio

from ai_credit_usage.compare import Previous, compare, preceding, top_movers
from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.findings import Findings
from ai_credit_usage.meter import Meter, MeterConfigError
from ai_credit_usage.openmeter import CloudEvent, OpenMeterClient, OpenMeterError, QueryRow
from ai_credit_usage.table import BREAKDOWN_DIMENSIONS, TableSink
from ai_credit_usage.trend import (
    Dimension,
    Granularity,
    build_trend,
    choose_granularity,
    openmeter_window_size,
    periods_of,
)
from ai_credit_usage.window import Window, format_utc

logger = logging.getLogger(__name__)

TENANT_COLUMNS = ("tenant", "credits")
SUMMARY_COLUMNS = ("user", "module", "product", "tenant", "skill", "credits")
EVENT_COLUMNS = ("time", "user", "module", "product", "tenant", "credits")
SUBJECTS_PER_FILTER = 50  # at most this many subjects in one `$in` filter (the URL's length bounds it too)
PAGES_PER_SLICE = 8  # enough pages per time slice that the extra partial pages of a split cost little
MAX_SLICES = 32
T = TypeVar("T")


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

    async def _combinations(
        self, tenant: str, window: Window
    ) -> tuple[Meter, list[str], list[QueryRow], Previous | None]:
        """The tenant's credits per (user, module, product, tenant, skill) in the window, and the preceding window's."""
        meter = await self.meter()
        dimensions = [name for name in SUMMARY_COLUMNS[:-1] if name in meter.dimension_paths]
        rows, previous = await self._with_previous(
            meter,
            tenant,
            window,
            lambda: self._client.query_meter(meter.slug, window, dimensions, _tenant_filter(tenant)),
        )
        return meter, dimensions, rows, previous

    async def tenant_total(self, tenant: str, window: Window, sink: TableSink) -> Findings:
        """One row, even at zero usage: the tenant's credits over the window.

        Asked per user, module, product and skill (one query, summed here), so the Summary sheet can show who and
        what the credits went to even for the plain total.
        """
        meter, dimensions, rows, previous = await self._combinations(tenant, window)
        mine = _tally_breakdowns(meter, tenant, rows, sink)
        await sink.add([(tenant, math.fsum(row.value for row in mine))])
        about = _about_query(meter, tenant, dimensions, TENANT_ROW)
        return self._findings(window, sink, previous, about=about, in_text=True)

    async def summary(self, tenant: str, window: Window, sink: TableSink) -> Findings:
        """One row per (user, module, product, tenant, skill) combination, largest credits first, and the users
        whose credits moved most against the preceding window."""
        meter, dimensions, rows, previous = await self._combinations(tenant, window)
        table = [
            (*(row.groupBy.get(name) or "" for name in SUMMARY_COLUMNS[:-1]), row.value)
            for row in rows
            if row.groupBy.get("tenant") == tenant  # belt and braces: OpenMeter already filtered on it
        ]
        table.sort(key=lambda row: (-row[-1], row[:-1]))
        await sink.add(table)
        about = _about_query(meter, tenant, dimensions, SUMMARY_ROW)
        findings = self._findings(window, sink, previous, about=about, in_text=True)
        if previous is not None and previous.by_user is not None:
            # No rows now is no breakdown in the sink, but movers still say who is gone.
            findings.movers = top_movers(sink.breakdown("user") or {}, previous.by_user)
        return findings

    async def events(self, tenant: str, window: Window, sink: TableSink) -> Findings:
        """Every raw event of the tenant in the window, newest first.

        The events API cannot filter on event data, so we first ask the meter which subjects carry this tenant's
        usage, then page only those subjects' events and keep the ones whose tenant dimension is exactly the
        caller's: one tenant's call costs about its own events, not everyone's.
        """
        meter = await self.meter()
        about = [
            (
                "query",
                f"GET /api/v2/events, type {meter.event_type}, time in the window, the subjects that carry "
                f"tenant {tenant!r} (from a meter query grouped by subject); each event's tenant is checked again",
            ),
            ("a row", EVENT_ROW),
        ]
        skills: dict[str, float] = defaultdict(float)

        async def walk() -> None:
            rows = await self._client.query_meter(meter.slug, window, ["subject"], _tenant_filter(tenant))
            subjects = sorted({row.subject for row in rows if row.subject is not None})
            if not subjects:
                return
            chunks = self._client.subject_chunks(window, meter.event_type, subjects, max_count=SUBJECTS_PER_FILTER)
            walk = _EventWalk(
                self._client, meter, tenant, window, chunks, sink, self._max_event_rows, self._max_slices, skills
            )
            await walk.run(self._parallel_slices)

        _, previous = await self._with_previous(meter, tenant, window, walk)
        if "skill" in meter.dimension_paths:
            sink.tally("skill", skills)  # not a column of the events table, but the Summary sheet shows it
        return self._findings(window, sink, previous, about=about)

    async def trend(
        self,
        tenant: str,
        window: Window,
        sink: TableSink,
        *,
        granularity: Granularity | None,
        group_by: Dimension | None,
        time_zone: str,
    ) -> Findings:
        """Credits per day, week or month in a time zone, zero-filled, optionally per user/module/product/skill
        (the top 5 and Other): one meter query with windowSize and windowTimeZone. Beside it, at the same time, the
        per-combination query without windowSize, for the Summary sheet's top 5 users, modules, products, skills."""
        meter = await self.meter()
        if group_by is not None and group_by not in meter.dimension_paths:
            raise MeterConfigError(
                f"The meter '{meter.slug}' has no {group_by} dimension, so usage cannot be grouped by it; "
                "leave group_by out or pick another."
            )
        zone = ZoneInfo(time_zone)
        chosen = granularity or choose_granularity(window, zone)
        periods = periods_of(window, chosen, zone)
        dimensions = ["tenant", *([group_by] if group_by else [])]
        breakdown_dimensions = [name for name in SUMMARY_COLUMNS[:-1] if name in meter.dimension_paths]
        size = openmeter_window_size(chosen)

        async def trend_and_breakdown() -> tuple[list[QueryRow], list[QueryRow]]:
            found: list[list[QueryRow]] = []

            async def breakdown() -> None:
                found.append(
                    await self._client.query_meter(meter.slug, window, breakdown_dimensions, _tenant_filter(tenant))
                )

            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(breakdown)
                    rows = await self._client.query_meter(
                        meter.slug,
                        window,
                        dimensions,
                        _tenant_filter(tenant),
                        window_size=size,
                        window_time_zone=time_zone,
                    )
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
            return rows, found[0]

        (rows, combinations), previous = await self._with_previous(meter, tenant, window, trend_and_breakdown)
        samples = [
            (
                _window_start(row).astimezone(zone).date(),
                (row.groupBy.get(group_by) or "") if group_by else "",
                row.value,
            )
            for row in rows
            if row.groupBy.get("tenant") == tenant
        ]
        trend = build_trend(periods, chosen, time_zone, group_by, samples)
        series = trend.series if group_by else []
        sink.define((chosen, "partial", *series, "total" if group_by else "credits"), amounts=len(series) + 1)
        await sink.add([trend.row(position) for position in range(len(trend.periods))])
        _tally_breakdowns(meter, tenant, combinations, sink)
        about = _trend_about(meter, tenant, dimensions, size, chosen, time_zone, grouped=group_by is not None)
        about.append(
            (
                "Summary query",
                f"the top 5s: GET /api/v1/meters/{meter.slug}/query without windowSize, grouped by "
                f"{', '.join(breakdown_dimensions)}; filter tenant = {tenant!r}; from and to = the window",
            )
        )
        findings = self._findings(window, sink, previous, about=about)
        findings.trend = trend
        return findings

    def _findings(
        self,
        window: Window,
        sink: TableSink,
        previous: Previous | None,
        *,
        about: list[tuple[str, object]],
        in_text: bool = False,
    ) -> Findings:
        """`in_text`: the comparison gets its own line in the answer (the total and the summary); every answer
        carries it in its structured result and on the Summary sheet."""
        comparison = compare(window, sink.total_credits, previous) if previous is not None else None
        if previous is not None:
            about = [
                *about,
                (
                    "comparison",
                    f"the same tenant's credits from {format_utc(previous.window.start)} to "
                    f"{format_utc(previous.window.end)} (the preceding window of the same length), grouped by user",
                ),
            ]
        return Findings(comparison=comparison, comparison_in_text=in_text, about=about)

    async def _with_previous(
        self, meter: Meter, tenant: str, window: Window, main: Callable[[], Awaitable[T]]
    ) -> tuple[T, Previous | None]:
        """`main()` and the preceding window's query at the same time; a failure of the latter only loses it."""
        found: list[Previous | None] = [None]

        async def fetch() -> None:
            found[0] = await self._previous(meter, tenant, window)

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(fetch)
                result = await main()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return result, found[0]

    async def _previous(self, meter: Meter, tenant: str, window: Window) -> Previous | None:
        try:
            before = preceding(window)
        except OverflowError:  # a window that starts near year 1 has no preceding one
            return None
        by_user = "user" in meter.dimension_paths
        try:
            rows = await self._client.query_meter(
                meter.slug, before, ["tenant", *(["user"] if by_user else [])], _tenant_filter(tenant)
            )
        except OpenMeterError as exc:
            logger.warning("the preceding window could not be read, answering without the comparison: %s", exc)
            return None
        mine = [row for row in rows if row.groupBy.get("tenant") == tenant]
        users = _sums((row.groupBy.get("user") or "", row.value) for row in mine) if by_user else None
        return Previous(before, math.fsum(row.value for row in mine), users)


TENANT_ROW = "the tenant's credits over the whole window (one row, even at zero usage)"
SUMMARY_ROW = (
    "one combination of user, module, product, tenant and skill that used credits in the window, largest first"
)
EVENT_ROW = "one AI-credit event as OpenMeter received it: its time (UTC), user, module, product, tenant, credits"


def _about_query(meter: Meter, tenant: str, dimensions: list[str], row: str) -> list[tuple[str, object]]:
    return [
        (
            "query",
            f"GET /api/v1/meters/{meter.slug}/query, grouped by {', '.join(dimensions)}; "
            f"filter tenant = {tenant!r}; from and to = the window",
        ),
        ("a row", row),
    ]


def _trend_about(
    meter: Meter, tenant: str, dimensions: list[str], size: str, granularity: str, time_zone: str, *, grouped: bool
) -> list[tuple[str, object]]:
    weeks = " (OpenMeter days folded into ISO weeks, Monday first)" if granularity == "week" else ""
    series = "; the top 5 series by credits, the rest summed as Other, total = their sum" if grouped else ""
    return [
        (
            "query",
            f"GET /api/v1/meters/{meter.slug}/query, windowSize {size}, windowTimeZone {time_zone}, grouped by "
            f"{', '.join(dimensions)}; filter tenant = {tenant!r}; from and to = the window",
        ),
        ("granularity", granularity + weeks),
        ("time zone", f"{time_zone}: period boundaries are local midnights there (DST included)"),
        (
            "a row",
            f"one {granularity} in {time_zone}, oldest first, with 0 where there was no usage; partial = the window "
            f"covers only part of it{series}",
        ),
        (
            "unusual",
            "a period above the typical one by more than 3 median absolute deviations and at least 1.5 times it; "
            "the typical period is the median complete period, or, when that had no usage, the median complete "
            "period with usage",
        ),
    ]


def _sums(pairs: Any) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for name, value in pairs:
        values[name].append(value)
    return {name: math.fsum(found) for name, found in values.items()}


def _window_start(row: QueryRow) -> datetime:
    if row.windowStart is None:
        raise OpenMeterError(
            "OpenMeter sent an answer that could not be read; try again, and report it if it persists."
        )
    return row.windowStart


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
    per_chunk: list[list[tuple[Any, ...]]]
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


class _EventWalk:
    """One events question: time slices paged concurrently, each with its own cursor, fed to the sink in order.

    The walk starts as one slice over the whole window. After every page a slice estimates, from how much time
    that page covered, how many pages its unread part still holds; above PAGES_PER_SLICE it splits that part into
    new slices (at most `max_slices` in all), which other workers read at the same time. So a burst anywhere in
    the window (one busy day in a quiet month) is found where it is and read in parallel, not only what the first
    page suggests.

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
        skills: dict[str, float],
    ) -> None:
        self._client, self._meter, self._tenant, self._window = client, meter, tenant, window
        self._chunks, self._sink, self._max_rows, self._max_slices = chunks, sink, max_rows, max_slices
        self._skills = skills  # credits per skill, which the rows do not carry
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
                self._start_walk = lambda piece: tasks.start_soon(walk, piece)
                self._start_walk(first)
                piece: _Slice | None = first
                while piece is not None:  # newest slice first, as soon as each is complete
                    await piece.done.wait()
                    rows = _merged(piece.per_chunk)
                    piece.per_chunk = []
                    await self._sink.add(rows)
                    piece = piece.next
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self._start_walk = None
            if self._skipped:
                logger.warning("skipped %d events without a numeric credits value or a time", self._skipped)

    async def _walk_slice(self, piece: _Slice) -> None:
        for index in range(piece.first_chunk, len(self._chunks)):
            rows: list[tuple[Any, ...]] = []
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
        for newer_slice, older_slice in itertools.pairwise([*new, piece.next]):
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
        page = await self._client.event_page(window, self._meter.event_type, subjects, cursor)
        self._pages += 1
        if self._pages == 1:
            self._estimate(*page)
        if self._pages <= 10 or self._pages % 10 == 0:  # enough to show movement without a notification per page
            estimate = round(self._estimated_pages) if self._estimated_pages else None
            await self._sink.progress(f"fetched {self._pages} pages of events", self._pages, estimate)
        return page

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


def _tally_breakdowns(meter: Meter, tenant: str, rows: list[QueryRow], sink: TableSink) -> list[QueryRow]:
    """Credits per user, module, product and skill from per-combination rows, for the Summary sheet's top 5s;
    returns the tenant's rows (the filter already asked for them; checked again, as everywhere)."""
    mine = [row for row in rows if row.groupBy.get("tenant") == tenant]
    for dimension in BREAKDOWN_DIMENSIONS:
        if dimension in meter.dimension_paths:
            sink.tally(dimension, _sums((row.groupBy.get(dimension) or "", row.value) for row in mine))
    return mine


def _tenant_filter(tenant: str) -> dict[str, Any]:
    return {"tenant": {"$eq": tenant}}


def _event_time(row: tuple[Any, ...]) -> datetime:
    return row[0]


def _merged(per_chunk: list[list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """One slice's rows, newest first; at an identical time, the earlier subject chunk first (merge is stable)."""
    if len(per_chunk) == 1:
        return per_chunk[0]
    return list(heapq.merge(*per_chunk, key=_event_time, reverse=True))


def _older_than(rows: list[tuple[Any, ...]], moment: datetime) -> list[tuple[Any, ...]]:
    """The tail of `rows` (newest first) before `moment`."""
    keep = len(rows)
    while keep and rows[keep - 1][0] < moment:
        keep -= 1
    return rows[keep:]


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
