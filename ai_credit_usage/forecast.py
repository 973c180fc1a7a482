"""Daily usage projection: a weekday profile times a recent level, intervals from the method's own errors.

The method (pure, no I/O; measured by scripts/backtest.py, described with its figures in docs/forecast.md):

1. The history is the complete days before today, the last `LOOKBACK_DAYS` of them at most, from the first day the
   mapping names (a missing day inside counts as zero). Values far above the typical day are capped at
   `median + SPIKE_MADS x MAD` before anything is fitted, so one spike does not move the level or the profile.
2. The weekday profile: each weekday's mean of the capped values over the overall mean, shrunk towards 1 when few
   weeks are known (a weekday seen once says little).
3. The level: an exponentially weighted mean of the capped values divided by their weekday factor, half-life
   `HALF_LIFE_DAYS`, so recent weeks weigh most.
4. Day d's expected usage is level x factor(weekday of d); today's only for the part of today still to come.
5. Intervals: the method is replayed on the history itself (fitted on the days before each cut-off, compared with
   the days after it); the squared errors of the cumulative totals, relative to the level at each cut-off, are
   fitted as a x h + b x h^2 (h = days ahead: day-to-day noise grows with h, a wrong level with h^2). A floor keeps a
   perfectly regular history from claiming certainty. The bounds are the point forecast -/+ z x that spread, never
   below zero and never decreasing (usage accumulates).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

LOOKBACK_DAYS = 56  # eight weeks: enough for a weekday profile, recent enough for the level
MIN_HISTORY_DAYS = 14  # below two weeks the answer says there is too little history to trust
HALF_LIFE_DAYS = 14.0
SPIKE_MADS = 5.0
FLAT_SCALE = 0.25  # the MAD stand-in, as a share of the typical day, where the MAD is 0 (a flat series)
PROFILE_SHRINK_WEEKS = 1.0  # pseudo-weeks at factor 1 added to each weekday's mean
MIN_TRAIN_DAYS = 14  # a replayed cut-off needs this many days before it
FLOOR_DAILY = 0.10  # relative spread floor per day of noise (a x h part)
FLOOR_LEVEL = 0.05  # relative spread floor of the level (b x h^2 part)
Z_80 = 1.2815515655446004
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class ProjectedDay:
    day: date  # a calendar day in the caller's time zone
    expected: float  # that day's expected usage (for today: only the rest of today)
    total: float  # cumulative expected usage from the projection's start through this day
    total_80: tuple[float, float]  # (low, high) of `total`, 80% interval
    total_95: tuple[float, float]  # (low, high) of `total`, 95% interval


@dataclass(frozen=True)
class Projection:
    days: tuple[ProjectedDay, ...]  # today first, then each day through `until`
    enough_history: bool  # False: too little history to trust (the answer says so in one sentence)
    history_days: int = 0  # complete days the method learned from
    level: float = 0.0  # the recent typical day, weekday effect removed
    weekday_factors: tuple[float, ...] = (1.0,) * 7  # Monday first


@dataclass(frozen=True)
class _Model:
    level: float
    factors: tuple[float, ...]  # by weekday, Monday = 0

    def expected(self, day: date) -> float:
        return self.level * self.factors[day.weekday()]


def project_usage(history: Mapping[date, float], *, today: date, today_elapsed: float, until: date) -> Projection:
    """Project daily usage from `history` (complete past days before `today`; a missing day counts as zero).
    `today_elapsed` in [0, 1) is the share of today already past (its usage is known, not forecast).
    Cumulative totals start at 0: the caller adds what is already used."""
    if not 0.0 <= today_elapsed < 1.0:
        raise ValueError(f"today_elapsed must be in [0, 1), not {today_elapsed}")
    if until < today:
        raise ValueError(f"until {until} is before today {today}")
    start, values = _series(history, today)
    model = _fit(values, start)
    spread = _spread(values, start) if len(values) >= MIN_HISTORY_DAYS else None
    a, b = spread if spread is not None else (FLOOR_DAILY**2 * 4, FLOOR_LEVEL**2 * 4)
    days: list[ProjectedDay] = []
    total = 0.0
    ahead = 0.0  # days ahead, today counting for its remaining share
    low_80 = low_95 = 0.0
    day = today
    while day <= until:
        share = 1.0 - today_elapsed if day == today else 1.0
        expected = model.expected(day) * share
        total += expected
        ahead += share
        sigma = model.level * math.sqrt(a * ahead + b * ahead * ahead)
        low_80 = max(low_80, total - Z_80 * sigma)
        low_95 = max(low_95, total - Z_95 * sigma)
        days.append(
            ProjectedDay(
                day=day,
                expected=expected,
                total=total,
                total_80=(min(low_80, total), total + Z_80 * sigma),
                total_95=(min(low_95, total), total + Z_95 * sigma),
            )
        )
        day += timedelta(days=1)
    enough = len(values) >= MIN_HISTORY_DAYS and any(value > 0 for value in values)
    return Projection(
        days=tuple(days),
        enough_history=enough,
        history_days=len(values),
        level=model.level,
        weekday_factors=model.factors,
    )


def _series(history: Mapping[date, float], today: date) -> tuple[date, list[float]]:
    """The complete days before `today` from the first one known (at most LOOKBACK_DAYS), zero-filled."""
    known = [day for day in history if day < today]
    if not known:
        return today, []
    start = max(min(known), today - timedelta(days=LOOKBACK_DAYS))
    count = (today - start).days
    return start, [max(0.0, float(history.get(start + timedelta(days=i), 0.0))) for i in range(count)]


def _capped(values: Sequence[float]) -> list[float]:
    if len(values) < 3:
        return list(values)
    middle = statistics.median(values)
    mad = statistics.median(abs(value - middle) for value in values)
    nonzero = [value for value in values if value > 0]
    scale = mad if mad > 0 else (FLAT_SCALE * statistics.median(nonzero) if nonzero else 0.0)
    cap = middle + SPIKE_MADS * scale
    return [min(value, cap) for value in values]


def _fit(values: Sequence[float], start: date) -> _Model:
    if not values:
        return _Model(0.0, (1.0,) * 7)
    capped = _capped(values)
    overall = statistics.fmean(capped)
    by_weekday: list[list[float]] = [[] for _ in range(7)]
    for i, value in enumerate(capped):
        by_weekday[(start + timedelta(days=i)).weekday()].append(value)
    if overall > 0:
        raw = [
            (sum(seen) / overall + PROFILE_SHRINK_WEEKS) / (len(seen) + PROFILE_SHRINK_WEEKS) if seen else 1.0
            for seen in by_weekday
        ]
        mean_factor = statistics.fmean(raw)
        factors = tuple(factor / mean_factor for factor in raw)
    else:
        factors = (1.0,) * 7
    decay = 0.5 ** (1.0 / HALF_LIFE_DAYS)
    weighted = weights = 0.0
    for i, value in enumerate(capped):
        factor = factors[(start + timedelta(days=i)).weekday()]
        if factor <= 0:
            continue
        weight = decay ** (len(capped) - 1 - i)
        weighted += weight * value / factor
        weights += weight
    return _Model(weighted / weights if weights else 0.0, factors)


def _spread(values: Sequence[float], start: date) -> tuple[float, float]:
    """(a, b) of the relative variance a x h + b x h^2 of cumulative totals h days ahead, from replayed cut-offs."""
    rows: list[tuple[float, float]] = []  # (h, squared relative error)
    for cut in range(MIN_TRAIN_DAYS, len(values)):
        model = _fit(values[:cut], start)
        if model.level <= 0:
            continue
        forecast = actual = 0.0
        for h in range(1, len(values) - cut + 1):
            day = start + timedelta(days=cut + h - 1)
            forecast += model.expected(day)
            actual += values[cut + h - 1]
            rows.append((float(h), ((actual - forecast) / model.level) ** 2))
    a, b = _fit_variance(rows)
    return max(a, FLOOR_DAILY**2), max(b, FLOOR_LEVEL**2)


def _fit_variance(rows: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares of e^2 ~ a h + b h^2 with a, b >= 0, each row weighted 1/h^2 (errors grow with h)."""
    if not rows:
        return 0.0, 0.0
    # Normal equations of sum w (e2 - a h - b h^2)^2 with w = 1/h^2: columns 1/h... written out directly.
    s11 = s12 = s22 = t1 = t2 = 0.0
    for h, e2 in rows:
        w = 1.0 / (h * h)
        s11 += w * h * h
        s12 += w * h**3
        s22 += w * h**4
        t1 += w * h * e2
        t2 += w * h * h * e2
    det = s11 * s22 - s12 * s12
    if det > 0:
        a = (t1 * s22 - t2 * s12) / det
        b = (s11 * t2 - s12 * t1) / det
        if a >= 0 and b >= 0:
            return a, b
    only_a = max(0.0, t1 / s11) if s11 else 0.0
    only_b = max(0.0, t2 / s22) if s22 else 0.0
    loss_a = sum((e2 - only_a * h) ** 2 / (h * h) for h, e2 in rows)
    loss_b = sum((e2 - only_b * h * h) ** 2 / (h * h) for h, e2 in rows)
    return (only_a, 0.0) if loss_a <= loss_b else (0.0, only_b)
