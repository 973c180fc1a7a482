"""The half-open UTC time window a question is about, from the tools' optional `from_date` / `to_date`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from ai_credit_usage.runtime.errors import Outcome, UserFacingError, shown

Clock = Callable[[], datetime]
DEFAULT_SPAN = timedelta(days=7)
# The instants a window may span. Beyond them there is no AI usage to ask about, and near datetime's own limits
# (years 1 and 9999) a time zone, a calendar period or the preceding window overflows (issue 16 F5).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
FORECAST_REACH_DAYS = 366  # a forecast's to_date may be at most this many days after today
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Calendar date, a time to at least the minute, an optional offset. Python's fromisoformat also takes forms such as
# 20260131 or 2026-W05-6 that would then be read as midnight, silently dropping the day a date-only to_date includes.
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?$", re.I)


class WindowError(UserFacingError):
    """A date argument the caller can fix; the message names the parameter and says what is accepted."""

    outcome: Outcome = "invalid"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with `Z`, as OpenMeter wants it and as the answers show it."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """[start, end): `start` inclusive, `end` exclusive, both aware UTC datetimes."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"{format_utc(self.start)} to {format_utc(self.end)} (end exclusive)"

    @property
    def is_instant(self) -> bool:
        """A question asked as of one moment (the balance) has no span."""
        return self.start == self.end


def resolve_window(from_date: str | None, to_date: str | None, now: datetime, zone: tzinfo = UTC) -> Window:
    """Turn the tool arguments into a window; defaults are "now" for the end and 7 days before the end for the start.

    A date-only `to_date` includes that whole day, so January is `from_date=2026-01-01, to_date=2026-01-31`. Dates
    and times without an offset are read in `zone`: UTC, except for a trend asked for in another time zone, where
    "March" should mean March there.
    """
    start = _parse("from_date", from_date, whole_day=False, zone=zone) if _given(from_date) else None
    if start is not None and not EARLIEST <= start < LATEST:
        raise _out_of_range("from_date", from_date)
    end = _parse("to_date", to_date, whole_day=True, zone=zone) if _given(to_date) else now.astimezone(UTC)
    if _given(to_date) and not EARLIEST < end <= LATEST:
        raise _out_of_range("to_date", to_date)
    if start is None:
        start = end - DEFAULT_SPAN
        if start < EARLIEST:  # the default 7 days before a to_date in the first week of 1970
            raise _out_of_range("to_date", to_date)
    if start.replace(microsecond=0) >= end.replace(microsecond=0):
        # Quote what the caller wrote: the resolved end of a date-only to_date is the next midnight.
        until = f"to_date {shown(to_date)} (end {format_utc(end)}, exclusive)" if _given(to_date) else "now"
        raise WindowError(
            f"from_date {shown(from_date)} ({format_utc(start)}) must be before {until}: swap them or widen the window."
        )
    # OpenMeter keeps whole seconds; truncating here keeps what we show and what we ask for the same.
    return Window(start=start.replace(microsecond=0), end=end.replace(microsecond=0))


def _out_of_range(name: str, raw: str | None) -> WindowError:
    return WindowError(
        f"{name} {shown(raw)} is outside the dates this server can ask about (1970-01-01 to 2099-12-31): "
        "use a date in that range."
    )


def _given(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def local_midnight(day: date, zone: tzinfo) -> datetime:
    """Midnight of `day` in `zone` as a UTC instant; zoneinfo applies the offset in force that day, so a day across
    a DST change is 23 or 25 hours long."""
    return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)


def _parse(name: str, raw: str | None, *, whole_day: bool, zone: tzinfo = UTC) -> datetime:
    text = (raw or "").strip()
    try:
        if _DATE_ONLY.match(text):
            if not 1970 <= int(text[:4]) < 2100:  # before the arithmetic below can overflow at year 9999
                raise _out_of_range(name, raw)
            return local_midnight(date.fromisoformat(text) + timedelta(days=1 if whole_day else 0), zone)
        if not _DATE_TIME.match(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("z", "Z").replace(",", "."))
        if not 1970 <= moment.year < 2100:  # a fixed offset could still move it across the bounds: checked again
            raise _out_of_range(name, raw)
        if moment.tzinfo is None:  # a time without an offset is UTC (or the trend's time zone)
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except ValueError:
        raise WindowError(
            f"{name} {shown(raw)} is not a date: use ISO 8601 such as 2026-01-15, 2026-01-15T00:00:00Z "
            "or 2026-01-15T00:00:00+02:00."
        ) from None


def forecast_window(to_date: str | None, now: datetime, zone: tzinfo = UTC) -> Window:
    """The window a forecast answers for: from the start of the current calendar month in `zone` to the end of
    `to_date` (a day, inclusive; default: the last day of this month). `to_date` must not be in the past (that is
    what the usage tools answer) and at most FORECAST_REACH_DAYS ahead."""
    today = now.astimezone(zone).date()
    month_start = today.replace(day=1)
    if _given(to_date):
        text = (to_date or "").strip()
        try:
            if not _DATE_ONLY.match(text):
                raise ValueError(text)
            last_day = date.fromisoformat(text)
        except ValueError:
            raise WindowError(
                f"to_date {shown(to_date)} is not a day: the forecast runs through a whole day, such as 2026-06-30."
            ) from None
        if last_day < today:
            raise WindowError(
                f"to_date {shown(to_date)} is in the past (today is {today.isoformat()} in {_zone_name(zone)}): the "
                "forecast looks ahead; for usage already recorded use get_credit_usage_by_tenant or "
                "get_credit_usage_trend."
            )
        reach = today + timedelta(days=FORECAST_REACH_DAYS)
        if last_day > reach:
            raise WindowError(
                f"to_date {shown(to_date)} is more than a year ahead: the forecast reaches {reach.isoformat()} at most."
            )
    else:
        last_day = next_month(month_start) - timedelta(days=1)
    return Window(local_midnight(month_start, zone), local_midnight(last_day + timedelta(days=1), zone))


def next_month(day: date) -> date:
    """The first day of the month after `day`'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or "UTC")
