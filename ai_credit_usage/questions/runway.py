"""When the balance runs out at the recent pace: pure, no I/O.

The pace is `forecast.project_usage` over the entitlement's own daily usage (the usage that burns the balance;
twelve weeks, weekday-aware). Its 80% band of cumulative usage from now gives two paths: the fast one (the band's
high end) runs the balance out earliest, the slow one (the low end) latest. Each path is burnt through the grants
as OpenMeter burns them (priority, earliest expiry, creation), day by day: a grant that expires drops what is left
of it, a grant that starts later adds its amount. The run-out day of a path is the first day its usage meets no
credits left. The horizon is the current period's last day: at the reset recurring grants refill and the overage
starts again, so the question is whether the balance lasts until then (without a period: a year).
Not modelled: a grant recurring on its own schedule inside the period refills only at the reset here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ai_credit_usage.questions.forecast import Projection, project_usage

HORIZON_DAYS = 366
LEFT_OVER = 0.005  # credits below half a cent count as none


@dataclass(frozen=True)
class Pot:
    """A grant as the runway sees it: what is left now, when it starts (None: already) and when it expires."""

    name: str
    left: float
    order: tuple[int, datetime, datetime, str]  # priority, expiry (far future if none), creation, id
    starts: datetime | None = None
    expires: datetime | None = None


@dataclass(frozen=True)
class RunwayFinding:
    earliest: date | None  # the fast path's run-out day; None: the balance outlasts the horizon even then
    likely: date | None  # the point forecast's
    latest: date | None  # the slow path's; None: at the slower pace it outlasts the horizon
    horizon: date  # the last day looked at
    until_reset: bool  # the horizon is the period's last day
    expiring: tuple[str, date, float] | None  # at the expected pace, a grant that expires with credits left
    enough_history: bool
    history_days: int
    projection: Projection | None = None  # the pace's daily projection from today through the horizon


def run_out_day(
    pots: Sequence[Pot], usage: Sequence[tuple[date, float]]
) -> tuple[date | None, list[tuple[Pot, float]]]:
    """The first day of `usage` (day, credits) that the pots cannot cover, and the pots that expired with credits
    left on the way (each with what it lost). A pot that starts later holds its `left` from its first day."""
    left = [pot.left if pot.starts is None else 0.0 for pot in pots]
    waiting = {index for index, pot in enumerate(pots) if pot.starts is not None}
    lost: list[tuple[Pot, float]] = []
    order = sorted(range(len(pots)), key=lambda index: pots[index].order)
    for day, credits in usage:
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        for index in sorted(waiting):
            starts = pots[index].starts
            if starts is not None and starts < end:
                left[index] = pots[index].left
                waiting.discard(index)
        need = credits
        for index in order:
            taken = min(left[index], need)
            left[index] -= taken
            need -= taken
        for index in order:
            expires = pots[index].expires
            if expires is not None and expires <= end and index not in waiting:
                if left[index] > LEFT_OVER:
                    lost.append((pots[index], left[index]))
                left[index] = 0.0
        if need > LEFT_OVER:
            return day, lost
    return None, lost


def runway(
    pots: Sequence[Pot],
    history: dict[date, float],
    *,
    now: datetime,
    reset: datetime | None,
) -> RunwayFinding:
    """The run-out range of `pots` at the pace of `history` (the entitlement's complete UTC days before today)."""
    now = now.astimezone(UTC)
    today = now.date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    elapsed = min(max((now - midnight) / timedelta(days=1), 0.0), 0.999_999)
    until_reset = reset is not None
    if reset is not None:
        horizon = max(today, (reset.astimezone(UTC) - timedelta(microseconds=1)).date())
    else:
        horizon = today + timedelta(days=HORIZON_DAYS)
    projection = project_usage(history, today=today, today_elapsed=elapsed, until=horizon)
    fast, slow = _paths(projection)
    earliest, _ = run_out_day(pots, fast)
    latest, _ = run_out_day(pots, slow)
    likely, lost = run_out_day(pots, [(day.day, day.expected) for day in projection.days])
    expiring = None
    if lost:
        pot, amount = lost[0]
        if pot.expires is not None:
            expiring = (pot.name, pot.expires.astimezone(UTC).date(), amount)
    return RunwayFinding(
        earliest=earliest,
        likely=likely,
        latest=latest,
        horizon=horizon,
        until_reset=until_reset,
        expiring=expiring,
        enough_history=projection.enough_history,
        history_days=projection.history_days,
        projection=projection,
    )


def _paths(projection: Projection) -> tuple[list[tuple[date, float]], list[tuple[date, float]]]:
    """Daily usage along the 80% band's high end (fast) and low end (slow)."""
    fast, slow = [], []
    previous_high = previous_low = 0.0
    for day in projection.days:
        high, low = day.total_80[1], day.total_80[0]
        fast.append((day.day, max(0.0, high - previous_high)))
        slow.append((day.day, max(0.0, low - previous_low)))
        previous_high, previous_low = high, low
    return fast, slow
