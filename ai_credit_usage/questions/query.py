"""A tool call's parameters, parsed once into one typed value that travels down to the question."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ai_credit_usage.questions.filters import DIMENSIONS, NO_FILTERS, Dimension, Filters, parse_filters
from ai_credit_usage.questions.trend import Granularity, parse_time_zone
from ai_credit_usage.runtime.window import Window, forecast_window, resolve_window

UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class Query:
    """What a question is asked about: the window, the filters, and for the trend its time zone, granularity and
    grouping (one dimension); for the summary its breakdown (`breakdown`: the dimensions of its rows).

    `zone` also reads dates and offset-less times of the window: UTC for every tool without a `time_zone`.
    """

    window: Window
    zone: ZoneInfo = field(default=UTC_ZONE)
    granularity: Granularity | None = None
    group_by: Dimension | None = None
    as_of: datetime | None = None  # the moment the question is asked at: a forecast splits known from projected there
    filters: Filters = NO_FILTERS  # every meter query and event read of the call narrows to these
    breakdown: tuple[Dimension, ...] = DIMENSIONS  # the summary's rows: one per combination of these

    @property
    def time_zone(self) -> str:
        return self.zone.key


def parse_query(arguments: Mapping[str, Any], now: datetime) -> Query:
    """The tool's arguments (already checked against its declared parameters) as a `Query`; a value the caller
    can fix raises a `UserFacingError` naming the parameter."""
    zone = parse_time_zone(arguments.get("time_zone"))
    window = resolve_window(arguments.get("from_date"), arguments.get("to_date"), now, zone)
    filters = parse_filters(arguments)
    group_by = arguments.get("group_by")
    if isinstance(group_by, list):  # the summary's breakdown: a list of dimensions (the trend's is one)
        chosen = tuple(name for name in DIMENSIONS if name in group_by)
        return Query(window, zone, filters=filters, breakdown=chosen or DIMENSIONS)
    return Query(window, zone, arguments.get("granularity"), group_by, filters=filters)


def parse_forecast_query(arguments: Mapping[str, Any], now: datetime) -> Query:
    """A forecast's arguments: `to_date` (a day, not in the past) and `time_zone`; the window starts with the
    current calendar month there."""
    zone = parse_time_zone(arguments.get("time_zone"))
    window = forecast_window(arguments.get("to_date"), now, zone)
    return Query(window, zone, as_of=now.astimezone(UTC_ZONE), filters=parse_filters(arguments))


def parse_moment_query(arguments: Mapping[str, Any], now: datetime) -> Query:
    """A question asked as of a moment, with no window to read (the balance): the window is that instant."""
    return Query(Window(now, now), as_of=now)
