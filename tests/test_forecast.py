"""The projection's properties (pure): intervals widen and hold the point, flat stays flat, zero stays zero."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ai_credit_usage.questions.forecast import Projection, daily_rows, project_usage
from ai_credit_usage.runtime.window import WindowError, forecast_window

TODAY = date(2026, 3, 11)  # a Wednesday


def days_before(today: date, count: int) -> list[date]:
    return [today - timedelta(days=i) for i in range(count, 0, -1)]


def noisy_weekdays(count: int, seed: int = 7) -> dict[date, float]:
    rng = random.Random(seed)
    history = {}
    for day in days_before(TODAY, count):
        base = 100.0 if day.weekday() < 5 else 15.0
        history[day] = base * rng.uniform(0.6, 1.4) + (400.0 if rng.random() < 0.03 else 0.0)
    return history


def project(history: dict[date, float], *, elapsed: float = 0.0, until: date = date(2026, 3, 31)) -> Projection:
    return project_usage(history, today=TODAY, today_elapsed=elapsed, until=until)


def test_days_run_from_today_through_until_and_totals_accumulate() -> None:
    projection = project(noisy_weekdays(56))
    assert [d.day for d in projection.days] == [TODAY + timedelta(days=i) for i in range(21)]
    running = 0.0
    for day in projection.days:
        running += day.expected
        assert day.total == pytest.approx(running)
    assert projection.enough_history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_intervals_contain_the_point_and_widen_with_distance(seed: int) -> None:
    projection = project(noisy_weekdays(56, seed), elapsed=0.4, until=date(2026, 6, 30))
    previous_80 = previous_95 = -1.0
    for day in projection.days:
        low_80, high_80 = day.total_80
        low_95, high_95 = day.total_95
        assert 0 <= low_95 <= low_80 <= day.total <= high_80 <= high_95
        assert high_80 - low_80 > previous_80
        assert high_95 - low_95 > previous_95
        previous_80, previous_95 = high_80 - low_80, high_95 - low_95


def test_lower_bounds_never_decrease() -> None:
    projection = project(noisy_weekdays(20), until=date(2026, 9, 30))
    lows = [day.total_95[0] for day in projection.days]
    assert lows == sorted(lows)


def test_a_flat_series_forecasts_flat() -> None:
    history = dict.fromkeys(days_before(TODAY, 56), 40.0)
    projection = project(history)
    assert projection.enough_history
    for day in projection.days[1:]:
        assert day.expected == pytest.approx(40.0)
    assert projection.days[0].expected == pytest.approx(40.0)


def test_today_counts_only_its_remaining_share() -> None:
    history = dict.fromkeys(days_before(TODAY, 56), 40.0)
    assert project(history, elapsed=0.75).days[0].expected == pytest.approx(10.0)


@pytest.mark.parametrize("history", [{}, dict.fromkeys(days_before(TODAY, 56), 0.0)], ids=["empty", "all-zero"])
def test_zero_history_forecasts_zero_and_says_it_is_not_enough(history: dict[date, float]) -> None:
    projection = project(history)
    assert not projection.enough_history
    for day in projection.days:
        assert (day.expected, day.total, day.total_80, day.total_95) == (0.0, 0.0, (0.0, 0.0), (0.0, 0.0))


def test_a_short_history_is_not_enough_but_still_projects() -> None:
    projection = project(dict.fromkeys(days_before(TODAY, 5), 10.0))
    assert not projection.enough_history
    assert projection.days[-1].total > 0


def test_missing_days_count_as_zero() -> None:
    history = {day: 70.0 for day in days_before(TODAY, 56) if day.weekday() < 5}  # weekends absent
    projection = project(history)
    weekend = [d for d in projection.days[1:] if d.day.weekday() >= 5]
    weekday = [d for d in projection.days[1:] if d.day.weekday() < 5]
    assert max(d.expected for d in weekend) < 0.2 * min(d.expected for d in weekday)


def test_weekday_rhythm_is_kept() -> None:
    projection = project(noisy_weekdays(56))
    saturday = next(d for d in projection.days if d.day.weekday() == 5)
    monday = next(d for d in projection.days if d.day.weekday() == 0)
    assert monday.expected > 3 * saturday.expected


def test_one_spike_barely_moves_the_level() -> None:
    history = dict.fromkeys(days_before(TODAY, 56), 40.0)
    spiked = {**history, TODAY - timedelta(days=1): 4_000.0}
    assert project(spiked).days[5].expected == pytest.approx(project(history).days[5].expected, rel=0.1)


def test_days_on_or_after_today_in_history_are_ignored() -> None:
    history = dict.fromkeys(days_before(TODAY, 56), 40.0)
    assert project({**history, TODAY: 9_999.0}) == project(history)


@pytest.mark.parametrize("elapsed", [-0.1, 1.0])
def test_elapsed_share_must_be_in_range(elapsed: float) -> None:
    with pytest.raises(ValueError, match="today_elapsed"):
        project({}, elapsed=elapsed)


def test_until_before_today_is_refused() -> None:
    with pytest.raises(ValueError, match="before today"):
        project({}, until=TODAY - timedelta(days=1))


# --- the forecast's window and its rows ---------------------------------------------------------------------------


def test_the_default_window_is_this_calendar_month_in_the_time_zone() -> None:
    december = forecast_window(None, datetime(2026, 12, 31, 23, 30, tzinfo=UTC), UTC)
    assert (december.start, december.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # 23:30 UTC on December 31st is already January 1st in Paris: January there.
    paris = forecast_window(None, datetime(2026, 12, 31, 23, 30, tzinfo=UTC), ZoneInfo("Europe/Paris"))
    assert (paris.start, paris.end) == (datetime(2026, 12, 31, 23, tzinfo=UTC), datetime(2027, 1, 31, 23, tzinfo=UTC))


def test_to_date_runs_through_that_day_from_today_to_a_year_ahead() -> None:
    now = datetime(2026, 3, 11, 9, tzinfo=UTC)
    assert forecast_window("2026-03-11", now).end == datetime(2026, 3, 12, tzinfo=UTC)
    assert forecast_window("2027-03-12", now).end == datetime(2027, 3, 13, tzinfo=UTC)  # 366 days ahead
    with pytest.raises(WindowError, match="more than a year ahead"):
        forecast_window("2027-03-13", now)
    with pytest.raises(WindowError, match="in the past"):
        forecast_window("2026-03-10", now)


def test_rows_are_the_past_days_as_they_were_then_the_projection() -> None:
    history = dict.fromkeys(days_before(TODAY, 56), 40.0)
    projection = project(history, elapsed=0.5)
    used = {**history, TODAY: 25.0}
    so_far = 40.0 * 10 + 25.0  # March 1st to 10th, and today so far
    rows = daily_rows(used, projection, first_day=date(2026, 3, 1), used_so_far=so_far)
    assert [row[0] for row in rows] == [date(2026, 3, 1) + timedelta(days=i) for i in range(31)]
    assert rows[9] == (date(2026, 3, 10), 40.0, 0.0, 40.0, 400.0, 400.0, 400.0, 400.0, 400.0)
    today = rows[10]
    assert today[1] == 25.0 and today[2] == pytest.approx(20.0) and today[4] == pytest.approx(so_far + 20.0)
    assert math.fsum(row[3] for row in rows) == pytest.approx(rows[-1][4])  # the days add up to the total


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.just(0.0), st.floats(0, 1e6)), min_size=0, max_size=100),
    elapsed=st.floats(0, 0.999),
    ahead=st.integers(0, 120),
)
# A draw of CI's once: the residuals' scatter was a subnormal float, whose square is 0 (issue 23).
@example(values=[0.0] * 10 + [1.0] * 10 + [2.2250738585e-313], elapsed=0.0, ahead=0)
def test_any_history_gives_nested_widening_non_negative_bounds(values: list[float], elapsed: float, ahead: int) -> None:
    history = dict(zip(days_before(TODAY, len(values)), values, strict=True))
    projection = project_usage(history, today=TODAY, today_elapsed=elapsed, until=TODAY + timedelta(days=ahead))
    assert len(projection.days) == ahead + 1
    previous_low = previous_width = 0.0
    for day in projection.days:
        assert day.expected >= 0
        low_95, high_95 = day.total_95
        low_80, high_80 = day.total_80
        assert 0 <= low_95 <= low_80 <= day.total <= high_80 <= high_95
        assert low_95 >= previous_low  # usage accumulates
        assert high_95 - low_95 >= previous_width - 1e-6 * max(1.0, high_95)
        previous_low, previous_width = low_95, high_95 - low_95
