from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ai_credit_usage.runtime.window import WindowError, format_utc, resolve_window

NOW = datetime(2026, 1, 20, 12, 30, 15, 987654, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_defaults_are_the_last_seven_days_to_the_second() -> None:
    window = resolve_window(None, None, NOW)
    assert window.end == utc(2026, 1, 20, 12, 30, 15)
    assert window.start == window.end - timedelta(days=7)


def test_blank_strings_count_as_absent() -> None:
    assert resolve_window("", "  ", NOW) == resolve_window(None, None, NOW)


@pytest.mark.parametrize(
    ("from_date", "to_date", "start", "end"),
    [
        pytest.param("2026-01-01", "2026-01-31", utc(2026, 1, 1), utc(2026, 2, 1), id="january-by-dates"),
        pytest.param("2026-01-15", "2026-01-15", utc(2026, 1, 15), utc(2026, 1, 16), id="one-day"),
        pytest.param("2026-01-01T00:00:00Z", "2026-01-02T06:00:00Z", utc(2026, 1, 1), utc(2026, 1, 2, 6), id="zulu"),
        pytest.param(
            "2026-01-01T00:00:00+02:00",
            "2026-01-01T12:00:00-05:00",
            utc(2025, 12, 31, 22),
            utc(2026, 1, 1, 17),
            id="offsets",
        ),
        pytest.param("2026-01-01T08:00:00", "2026-01-01T09:00:00", utc(2026, 1, 1, 8), utc(2026, 1, 1, 9), id="naive"),
        pytest.param(
            "2026-01-01 08:00", "2026-01-01T09:00:00.5z", utc(2026, 1, 1, 8), utc(2026, 1, 1, 9), id="space-fraction"
        ),
    ],
)
def test_accepted_forms(from_date: str, to_date: str, start: datetime, end: datetime) -> None:
    window = resolve_window(from_date, to_date, NOW)
    assert (window.start, window.end) == (start, end)


def test_default_start_is_seven_days_before_an_explicit_end() -> None:
    window = resolve_window(None, "2026-01-10", NOW)
    assert (window.start, window.end) == (utc(2026, 1, 4), utc(2026, 1, 11))


def test_only_from_date_runs_to_now() -> None:
    window = resolve_window("2026-01-01", None, NOW)
    assert (window.start, window.end) == (utc(2026, 1, 1), utc(2026, 1, 20, 12, 30, 15))


@pytest.mark.parametrize(
    ("from_date", "to_date", "named"),
    [
        pytest.param("yesterday", None, "from_date", id="words"),
        pytest.param(None, "2026-13-01", "to_date", id="bad-month"),
        pytest.param("2026-01-01", "2026/01/02", "to_date", id="slashes"),
        # Forms Python's fromisoformat takes but SPEC does not: read as midnight, they would drop to_date's day.
        pytest.param(None, "20260131", "to_date", id="basic-format"),
        pytest.param(None, "2026-W05-6", "to_date", id="week-date"),
        pytest.param("2026-01-31T12", None, "from_date", id="hour-only"),
        pytest.param(None, "0001-01-01", "to_date", id="default-start-before-year-1"),
        pytest.param("9999-12-31T23:59:59-05:00", None, "from_date", id="past-year-9999-in-utc"),
    ],
)
def test_unparseable_values_name_the_parameter(from_date: str | None, to_date: str | None, named: str) -> None:
    with pytest.raises(WindowError, match=named):
        resolve_window(from_date, to_date, NOW)


@pytest.mark.parametrize(
    ("from_date", "to_date"),
    [("2026-01-10", "2026-01-09"), ("2026-01-10T00:00:00Z", "2026-01-10T00:00:00Z")],
)
def test_start_must_be_before_end(from_date: str, to_date: str) -> None:
    with pytest.raises(WindowError, match=rf"from_date '{from_date}' .* must be before to_date '{to_date}'"):
        resolve_window(from_date, to_date, NOW)


def test_a_future_from_date_without_to_date_is_compared_with_now() -> None:
    with pytest.raises(WindowError, match=r"from_date '2026-02-01' \(2026-02-01T00:00:00Z\) must be before now:"):
        resolve_window("2026-02-01", None, NOW)


def test_format_utc_uses_z() -> None:
    assert format_utc(datetime(2026, 1, 1, 2, tzinfo=UTC).astimezone()) == "2026-01-01T02:00:00Z"


# Issue 16 F5: far-future and far-past windows are refused by name, whatever tool or time zone asks.
@pytest.mark.parametrize(
    ("from_date", "to_date", "named"),
    [
        pytest.param(None, "9999-12-31", "to_date", id="to-year-9999"),
        pytest.param(None, "9999-12-30", "to_date", id="to-last-whole-day"),
        pytest.param(None, "9999-12-31T23:59:59Z", "to_date", id="to-last-second"),
        pytest.param(None, "2100-01-01T00:00:01Z", "to_date", id="just-past-the-ceiling"),
        pytest.param("0001-01-01", None, "from_date", id="from-year-1"),
        pytest.param("1969-12-31T23:59:59Z", "2026-01-01", "from_date", id="just-before-the-floor"),
        pytest.param("0001-01-01", "0001-01-03", "from_date", id="both-in-year-1"),
        pytest.param(None, "1970-01-03", "to_date", id="default-start-before-the-floor"),
        pytest.param("9999-12-29", "9999-12-30", "from_date", id="both-in-year-9999"),
    ],
)
def test_far_windows_name_the_parameter(from_date: str | None, to_date: str | None, named: str) -> None:
    with pytest.raises(WindowError, match=rf"^{named} '.*' is outside .*1970-01-01.*2099-12-31"):
        resolve_window(from_date, to_date, NOW)


def test_the_supported_range_itself_is_accepted() -> None:
    window = resolve_window("1970-01-01", "2099-12-31", NOW)
    assert (window.start, window.end) == (utc(1970, 1, 1), utc(2100, 1, 1))
