"""The runway rule (runway.py): the run-out range from the forecast's 80% band, burnt through the grants in
OpenMeter's order, with expiries and grants that start later."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from ai_credit_usage.questions.runway import Pot, run_out_day, runway

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
RESET = datetime(2026, 2, 1, tzinfo=UTC)
FAR = datetime(9999, 1, 1, tzinfo=UTC)


def steady(per_day: float, days: int = 56) -> dict[date, float]:
    """`per_day` on weekdays, a fifth of it at weekends, for the complete days before NOW."""
    today = NOW.date()
    return {
        today - timedelta(days=n): per_day * (0.2 if (today - timedelta(days=n)).weekday() >= 5 else 1.0)
        for n in range(1, days + 1)
    }


def pot(name: str, left: float, priority: int = 1, expires: datetime | None = None, **options: object) -> Pot:
    return Pot(name=name, left=left, order=(priority, expires or FAR, NOW, name), expires=expires, **options)  # type: ignore[arg-type]


def noisy(per_day: float, days: int = 56) -> dict[date, float]:
    """`steady`, each day scaled by a fixed pseudo-random factor in [0.5, 1.5]."""
    rng = random.Random(7)
    return {day: value * rng.uniform(0.5, 1.5) for day, value in sorted(steady(per_day, days).items())}


def test_a_regular_pace_runs_out_on_one_day_before_the_reset() -> None:
    found = runway([pot("plan", 300)], steady(100), now=NOW, reset=RESET)
    assert found.earliest is not None and found.latest is not None
    assert NOW.date() < found.earliest <= found.latest < RESET.date()


def test_a_noisy_pace_runs_out_as_a_range_before_the_reset() -> None:
    found = runway([pot("plan", 300)], noisy(100), now=NOW, reset=RESET)
    assert found.earliest is not None and found.latest is not None
    assert NOW.date() < found.earliest <= found.latest < RESET.date()
    assert found.until_reset and found.enough_history and found.horizon == date(2026, 1, 31)
    assert found.earliest != found.latest  # a range, not one falsely precise day


def test_a_balance_that_outlasts_the_period_has_no_run_out_day() -> None:
    found = runway([pot("plan", 100_000)], steady(100), now=NOW, reset=RESET)
    assert (found.earliest, found.latest) == (None, None)


def test_no_usage_never_runs_out_and_says_too_little_history() -> None:
    found = runway([pot("plan", 10)], {}, now=NOW, reset=RESET)
    assert (found.earliest, found.enough_history, found.history_days) == (None, False, 0)


def test_a_grant_burnt_later_can_expire_with_credits_left() -> None:
    soon = NOW + timedelta(days=3)
    first = pot("plan", 2_000, priority=1)
    top_up = pot("top-up", 500, priority=2, expires=soon)  # burnt only after the plan: it expires unused
    found = runway([first, top_up], steady(100), now=NOW, reset=RESET)
    assert found.expiring is not None and found.expiring[0] == "top-up" and found.expiring[2] == 500
    burnt_first = runway([pot("plan", 2_000, priority=2), pot("top-up", 500, priority=1, expires=soon)],
                         steady(100), now=NOW, reset=RESET)  # fmt: skip
    assert burnt_first.expiring is not None and burnt_first.expiring[2] < 500  # some of it is used first


def test_expiring_credits_bring_the_run_out_forward_and_later_grants_push_it_back() -> None:
    usage = [(NOW.date() + timedelta(days=n), 10.0) for n in range(30)]
    assert run_out_day([pot("a", 50)], usage)[0] == NOW.date() + timedelta(days=5)
    expiring = pot("a", 50, expires=NOW + timedelta(days=2))
    day, lost = run_out_day([expiring], usage)
    assert day == NOW.date() + timedelta(days=3) and lost[0][1] == 20  # its last day is still covered
    later = Pot(name="b", left=100, order=(1, FAR, NOW, "b"), starts=NOW + timedelta(days=4))
    assert run_out_day([pot("a", 50), later], usage)[0] == NOW.date() + timedelta(days=15)
