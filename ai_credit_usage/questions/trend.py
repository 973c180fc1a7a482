"""Credit trends: calendar periods in a time zone, zero-filled series, the top 5 plus "Other", unusual periods.

OpenMeter buckets usage into calendar windows (v1: `windowSize` DAY or MONTH in `windowTimeZone`; v3: `granularity`
P1D or P1M in `time_zone`) but only returns windows that had events, and has no weeks on either API. So the periods
are laid out here, in the time zone (a day across a DST change is 23 or 25 hours long), and the query's rows are
folded into them: days into ISO weeks starting on Monday, missing periods as 0. A period that the window cuts at
either end is partial: it holds only the window's part.

Unusual periods are those above the median of the complete periods by more than 3 median absolute deviations: the
median and the MAD ignore a single spike, where a mean and a standard deviation would be dragged towards it. Two edges
need more: on a very steady series the MAD is about 0, so anything a cent above typical would count; an unusual
period must therefore also be at least 1.5 times the typical one. And when most complete periods had no usage (the
median is 0), every period with usage would count; the typical period is then the median of the complete periods
that had usage, and with too few of those nothing is judged.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from ai_credit_usage.questions.filters import Dimension
from ai_credit_usage.runtime.errors import Outcome, UserFacingError, shown
from ai_credit_usage.runtime.window import Window, local_midnight, next_month

Granularity = Literal["day", "week", "month"]
DAILY_UP_TO = timedelta(days=45)
WEEKLY_UP_TO = timedelta(weeks=26)
MAX_PERIODS = 1_000
TOP_SERIES = 5
OTHER = "Other"
NO_VALUE = "(none)"  # the label of usage whose event had no value for the dimension
MAD_LIMIT = 3
MIN_BASELINE = 4  # complete periods (or complete periods with usage) needed before anything can be called unusual
MIN_TIMES_TYPICAL = 1.5  # an unusual period is also at least this many times the typical one
_CALENDAR_UNIT: dict[Granularity, Literal["day", "month"]] = {"day": "day", "week": "day", "month": "month"}


class TrendError(UserFacingError):
    """A trend argument the caller can fix; the message names the parameter."""

    outcome: Outcome = "invalid"


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def parse_time_zone(name: str | None) -> ZoneInfo:
    """An IANA time zone by name ("UTC" when not given); anything else is an error naming `time_zone`."""
    text = (name or "").strip() or "UTC"
    if text not in _zone_names():
        raise TrendError(
            f"time_zone {shown(name)} is not an IANA time zone name: use one such as UTC, Europe/Paris or "
            "America/New_York."
        )
    return ZoneInfo(text)


def choose_granularity(window: Window, zone: ZoneInfo) -> Granularity:
    """Daily up to 45 days, weekly up to 26 weeks, monthly beyond: a readable number of points either way.

    Measured on the local clock in `zone`: 45 Paris days across the October DST change are 45 days 1 hour in UTC.
    """
    span = _local(window.end, zone) - _local(window.start, zone)
    if span <= DAILY_UP_TO:
        return "day"
    return "week" if span <= WEEKLY_UP_TO else "month"


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time in `zone`, without its offset, so differences count calendar time there."""
    return moment.astimezone(zone).replace(tzinfo=None)


def calendar_unit(granularity: Granularity) -> Literal["day", "month"]:
    """The calendar window OpenMeter is asked for: it has no week, so weeks are folded from days."""
    return _CALENDAR_UNIT[granularity]


def unusual_rule(typical: str, deviation: str = "", *, times_first: bool = False) -> str:
    """The rule in words, with the typical period as `typical` names it (and the deviation, when known);
    `times_first` leads with the ratio, for a heading that ends on the typical period."""
    deviations = f" ({deviation})" if deviation else ""
    if times_first:
        return (
            f"at least {MIN_TIMES_TYPICAL:g} times and more than {MAD_LIMIT} median absolute deviations{deviations} "
            f"above {typical}"
        )
    return (
        f"more than {MAD_LIMIT} median absolute deviations{deviations} above {typical} and at least "
        f"{MIN_TIMES_TYPICAL:g} times it"
    )


UNUSUAL_RULE = (
    f"a period {unusual_rule('the typical period')}; the typical period is the median complete period, or, when "
    "that had no usage, the median complete period with usage"
)


def period_label(day: date, granularity: Granularity) -> date:
    """The first local day of the period holding `day`: itself, its week's Monday, or its month's 1st."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _following(label: date, granularity: Granularity) -> date:
    if granularity == "day":
        return label + timedelta(days=1)
    if granularity == "week":
        return label + timedelta(weeks=1)
    return next_month(label)


@dataclass(frozen=True)
class Period:
    label: date  # the first local day of the period
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    partial: bool  # the window cuts it: it holds only the window's part


def periods_of(window: Window, granularity: Granularity, zone: ZoneInfo) -> list[Period]:
    """Every calendar period in `zone` that overlaps the window, oldest first."""
    label = period_label(window.start.astimezone(zone).date(), granularity)
    periods: list[Period] = []
    while (start := local_midnight(label, zone)) < window.end:
        following = _following(label, granularity)
        end = local_midnight(following, zone)
        periods.append(Period(label, start, end, start < window.start or end > window.end))
        if len(periods) > MAX_PERIODS:
            raise TrendError(
                f"That is more than {MAX_PERIODS:,} {granularity}s; ask for a coarser granularity "
                "(week or month) or a shorter window."
            )
        label = following
    return periods


@dataclass(frozen=True)
class Unusual:
    index: int  # into Trend.periods
    credits: float
    times_typical: float  # credits over the typical period


@dataclass
class Trend:
    granularity: Granularity
    time_zone: str
    group_by: Dimension | None
    periods: list[Period]
    series: list[str]  # the labels of the kept series, then OTHER when there were more; empty without group_by
    values: list[list[float]]  # per period, per series
    totals: list[float]  # per period: exactly the fsum of that period's series values
    series_totals: dict[str, float] = field(default_factory=dict)  # every series over the window, before the cut
    typical: float | None = None  # the median complete period (with usage, when `typical_with_usage`)
    deviation: float | None = None  # the median absolute deviation of the same periods
    typical_with_usage: bool = False  # most complete periods had no usage: judged against those that had some
    complete: int = 0  # complete periods in the window
    complete_with_usage: int = 0  # of which had usage
    unusual: list[Unusual] = field(default_factory=list)  # largest credits first
    has_other: bool = False  # the last series sums every series beyond the top 5

    @property
    def judged(self) -> bool:
        """Whether there were enough complete periods (with usage, if the median had none) to say what is unusual."""
        return self.typical is not None

    @property
    def too_few_with_usage(self) -> bool:
        """Not judged because most complete periods had no usage and too few had some (not for lack of periods)."""
        return not self.judged and self.complete >= MIN_BASELINE

    def not_judged(self, *, short: bool = False) -> str:
        """Why nothing is called unusual, when too few periods allow no judgement: a sentence, or a short note."""
        unit = self.granularity
        if self.too_few_with_usage:
            if short:
                return f"too few {unit}s with usage to judge ({self.complete_with_usage}; {MIN_BASELINE} needed)"
            return (
                f"Most complete {unit}s had no usage and only {self.complete_with_usage} had some: too few {unit}s "
                f"with usage to say which are unusual; at least {MIN_BASELINE} are needed."
            )
        if short:
            return f"too few complete {unit}s to judge ({self.complete}; {MIN_BASELINE} needed)"
        return (
            f"Too few complete {unit}s ({self.complete}) to say which are unusual; at least {MIN_BASELINE} are needed."
        )

    def typical_name(self) -> str:
        """ "typical day", or "typical day with usage" when the typical period is among those with usage."""
        return f"typical {self.granularity}" + (" with usage" if self.typical_with_usage else "")

    def row(self, position: int) -> tuple[Any, ...]:
        """The Data sheet's row for a period: its first day, partial yes/no, the series (if any), the total."""
        partial = "yes" if self.periods[position].partial else "no"
        return (self.periods[position].label, partial, *self.values[position], self.totals[position])


def other_label(names: Iterable[str]) -> str:
    """ "Other", unless a kept series is itself called that; then "Other (rest)" keeps the two apart."""
    return f"{OTHER} (rest)" if OTHER in set(names) else OTHER


def series_label(name: str) -> str:
    return name if name else NO_VALUE


def build_trend(
    periods: list[Period],
    granularity: Granularity,
    time_zone: str,
    group_by: Dimension | None,
    samples: Iterable[tuple[date, str, float]],
) -> Trend:
    """Zero-filled series from `(local day the OpenMeter window starts, series name, credits)` samples.

    With `group_by`, the five series with the most credits over the window are kept and the rest are summed per
    period as "Other"; every period's total is the exact sum of what its row shows.
    """
    index = {period.label: position for position, period in enumerate(periods)}
    cells: dict[str, list[list[float]]] = {}
    for day, name, value in samples:
        position = index.get(period_label(day, granularity))
        if position is None:  # outside the periods: cannot happen for windows OpenMeter aligns as documented
            continue
        cells.setdefault(name if group_by else "", [[] for _ in periods])[position].append(value)
    per_series = {name: [math.fsum(values) for values in columns] for name, columns in cells.items()}
    series_totals = {name: math.fsum(column) for name, column in per_series.items()}
    if group_by is None:
        column = per_series.get("", [0.0] * len(periods))
        trend = Trend(granularity, time_zone, None, periods, [], [[] for _ in periods], column, series_totals)
    else:
        ranked = sorted(series_totals, key=lambda name: (-series_totals[name], name))
        kept, rest = ranked[:TOP_SERIES], ranked[TOP_SERIES:]
        labels = [series_label(name) for name in kept]
        values = [[per_series[name][position] for name in kept] for position in range(len(periods))]
        if rest:
            labels.append(other_label(labels))
            for position, row in enumerate(values):
                row.append(math.fsum(per_series[name][position] for name in rest))
        totals = [math.fsum(row) for row in values]
        labelled = {series_label(name): total for name, total in series_totals.items()}
        trend = Trend(granularity, time_zone, group_by, periods, labels, values, totals, labelled, has_other=bool(rest))
    _judge(trend)
    return trend


def _judge(trend: Trend) -> None:
    baseline = [total for period, total in zip(trend.periods, trend.totals, strict=True) if not period.partial]
    with_usage = [total for total in baseline if total > 0]
    trend.complete, trend.complete_with_usage = len(baseline), len(with_usage)
    if len(baseline) < MIN_BASELINE:
        return
    typical = statistics.median(baseline)
    if typical <= 0:  # most complete periods had no usage: against 0, every period with usage would stand out
        if len(with_usage) < MIN_BASELINE:
            return
        baseline, typical, trend.typical_with_usage = with_usage, statistics.median(with_usage), True
    deviation = statistics.median(abs(total - typical) for total in baseline)
    trend.typical, trend.deviation = typical, deviation
    threshold = typical + MAD_LIMIT * deviation
    for position, total in enumerate(trend.totals):
        # "More than a visible cent above typical" keeps float dust on an all-equal series from counting.
        if total > threshold and total >= MIN_TIMES_TYPICAL * typical and total - typical >= 0.01:
            trend.unusual.append(Unusual(position, total, total / typical))
    trend.unusual.sort(key=lambda found: -found.credits)  # stable: equal credits stay in period order
