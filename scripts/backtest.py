"""Backtest of the month-end forecast (ai_credit_usage/questions/forecast.py) against the linear run-rate projection.

    uv run python scripts/backtest.py              # the figures docs/forecast.md quotes
    uv run python scripts/backtest.py --series 40  # fewer synthetic series, quicker

Cases: synthetic daily series (a weekday rhythm, growth or decline, day-to-day noise, spikes, quiet weeks, zero days,
a few sparse or switched-on-late tenants) and the demo data set (ai_credit_usage/openmeter/standin/demo.py, its four
tenants' daily UTC sums). For every month whose days are all known and that has at least two weeks of history
before it, the month-end total is forecast from every cut-off day from the 2nd to the last day of the month, at a
random moment of that day (the part of the day already past is known, as it is to the tool). Day 1 is left out
because the run-rate has nothing to divide there.

- Ours: month-to-date (complete days plus the known part of today) + project_usage(...).days[-1].total, with the
  80% and 95% intervals of that total.
- Run-rate: month-to-date / days elapsed x days in the month (what MCPSpend and most dashboards do).

Printed: the cases, the coverage of both intervals (targets 75-85% and 90-98%), both mean absolute errors (as a
share of the actual month total, averaged, and in credits) and how much lower ours is (target at least 25%), per
case family and overall.
"""

from __future__ import annotations

import argparse
import calendar
import math
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ai_credit_usage.questions import forecast  # noqa: E402
from ai_credit_usage.questions.forecast import project_usage  # noqa: E402

SERIES_START = date(2025, 7, 1)
SERIES_DAYS = 240  # about eight months
DEMO_NOW = datetime(2026, 4, 1, tzinfo=UTC)  # the demo's 90 days end on March 31: February and March are forecast


@dataclass
class Case:
    family: str
    actual: float
    ours: float
    low_80: float
    high_80: float
    low_95: float
    high_95: float
    run_rate: float


def synthetic_series(rng: random.Random) -> tuple[str, dict[date, float]]:
    """One tenant's daily usage: a family name and the days."""
    family = rng.choices(["steady", "growing", "declining", "spiky", "sparse", "late-start"], [3, 3, 1, 2, 1, 1])[0]
    level = math.exp(rng.uniform(math.log(5), math.log(5_000)))
    weekend = rng.uniform(0.05, 0.6)
    profile = [rng.uniform(0.8, 1.2) for _ in range(5)] + [weekend * rng.uniform(0.7, 1.3) for _ in range(2)]
    growth = {"growing": rng.uniform(0.003, 0.012), "declining": -rng.uniform(0.002, 0.006)}.get(
        family, rng.uniform(-0.001, 0.002)
    )
    noise = rng.uniform(0.15, 0.45)
    spike_chance = {"spiky": rng.uniform(0.03, 0.07)}.get(family, rng.uniform(0.0, 0.015))
    zero_chance = {"sparse": rng.uniform(0.25, 0.5)}.get(family, rng.uniform(0.0, 0.04))
    starts = rng.randrange(40, 120) if family == "late-start" else 0
    days: dict[date, float] = {}
    quiet_until = -1
    drift = 0.0
    for i in range(SERIES_DAYS):
        day = SERIES_START + timedelta(days=i)
        if i < starts:
            continue
        if day.weekday() == 0 and rng.random() < 0.06:  # a holiday week
            quiet_until = i + 7
        drift += rng.gauss(0, 0.01)  # the level wanders a little besides the trend
        value = level * math.exp(growth * i + drift) * profile[day.weekday()] * rng.lognormvariate(0, noise)
        if i < quiet_until:
            value *= rng.uniform(0.05, 0.35)
        if rng.random() < spike_chance:
            value *= rng.uniform(3, 12)
        if rng.random() < zero_chance:
            value = 0.0
        if value > 0:
            days[day] = value
    return family, days


def demo_series() -> Iterator[tuple[str, dict[date, float]]]:
    from ai_credit_usage.openmeter.standin.demo import demo_events

    sums: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for event in demo_events(DEMO_NOW):
        moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        sums[event["data"]["tenant"]][moment.date()] += float(event["data"]["credits"])
    for tenant in sorted(sums):
        yield f"demo ({tenant})", dict(sums[tenant])


def month_cases(family: str, days: dict[date, float], rng: random.Random, last_day: date) -> Iterator[Case]:
    first_known = min(days) if days else last_day
    month = date(first_known.year, first_known.month, 1)
    while True:
        length = calendar.monthrange(month.year, month.month)[1]
        month_end = month + timedelta(days=length - 1)
        if month_end > last_day:
            return
        if (month - first_known).days >= 14:
            actual = sum(days.get(month + timedelta(days=i), 0.0) for i in range(length))
            for cut in range(1, length):
                today = month + timedelta(days=cut)
                elapsed = rng.random()
                history = {day: value for day, value in days.items() if day < today}
                known_today = elapsed * days.get(today, 0.0)
                so_far = sum(days.get(month + timedelta(days=i), 0.0) for i in range(cut)) + known_today
                projection = project_usage(history, today=today, today_elapsed=elapsed, until=month_end)
                end = projection.days[-1]
                yield Case(
                    family=family,
                    actual=actual,
                    ours=so_far + end.total,
                    low_80=so_far + end.total_80[0],
                    high_80=so_far + end.total_80[1],
                    low_95=so_far + end.total_95[0],
                    high_95=so_far + end.total_95[1],
                    run_rate=so_far / (cut + elapsed) * length,
                )
        month = month_end + timedelta(days=1)


def report(label: str, cases: list[Case]) -> tuple[float, float, float]:
    """Prints one line; returns (coverage 80, coverage 95, error reduction)."""
    usable = [case for case in cases if case.actual > 0]
    cover_80 = statistics.fmean(case.low_80 <= case.actual <= case.high_80 for case in usable)
    cover_95 = statistics.fmean(case.low_95 <= case.actual <= case.high_95 for case in usable)
    ours = statistics.fmean(abs(case.ours - case.actual) / case.actual for case in usable)
    rate = statistics.fmean(abs(case.run_rate - case.actual) / case.actual for case in usable)
    reduction = 1 - ours / rate
    print(
        f"{label:<22} {len(usable):>7} {cover_80:>8.1%} {cover_95:>8.1%} {ours:>10.1%} {rate:>10.1%} {reduction:>10.1%}"
    )
    return cover_80, cover_95, reduction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=120, help="synthetic series (default 120)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a method constant")
    args = parser.parse_args()
    for assignment in args.set:
        name, value = assignment.split("=")
        setattr(forecast, name, type(getattr(forecast, name))(value))
        print(f"{name} = {getattr(forecast, name)}")
    rng = random.Random(args.seed)
    cases: list[Case] = []
    synthetic_last = SERIES_START + timedelta(days=SERIES_DAYS - 1)
    for _ in range(args.series):
        family, days = synthetic_series(rng)
        cases += month_cases(family, days, rng, synthetic_last)
    if not args.no_demo:
        for family, days in demo_series():
            cases += month_cases(family, days, rng, DEMO_NOW.date() - timedelta(days=1))
    print(f"{'cases':<22} {'n':>7} {'in 80%':>8} {'in 95%':>8} {'ours MAE':>10} {'run-rate':>10} {'lower by':>10}")
    by_family: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_family[case.family if not case.family.startswith("demo") else "demo (all)"].append(case)
    for family in sorted(by_family):
        report(family, by_family[family])
    synthetic = [case for case in cases if not case.family.startswith("demo")]
    report("synthetic (all)", synthetic)
    cover_80, cover_95, reduction = report("all", cases)
    abs_ours = statistics.fmean(abs(case.ours - case.actual) for case in cases)
    abs_rate = statistics.fmean(abs(case.run_rate - case.actual) for case in cases)
    print(f"\nMAE in credits over all cases: ours {abs_ours:,.1f}, run-rate {abs_rate:,.1f}")
    print("MAE columns: mean absolute error as a share of the actual month total.")
    verdict = [
        ("80% coverage in 75-85%", 0.75 <= cover_80 <= 0.85),
        ("95% coverage in 90-98%", 0.90 <= cover_95 <= 0.98),
        ("MAE at least 25% below the run-rate", reduction >= 0.25),
    ]
    for text, ok in verdict:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
