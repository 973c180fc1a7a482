"""Daily usage projection: a weekday profile times a recent level, intervals from the method's own errors.

The method (pure, no I/O; measured by scripts/backtest.py, described with its figures in docs/forecast.md):

1. The history: the complete days before today, the last LOOKBACK_DAYS at most, from the first day the mapping
   names (a missing day inside counts as zero). Days far above the typical one (after a median weekday profile is
   taken out) are capped at median + SPIKE_MADS x MAD, so a spike moves neither the level nor the profile.
2. The weekday profile: each weekday's mean over the overall mean, shrunk towards 1 by PROFILE_SHRINK_WEEKS.
3. The level: whole weeks counted back from yesterday, each as its typical day (credits over weekday shares), held
   within WEEK_MADS robust deviations of the median week (a holiday week does not drag it), exponentially weighted
   (half-life HALF_LIFE_DAYS); the trend is a Theil-Sen slope of those weeks, shrunk towards 0 unless it stands out.
4. Day d's expected usage: max(0, level + slope x days ahead) x factor(weekday of d); today's only for its rest.
5. Intervals: the method replayed on the history (fitted before each cut-off, compared with the days after it);
   the errors of the cumulative totals, in the cut-off's typical days, summarised per horizon robustly and fitted as
   a x h + b x h^2 (noise grows with h, a wrong level with h^2), with floors. The bounds lie the errors' own
   quantiles of that spread from the point (MIN_TAIL_SHRINK to MAX_TAIL_STRETCH times the normal ones), never below
   zero and never decreasing (usage accumulates).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

LOOKBACK_DAYS = 84  # twelve weeks: a weekday profile, a trend, and one odd week is only one of twelve
MIN_HISTORY_DAYS = 14  # below two weeks the answer says there is too little history to trust
HALF_LIFE_DAYS = 14.0  # of the weights of the weeks in the level
SPIKE_MADS = 5.0  # a day above the median by more than this many MADs (weekday effect out) is capped there
FLAT_SCALE = 0.25  # the MAD stand-in, as a share of the typical day, where the MAD is 0 (a flat series)
PROFILE_SHRINK_WEEKS = 1.0  # pseudo-weeks at factor 1 added to each weekday's mean
WEEK_MADS = 3.0  # a week further than this many robust deviations from the median week is held at that distance
MIN_WEEK_SPREAD = 0.05  # the robust deviation of weeks is taken as at least this share of the median week
TREND_MIN_WEEKS = 3  # weekly means needed before a trend is fitted
TREND_DAMPING = 1.0  # share of the fitted trend carried forward
TREND_SHRINK = 4.0  # the James-Stein constant c: a trend must stand out clearly to be carried forward
MIN_REPLAY_DAYS = 7  # days after the first replayed cut-off needed before the history's own errors are used
MIN_TRAIN_DAYS = 21  # a replayed cut-off needs this many days before it (three weeks: a trend can be fitted)
FLOOR_DAILY = 0.10  # floor of the day-to-day spread, in typical days (the a x h part)
FLOOR_LEVEL = 0.05  # floor of the level's spread per day ahead, in typical days (the b x h^2 part)
NORMAL_MEDIAN_SQUARE = 0.45493642311957283  # the median of the square of a standard normal variable
MIN_ERRORS_PER_HORIZON = 5  # replayed errors a horizon needs to count in the variance fit
MIN_QUANTILE_ROWS = 200  # replayed errors needed before their own quantiles place the bounds
MAX_TAIL_STRETCH = 1.5  # a bound lies at most this many times the normal distance from the point
MIN_TAIL_SHRINK = 0.85  # and at least this many times it (the replayed errors may say narrower)
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


# The daily table of a forecast answer: what was used, what is expected, the day's credits (their sum), and the
# cumulative total from the window's start with its intervals. "credits" is each row's total (the sink's total column).
DAY_COLUMNS = ("day", "used", "forecast", "credits", "cumulative", "low 80%", "high 80%", "low 95%", "high 95%")
DAY_TOTAL_COLUMN = 3
TOO_LITTLE_HISTORY = (
    "There is too little usage history to trust this projection ({days} complete days since usage began, "
    "{needed} needed): take it as a rough guide until a few weeks of usage are recorded."
)


@dataclass(frozen=True)
class Outlook:
    """What a forecast answer found besides its daily rows: the figures for the whole window."""

    as_of: datetime  # the moment that splits known usage from projected
    time_zone: str
    first_day: date  # the window's first and last local day
    last_day: date
    used_so_far: float  # from the window's start to `as_of`
    projected_total: float  # used so far plus the projected rest, through `last_day`
    interval_80: tuple[float, float]  # of `projected_total`
    interval_95: tuple[float, float]
    enough_history: bool
    history_days: int  # complete days the method learned from (from the first day with usage, at most LOOKBACK_DAYS)
    level: float  # the recent typical day, weekday effect removed
    # When a credit balance is configured (get_credit_balance): the balance now and, at the allowance's own pace
    # (the entitlement's daily usage, runway.py), the days it runs out: (earliest, likely, latest) of the 80% range,
    # each None when the balance lasts until `balance_horizon` at that pace (the period's last day).
    balance: float | None = None
    balance_runs_out: tuple[date | None, date | None, date | None] | None = None
    balance_horizon: date | None = None
    balance_until_reset: bool = True  # the horizon is the allowance's reset (v3: a year ahead, no reset)
    balance_pace: str = "entitlement"  # whose daily usage the crossing burns: the entitlement's, or the tenant's

    def too_little_history(self) -> str:
        return TOO_LITTLE_HISTORY.format(days=self.history_days, needed=MIN_HISTORY_DAYS)


def daily_rows(
    used: Mapping[date, float], projection: Projection, *, first_day: date, used_so_far: float
) -> list[tuple[date, float, float, float, float, float, float, float, float]]:
    """DAY_COLUMNS rows from `first_day` through the projection's last day: the days before today as they were
    (their cumulative known exactly), then today (used so far and the rest expected) and the days ahead."""
    rows = []
    cumulative = 0.0
    today = projection.days[0].day
    day = first_day
    while day < today:
        value = used.get(day, 0.0)
        cumulative += value
        rows.append((day, value, 0.0, value, cumulative, cumulative, cumulative, cumulative, cumulative))
        day += timedelta(days=1)
    for ahead in projection.days:
        value = used.get(ahead.day, 0.0) if ahead.day == today else 0.0
        rows.append(
            (
                ahead.day,
                value,
                ahead.expected,
                value + ahead.expected,
                used_so_far + ahead.total,
                used_so_far + ahead.total_80[0],
                used_so_far + ahead.total_80[1],
                used_so_far + ahead.total_95[0],
                used_so_far + ahead.total_95[1],
            )
        )
    return rows


@dataclass(frozen=True)
class _Model:
    level: float  # the typical day (weekday effect removed) at today
    slope: float  # its change per day
    factors: tuple[float, ...]  # by weekday, Monday = 0

    def expected(self, weekday: int, ahead: float) -> float:
        """Day `ahead` days after today (0 = today, a whole day)."""
        return max(0.0, self.level + self.slope * ahead) * self.factors[weekday]


def project_usage(history: Mapping[date, float], *, today: date, today_elapsed: float, until: date) -> Projection:
    """Project daily usage from `history` (complete past days before `today`; a missing day counts as zero).
    `today_elapsed` in [0, 1) is the share of today already past (its usage is known, not forecast).
    Cumulative totals start at 0: the caller adds what is already used."""
    if not 0.0 <= today_elapsed < 1.0:
        raise ValueError(f"today_elapsed must be in [0, 1), not {today_elapsed}")
    if until < today:
        raise ValueError(f"until {until} is before today {today}")
    start, values = _series(history, today)
    weekdays = [(start.weekday() + i) % 7 for i in range(len(values))]
    model = _fit(values, weekdays)
    spread = _spread(values, weekdays) if len(values) >= MIN_TRAIN_DAYS + MIN_REPLAY_DAYS else SHORT_SPREAD
    unit = statistics.fmean(values) if values else 0.0  # the spread is in typical days of the history
    days: list[ProjectedDay] = []
    total = 0.0
    ahead = 0.0  # days ahead, today counting for its remaining share
    low_80 = low_95 = 0.0
    for index in range((until - today).days + 1):
        day = today + timedelta(days=index)
        share = 1.0 - today_elapsed if index == 0 else 1.0
        expected = model.expected(day.weekday(), index) * share
        total += expected
        ahead += share
        sigma = unit * spread.sigma(ahead)
        low_80 = max(low_80, total - spread.low_80 * sigma)
        low_95 = max(low_95, total - spread.low_95 * sigma)
        days.append(
            ProjectedDay(
                day=day,
                expected=expected,
                total=total,
                total_80=(min(low_80, total), total + spread.high_80 * sigma),
                total_95=(min(low_95, total), total + spread.high_95 * sigma),
            )
        )
    return Projection(
        days=tuple(days),
        enough_history=len(values) >= MIN_HISTORY_DAYS and any(value > 0 for value in values),
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


def _robust_scale(values: Sequence[float]) -> tuple[float, float]:
    """(median, MAD); where the MAD is 0 (a flat series) a share of the typical nonzero day stands in for it."""
    middle = statistics.median(values)
    mad = statistics.median(abs(value - middle) for value in values)
    if mad > 0:
        return middle, mad
    nonzero = [value for value in values if value > 0]
    return middle, FLAT_SCALE * statistics.median(nonzero) if nonzero else 0.0


def _weekday_factors(values: Sequence[float], weekdays: Sequence[int], *, robust: bool) -> tuple[float, ...]:
    """Each weekday's typical day over the overall one, shrunk towards 1 by PROFILE_SHRINK_WEEKS, mean 1."""
    by_weekday: list[list[float]] = [[] for _ in range(7)]
    for value, weekday in zip(values, weekdays, strict=True):
        by_weekday[weekday].append(value)
    typical = statistics.median if robust else statistics.fmean
    overall = statistics.fmean(typical(seen) for seen in by_weekday if seen) if values else 0.0
    if overall <= 0:
        return (1.0,) * 7
    raw = [
        (len(seen) * typical(seen) / overall + PROFILE_SHRINK_WEEKS) / (len(seen) + PROFILE_SHRINK_WEEKS)
        if seen
        else 1.0
        for seen in by_weekday
    ]
    mean_factor = statistics.fmean(raw)
    return tuple(factor / mean_factor for factor in raw)


def _capped(values: Sequence[float], weekdays: Sequence[int]) -> list[float]:
    """Spikes capped: judged on the values with a first, median-based weekday profile taken out, capped there."""
    if len(values) < 3:
        return list(values)
    rough = _weekday_factors(values, weekdays, robust=True)
    adjusted = [value / max(rough[weekday], 1e-9) for value, weekday in zip(values, weekdays, strict=True)]
    middle, scale = _robust_scale(adjusted)
    cap = middle + SPIKE_MADS * scale
    return [min(value, cap * rough[weekday]) for value, weekday in zip(values, weekdays, strict=True)]


def _fit(values: Sequence[float], weekdays: Sequence[int]) -> _Model:
    if not values or not any(values):
        return _Model(0.0, 0.0, (1.0,) * 7)
    capped = _capped(values, weekdays)
    factors = _weekday_factors(capped, weekdays, robust=False)
    expected = [factors[weekday] for weekday in weekdays]  # each day's share of a typical day
    # Whole weeks counted back from yesterday, each as its typical day: the week's credits over its shares (a week's
    # shares sum to 7). Dividing each day by its factor instead would bias the level wherever the shrunk profile is off.
    weeks = len(capped) // 7
    first = len(capped) - 7 * weeks
    means = [
        math.fsum(capped[first + 7 * k : first + 7 * k + 7]) / math.fsum(expected[first + 7 * k : first + 7 * k + 7])
        for k in range(weeks)
    ]
    if weeks < TREND_MIN_WEEKS:
        # Too few weeks to judge one against the others: the days themselves, weighted towards recent ones.
        decay = 0.5 ** (1.0 / HALF_LIFE_DAYS)
        weights = [decay ** (len(capped) - 1 - i) for i in range(len(capped))]
        shares = math.fsum(w * share for w, share in zip(weights, expected, strict=True))
        level = math.fsum(w * value for w, value in zip(weights, capped, strict=True)) / shares if shares else 0.0
        return _Model(level, 0.0, factors)
    kept = _unquiet(means)
    slope = _slope(kept)
    decay = 0.5 ** (7.0 / HALF_LIFE_DAYS)
    weights = [decay ** (weeks - 1 - k) for k in range(weeks)]
    total = math.fsum(weights)
    level = math.fsum(w * mean for w, mean in zip(weights, kept, strict=True)) / total
    # That level stands for the weeks' weighted middle (a week's middle is 3 days before its last day, yesterday for
    # the latest); the trend carries it on to today.
    age = math.fsum(w * (7 * (weeks - 1 - k) + 3) for k, w in enumerate(weights)) / total
    return _Model(max(0.0, level + slope * (age + 1)), slope, factors)


def _unquiet(means: Sequence[float]) -> list[float]:
    """Weekly means held within WEEK_MADS robust deviations of their median: a holiday week (or a runaway one) does
    not drag the level, while a change that lasts moves the median within a few weeks."""
    middle = statistics.median(means)
    deviation = 1.4826 * statistics.median(abs(mean - middle) for mean in means)
    reach = WEEK_MADS * max(deviation, MIN_WEEK_SPREAD * middle)
    return [min(max(mean, middle - reach), middle + reach) for mean in means]


def _slope(means: Sequence[float]) -> float:
    """The trend per day: a Theil-Sen slope of the weekly means (a median of pairwise slopes, robust to a quiet week
    or two), shrunk towards 0 unless it stands out from the weeks' scatter (positive-part James-Stein:
    x (1 - c / t^2), t = slope over its standard error)."""
    weeks = len(means)
    slope = statistics.median((means[j] - means[i]) / (j - i) for i in range(weeks) for j in range(i + 1, weeks))
    centre = (weeks - 1) / 2
    intercept = statistics.median(mean - slope * (k - centre) for k, mean in enumerate(means))
    residuals = [mean - intercept - slope * (k - centre) for k, mean in enumerate(means)]
    scatter = 1.4826 * statistics.median(abs(r) for r in residuals)
    if scatter <= 0:
        scatter = statistics.pstdev(residuals)
    if scatter <= 0:
        return slope / 7
    # slope / scatter first: a subnormal scatter squares to 0 (issue 23), while the ratio at worst overflows to inf
    # (no shrinking, as the slope then stands out from no scatter at all).
    ratio = slope / scatter
    t2 = ratio * ratio * sum((k - centre) ** 2 for k in range(weeks))
    shrink = max(0.0, 1.0 - TREND_SHRINK / t2) if t2 > 0 else 0.0
    return slope * shrink * TREND_DAMPING / 7


@dataclass(frozen=True)
class _Spread:
    """The relative variance a x h + b x h^2 of the cumulative total h days ahead, and how many of those standard
    deviations each bound lies from the point forecast (below, above: errors of usage are skewed)."""

    a: float
    b: float
    low_80: float = Z_80
    high_80: float = Z_80
    low_95: float = Z_95
    high_95: float = Z_95

    def sigma(self, ahead: float) -> float:
        return math.sqrt(self.a * ahead + self.b * ahead * ahead)


# Too little history to replay: a fixed, wide spread (day-to-day 50%, level 15% of the typical day), symmetric.
SHORT_SPREAD = _Spread(0.5**2, 0.15**2)


def _spread(values: Sequence[float], weekdays: Sequence[int]) -> _Spread:
    """From cut-offs replayed on the history: the method fitted on the days before each one, its cumulative totals
    compared with the days after it, the errors relative to the level at the cut-off. Their variance is fitted as
    a x h + b x h^2; the bounds are the empirical quantiles of the standardised errors, at least the normal ones."""
    rows: list[tuple[float, float]] = []  # (h, relative error)
    for cut in range(MIN_TRAIN_DAYS, len(values)):
        model = _fit(values[:cut], weekdays[:cut])
        typical = statistics.fmean(values[:cut])  # the unit of the errors: the cut-off's typical day so far
        if model.level <= 0 or typical <= 0:
            continue
        forecast = actual = 0.0
        for h in range(1, len(values) - cut + 1):
            forecast += model.expected(weekdays[cut + h - 1], h - 1)
            actual += values[cut + h - 1]
            rows.append((float(h), (actual - forecast) / typical))
    a, b = _fit_variance(_robust_variances(rows))
    spread = _Spread(max(a, FLOOR_DAILY**2), max(b, FLOOR_LEVEL**2))
    if len(rows) < MIN_QUANTILE_ROWS:
        return spread
    standard = sorted(error / spread.sigma(h) for h, error in rows)

    def quantile(share: float) -> float:
        return standard[round(share * (len(standard) - 1))]

    def stretched(found: float, normal: float) -> float:
        return min(max(found, normal * MIN_TAIL_SHRINK), normal * MAX_TAIL_STRETCH)

    return _Spread(
        spread.a,
        spread.b,
        low_80=stretched(-quantile(0.10), Z_80),
        high_80=stretched(quantile(0.90), Z_80),
        low_95=stretched(-quantile(0.025), Z_95),
        high_95=stretched(quantile(0.975), Z_95),
    )


def _robust_variances(rows: Sequence[tuple[float, float]]) -> list[tuple[float, float, int]]:
    """(h, variance, errors) per horizon from the errors at that horizon, robustly: the median squared error over its
    value for a normal error (0.455 sigma^2), so one spike in the history (an offset in every later total) does not
    blow the variance up; the spikes come back in the bounds' empirical quantiles."""
    by_ahead: dict[float, list[float]] = {}
    for h, error in rows:
        by_ahead.setdefault(h, []).append(error * error)
    return [
        (h, statistics.median(squares) / NORMAL_MEDIAN_SQUARE, len(squares))
        for h, squares in sorted(by_ahead.items())
        if len(squares) >= MIN_ERRORS_PER_HORIZON
    ]


def _fit_variance(rows: Sequence[tuple[float, float, int]]) -> tuple[float, float]:
    """Least squares of v ~ a h + b h^2 with a, b >= 0 over (h, v, n) rows, each weighted n / h^2 (errors grow with
    h; a horizon seen from more cut-offs is known better)."""
    if not rows:
        return 0.0, 0.0
    s11 = s12 = s22 = t1 = t2 = 0.0
    for h, v, n in rows:
        # weight n/h^2: the columns h and h^2 become 1 and h, the target v/h
        s11 += n
        s12 += n * h
        s22 += n * h * h
        t1 += n * v / h
        t2 += n * v
    det = s11 * s22 - s12 * s12
    if det > 0:
        a = (t1 * s22 - t2 * s12) / det
        b = (s11 * t2 - s12 * t1) / det
        if a >= 0 and b >= 0:
            return a, b
    only_a = max(0.0, t1 / s11)
    only_b = max(0.0, t2 / s22)
    loss_a = sum(n * (v / h - only_a) ** 2 for h, v, n in rows)
    loss_b = sum(n * (v / h - only_b * h) ** 2 for h, v, n in rows)
    return (only_a, 0.0) if loss_a <= loss_b else (0.0, only_b)
