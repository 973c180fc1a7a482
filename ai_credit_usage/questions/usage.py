"""The questions the tools answer, as `(tenant, query, sink) -> Findings`: each defines its columns, puts its rows
into the sink in their final order, and returns what was found besides (the comparison with the preceding window,
movers, a trend).

This is the only place that knows which OpenMeter question answers which tool question; it asks them of the seam
(`openmeter.interface.OpenMeter`), never of an HTTP client. The tenant always arrives from the
caller's header; nothing here takes it from arguments. The preceding window is one more meter query, asked at the
same time as the question's own; if only that one fails, the answer stands without its comparison.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread

from ai_credit_usage.openmeter.http import UNREADABLE, OpenMeterError
from ai_credit_usage.openmeter.interface import AggregateQuery, OpenMeter, UsageRow
from ai_credit_usage.openmeter.meter import Meter, MeterConfigError
from ai_credit_usage.openmeter.meter_cache import DEFINITIVE_STATUSES, MeterCache
from ai_credit_usage.questions.balance import Balances
from ai_credit_usage.questions.compare import Previous, compare, preceding, top_movers
from ai_credit_usage.questions.event_walk import MAX_SLICES, EventWalk
from ai_credit_usage.questions.filters import DIMENSIONS, Filters, NoMatch, no_match
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.forecast import (
    DAY_COLUMNS,
    DAY_TOTAL_COLUMN,
    HALF_LIFE_DAYS,
    LOOKBACK_DAYS,
    Outlook,
    daily_rows,
    project_usage,
)
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.questions.together import together
from ai_credit_usage.questions.trend import UNUSUAL_RULE, build_trend, calendar_unit, choose_granularity, periods_of
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.window import Window, format_utc, local_midnight

logger = logging.getLogger(__name__)

TENANT_COLUMNS = ("tenant", "credits")
SUMMARY_COLUMNS = ("user", "module", "product", "tenant", "skill", "credits")
EVENT_COLUMNS = ("time", "user", "module", "product", "tenant", "credits")
BREAKDOWN_COLUMNS = SUMMARY_COLUMNS[:-1]


class UsageService:
    """The tool questions, asked of one OpenMeter for the meter `meter_key`."""

    def __init__(
        self,
        openmeter: OpenMeter,
        meter_key: str,
        *,
        max_event_rows: int,
        parallel_slices: int = 8,
        max_slices: int = MAX_SLICES,
        meter_clock: Callable[[], float] = time.monotonic,
        meters: MeterCache | None = None,
        balance: Balances | None = None,
    ) -> None:
        self._openmeter = openmeter
        # `meters`: a cache the caller shares with other questions (the balance's); else one of its own.
        self._meters = meters or MeterCache(openmeter, meter_key, clock=meter_clock)
        self._balance = balance  # the credit allowance, when configured: the forecast says when it runs out
        self._max_event_rows = max_event_rows
        self._parallel_slices = parallel_slices
        self._max_slices = max_slices
        # One no-match ranking at a time: each is CPU work in a thread, and several at once would take the GIL from
        # the event loop between them; more wait their turn, other calls do not.
        self._ranking = anyio.CapacityLimiter(1)

    async def meter(self) -> Meter:
        """The meter's definition, cached per process (openmeter/meter_cache.py): a warm call asks OpenMeter only
        its question's own requests, all at once."""
        return await self._meters.get()

    async def aclose(self) -> None:
        await self._meters.aclose()

    async def balance_left(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """The credits left as of `query.as_of`: the allowance's balance, grants, usage and runway; no rows."""
        if self._balance is None:  # the tool is offered only when configured; refuse rather than guess
            raise UserFacingError("The credit balance is not configured on this server (OPENMETER_CREDITS_FEATURE).")
        found = await self._balance.balance(tenant, query.as_of or query.window.end)
        return Findings(balance=found, source=self._balance.describe(found))

    async def tenant_total(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """One row, even at zero usage: the tenant's credits over the window.

        Asked per user, module, product and skill (one query, summed here), so the Summary sheet can show who and
        what the credits went to even for the plain total.
        """
        sink.define(TENANT_COLUMNS)
        meter = await self.meter()
        combinations = self._combinations(meter, tenant, query)
        rows, previous = await together(
            lambda: self._ask(meter, combinations), lambda: self._previous(meter, tenant, query)
        )
        mine = _tally_breakdowns(meter, tenant, query.filters, rows, sink)
        await sink.add([(tenant, math.fsum(row.value for row in mine))])
        about = self._about(meter, combinations, TENANT_ROW)
        findings = _findings(query.window, sink, previous, about=about, in_text=True)
        findings.no_match = await self._no_match(meter, tenant, query.filters, query.window, found=bool(mine))
        return findings

    async def summary(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """One row per combination of the breakdown's dimensions (default: user, module, product, tenant, skill),
        largest credits first; the top 5 of every dimension; the users whose credits moved most against the
        preceding window.

        One per-combination query whatever the breakdown: the rows are its combinations summed down to the chosen
        dimensions (math.fsum), and the top 5s are every dimension's sums over all of them, so `group_by=["module"]`
        still names the top users, products and skills, and no dimension is counted twice."""
        columns = summary_columns(query.breakdown)
        sink.define(columns, running_sums=False)  # the tops come from `_tally_breakdowns`, once per dimension
        meter = await self.meter()
        combinations = self._combinations(meter, tenant, query)
        rows, previous = await together(
            lambda: self._ask(meter, combinations), lambda: self._previous(meter, tenant, query)
        )
        mine = _tally_breakdowns(meter, tenant, query.filters, rows, sink)
        labels = columns[:-1]
        grouped: dict[tuple[str, ...], list[float]] = defaultdict(list)
        for row in mine:
            grouped[tuple(row.dimensions.get(name) or "" for name in labels)].append(row.value)
        table: list[tuple[Any, ...]] = [(*key, math.fsum(values)) for key, values in grouped.items()]
        table.sort(key=lambda row: (-row[-1], row[:-1]))
        await sink.add(table)
        about = self._about(meter, combinations, _combination_row(labels))
        findings = _findings(query.window, sink, previous, about=about, in_text=True)
        findings.tops_in_text = True
        findings.no_match = await self._no_match(meter, tenant, query.filters, query.window, found=bool(mine))
        if previous is not None and previous.by_user is not None:
            # No rows now is no breakdown in the sink, but movers still say who is gone.
            findings.movers = top_movers(sink.breakdown("user") or {}, previous.by_user)
        return findings

    async def events(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """Every raw event of the tenant in the window, newest first.

        The events API cannot filter on event data, so we first ask the meter which subjects carry this tenant's
        usage, then page only those subjects' events and keep the ones whose tenant dimension is exactly the
        caller's: one tenant's call costs about its own events, not everyone's.
        """
        sink.define(EVENT_COLUMNS)
        window = query.window
        meter = await self.meter()
        about: list[tuple[str, object]] = [
            (
                "query",
                f"{self._openmeter.describe_events(meter)}, the subjects that carry tenant {tenant!r} (from a meter "
                "query grouped by subject, and by the filters); each event's tenant (and filters) checked again",
            ),
            ("a row", EVENT_ROW),
        ]
        skills: dict[str, float] = defaultdict(float)

        counted = meter.counted(window)  # the meter counts nothing before its eventFrom: neither do the events
        if counted != window and meter.events_from is not None:
            about.append(("counted from", f"{format_utc(meter.events_from)}: the meter counts no earlier event"))

        async def walk() -> None:
            if counted is None:
                return
            rows = await self._ask(
                meter, AggregateQuery(counted, ("subject",), tenant, filters=self._filters(meter, query))
            )
            subjects = sorted({row.subject for row in rows if row.subject is not None})
            if not subjects:
                return
            chunks = self._openmeter.subject_chunks(meter, counted, subjects)
            walker = EventWalk(
                self._openmeter,
                meter,
                tenant,
                counted,
                chunks,
                sink,
                self._max_event_rows,
                self._max_slices,
                skills,
                query.filters,
            )
            await walker.run(self._parallel_slices)

        _, previous = await together(walk, lambda: self._previous(meter, tenant, query))
        if "skill" in meter.dimension_paths:
            sink.tally("skill", skills)  # not a column of the events table, but the Summary sheet shows it
        findings = _findings(window, sink, previous, about=about)
        if counted is not None:
            findings.no_match = await self._no_match(meter, tenant, query.filters, counted, found=sink.row_count > 0)
        return findings

    async def trend(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """Credits per day, week or month in a time zone, zero-filled, optionally per user/module/product/skill
        (the top 5 and Other): one meter query per calendar window. Beside it, at the same time, the
        per-combination query over the whole window, for the Summary sheet's top 5 users, modules, products, skills."""
        window, zone, group_by = query.window, query.zone, query.group_by
        meter = await self.meter()
        if group_by is not None and group_by not in meter.dimension_paths:
            raise MeterConfigError(
                f"The meter '{meter.slug}' has no {group_by} dimension, so usage cannot be grouped by it; "
                "leave group_by out or pick another."
            )
        chosen = query.granularity or choose_granularity(window, zone)
        periods = periods_of(window, chosen, zone)
        per_period = AggregateQuery(
            window,
            ("tenant", *([group_by] if group_by else [])),
            tenant,
            calendar_unit(chosen),
            query.time_zone,
            filters=self._filters(meter, query),
        )
        combinations = self._combinations(meter, tenant, query)
        rows, breakdown, previous = await together(
            lambda: self._ask(meter, per_period),
            lambda: self._ask(meter, combinations),
            lambda: self._previous(meter, tenant, query),
        )
        samples = [
            (
                _window_start(row).astimezone(zone).date(),
                (row.dimensions.get(group_by) or "") if group_by else "",
                row.value,
            )
            for row in _in_scope(rows, tenant, query.filters)
        ]
        trend = build_trend(periods, chosen, query.time_zone, group_by, samples)
        series = trend.series if group_by else []
        sink.define((chosen, "partial", *series, "total" if group_by else "credits"), amounts=len(series) + 1)
        await sink.add([trend.row(position) for position in range(len(trend.periods))])
        _tally_breakdowns(meter, tenant, query.filters, breakdown, sink)
        about = _trend_about(self._openmeter.describe_query(meter, per_period), chosen, query.time_zone, group_by)
        about.append(("Summary query", f"the top 5s: {self._openmeter.describe_query(meter, combinations)}"))
        findings = _findings(window, sink, previous, about=about)
        findings.trend = trend
        findings.no_match = await self._no_match(meter, tenant, query.filters, window, found=bool(samples))
        return findings

    async def forecast(self, tenant: str, query: Query, sink: TableSink) -> Findings:
        """Used so far this window and the projection of the rest, per day in the query's time zone.

        One meter query: the tenant's daily credits in that time zone (the numbers the trend tool shows) from
        LOOKBACK_DAYS before today, or the window's start if earlier, to now. Today's usage so far is known; the
        projection (forecast.py) covers only the rest of today and the days through the window's last day.
        """
        window, zone = query.window, query.zone
        now = (query.as_of or window.start).replace(microsecond=0)
        today = now.astimezone(zone).date()
        first_day = window.start.astimezone(zone).date()
        last_day = window.end.astimezone(zone).date() - timedelta(days=1)
        since = min(first_day, today - timedelta(days=LOOKBACK_DAYS))
        meter = await self.meter()
        daily = AggregateQuery(
            Window(local_midnight(since, zone), now),
            ("tenant",),
            tenant,
            "day",
            query.time_zone,
            filters=self._filters(meter, query),
        )

        async def daily_usage() -> list[UsageRow]:
            return await self._ask(meter, daily) if now > local_midnight(since, zone) else []

        # The balance (when configured) is asked beside the meter, not after it: one round trip's wait, not two.
        # A filtered forecast is one user's (module's, ...) share: the tenant's allowance is not its to run out of.
        crossing_of = _no_crossing if query.filters else (lambda: self._balance_crossing(tenant, now))
        rows, crossing = await together(daily_usage, crossing_of)
        used: dict[date, float] = defaultdict(float)
        for row in _in_scope(rows, tenant, query.filters):
            used[_window_start(row).astimezone(zone).date()] += row.value
        midnight, next_midnight = local_midnight(today, zone), local_midnight(today + timedelta(days=1), zone)
        elapsed = min(max((now - midnight) / (next_midnight - midnight), 0.0), 0.999_999)
        history = {day: value for day, value in used.items() if day < today}
        projection = project_usage(history, today=today, today_elapsed=elapsed, until=last_day)
        used_so_far = math.fsum(value for day, value in used.items() if first_day <= day <= today)
        sink.define(DAY_COLUMNS, amounts=len(DAY_COLUMNS) - 1, total=DAY_TOTAL_COLUMN)
        await sink.add(list(daily_rows(used, projection, first_day=first_day, used_so_far=used_so_far)))
        end = projection.days[-1]
        findings = Findings(
            about=[
                ("query", self._openmeter.describe_query(meter, daily)),
                ("a row", DAY_ROW.format(zone=query.time_zone)),
                ("method", FORECAST_METHOD),
            ]
        )
        findings.forecast = Outlook(
            as_of=now,
            time_zone=query.time_zone,
            first_day=first_day,
            last_day=last_day,
            used_so_far=used_so_far,
            projected_total=used_so_far + end.total,
            interval_80=(used_so_far + end.total_80[0], used_so_far + end.total_80[1]),
            interval_95=(used_so_far + end.total_95[0], used_so_far + end.total_95[1]),
            enough_history=projection.enough_history,
            history_days=projection.history_days,
            level=projection.level,
            **crossing,
        )
        if now > daily.window.start:
            findings.no_match = await self._no_match(meter, tenant, query.filters, daily.window, found=bool(rows))
        return findings

    async def _balance_crossing(self, tenant: str, now: datetime) -> dict[str, Any]:
        """The Outlook's balance fields: the balance and when it runs out at the entitlement's own pace. Empty when
        no balance is configured or the tenant has no metered allowance; a failure to read it leaves the forecast
        standing without it."""
        if self._balance is None:
            return {}
        try:
            found = await self._balance.balance(tenant, now)
        except UserFacingError as exc:
            logger.warning("forecast without the balance crossing for tenant %r: %s", tenant, exc)
            return {}
        if found.status != "metered" or found.outlook is None:
            return {}
        outlook = found.outlook
        return {
            "balance": found.balance,
            "balance_runs_out": (outlook.earliest, outlook.likely, outlook.latest),
            "balance_horizon": outlook.horizon,
            "balance_until_reset": outlook.until_reset,
            "balance_pace": found.pace,
        }

    def _combinations(self, meter: Meter, tenant: str, query: Query) -> AggregateQuery:
        """The tenant's credits per (user, module, product, tenant, skill) over the whole window, filtered."""
        return AggregateQuery(
            query.window,
            tuple(name for name in BREAKDOWN_COLUMNS if name in meter.dimension_paths),
            tenant,
            filters=self._filters(meter, query),
        )

    def _filters(self, meter: Meter, query: Query) -> tuple[tuple[str, str], ...]:
        """The call's filters for a meter query; every meter query of a filtered call carries them. A dimension the
        meter does not have cannot be filtered on (OpenMeter would refuse it): say so."""
        for name, _ in query.filters.pairs:
            if name not in meter.dimension_paths:
                raise MeterConfigError(
                    f"The meter '{meter.slug}' has no {name} dimension, so usage cannot be filtered by it; "
                    f"leave {name} out."
                )
        return query.filters.pairs

    async def _no_match(
        self, meter: Meter, tenant: str, filters: Filters, window: Window, *, found: bool
    ) -> NoMatch | None:
        """When the filters matched nothing: one more query, grouped by the filtered dimensions without the filters
        and inside the tenant only, for the closest existing values. Never asked when something matched."""
        if found or not filters:
            return None
        dimensions = tuple(name for name, _ in filters.pairs)
        rows = await self._ask(meter, AggregateQuery(window, ("tenant", *dimensions), tenant))
        mine = _of_tenant(rows, tenant)
        known = {name: {row.dimensions.get(name) or "" for row in mine} for name in dimensions}
        # In a thread: ranking is an edit distance per name of the tenant, CPU work that grows with the tenant and
        # on the event loop would hold up every other call (and /health) meanwhile.
        start, end = format_utc(window.start), format_utc(window.end)
        return await anyio.to_thread.run_sync(no_match, filters, start, end, known, limiter=self._ranking)

    async def _ask(self, meter: Meter, query: AggregateQuery) -> list[UsageRow]:
        try:
            return await self._openmeter.query(meter, query)
        except OpenMeterError as error:
            if error.status in DEFINITIVE_STATUSES:  # the meter is gone or changed: read its definition anew, so a
                self._meters.evict()  # meter now refused (e.g. no tenant dimension) says so in its own words
                await self._meters.get()
            raise

    def _about(self, meter: Meter, query: AggregateQuery, row: str) -> list[tuple[str, object]]:
        return [("query", self._openmeter.describe_query(meter, query)), ("a row", row)]

    async def _previous(self, meter: Meter, tenant: str, query: Query) -> Previous | None:
        """The preceding window's total and per-user credits, filtered as the window's own; None when it cannot be
        read (the answer stands)."""
        filters = self._filters(meter, query)
        try:
            before = preceding(query.window)
        except OverflowError:  # a window that starts near year 1 has no preceding one
            return None
        by_user = "user" in meter.dimension_paths
        try:
            grouping = ("tenant", *(["user"] if by_user else []))
            rows = await self._ask(meter, AggregateQuery(before, grouping, tenant, filters=filters))
        except OpenMeterError as exc:
            logger.warning("the preceding window could not be read, answering without the comparison: %s", exc)
            return None
        mine = _in_scope(rows, tenant, query.filters)
        users = _sums((row.dimensions.get("user") or "", row.value) for row in mine) if by_user else None
        return Previous(before, math.fsum(row.value for row in mine), users)


TENANT_ROW = "the tenant's credits over the whole window (one row, even at zero usage)"
DAY_ROW = (
    "one calendar day in {zone}, from the window's first day to its last: used = credits recorded (today: so far), "
    "forecast = expected (today: the rest of the day), credits = the two together; cumulative = from the window's "
    "start through that day, with its 80% and 95% intervals (exact for days already past)"
)
FORECAST_METHOD = (
    "a weekday profile times a recent level (exponentially weighted, half-life "
    f"{HALF_LIFE_DAYS:g} days, spikes capped) and a trend shrunk towards flat; intervals from the method's own errors "
    f"replayed on the last {LOOKBACK_DAYS} days; see docs/forecast.md"
)
EVENT_ROW = "one AI-credit event as OpenMeter received it: its time (UTC), user, module, product, tenant, credits"


def _findings(
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


def _trend_about(query: str, granularity: str, time_zone: str, group_by: str | None) -> list[tuple[str, object]]:
    weeks = " (OpenMeter days folded into ISO weeks, Monday first)" if granularity == "week" else ""
    series = "; the top 5 series by credits, the rest summed as Other, total = their sum" if group_by else ""
    return [
        ("query", query),
        ("granularity", granularity + weeks),
        ("time zone", f"{time_zone}: period boundaries are local midnights there (DST included)"),
        (
            "a row",
            f"one {granularity} in {time_zone}, oldest first, with 0 where there was no usage; partial = the window "
            f"covers only part of it{series}",
        ),
        ("unusual", UNUSUAL_RULE),
    ]


def _of_tenant(rows: list[UsageRow], tenant: str) -> list[UsageRow]:
    """The rows of the caller's tenant: the filter already asked for only those; checked again, as everywhere."""
    return [row for row in rows if row.dimensions.get("tenant") == tenant]


def _in_scope(rows: list[UsageRow], tenant: str, filters: Filters) -> list[UsageRow]:
    """The tenant's rows that the filters keep, checked again on each filtered dimension the rows carry."""
    return [
        row
        for row in _of_tenant(rows, tenant)
        if all(row.dimensions.get(name, value) == value for name, value in filters.pairs)
    ]


def summary_columns(breakdown: tuple[str, ...]) -> tuple[str, ...]:
    """All four dimensions: today's table; fewer: the chosen ones in the dimensions' order, then tenant, credits."""
    if tuple(breakdown) == DIMENSIONS:
        return SUMMARY_COLUMNS
    return (*breakdown, "tenant", "credits")


def _combination_row(labels: tuple[str, ...]) -> str:
    """What a summary row is: 'one combination of user, module, product, tenant and skill ...' (or of the breakdown)."""
    *first, last = labels
    named = f"{', '.join(first)} and {last}" if first else last
    return f"one combination of {named} that used credits in the window, largest first"


async def _no_crossing() -> dict[str, Any]:
    return {}


def _sums(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for name, value in pairs:
        values[name].append(value)
    return {name: math.fsum(found) for name, found in values.items()}


def _window_start(row: UsageRow) -> datetime:
    if row.window_start is None:
        raise OpenMeterError(UNREADABLE)
    return row.window_start


def _tally_breakdowns(
    meter: Meter, tenant: str, filters: Filters, rows: list[UsageRow], sink: TableSink
) -> list[UsageRow]:
    """Credits per user, module, product and skill from per-combination rows, for the top 5s; returns the rows of
    the tenant (and of the filters)."""
    mine = _in_scope(rows, tenant, filters)
    for dimension in DIMENSIONS:
        if dimension in meter.dimension_paths:
            sink.tally(dimension, _sums((row.dimensions.get(dimension) or "", row.value) for row in mine))
    return mine
