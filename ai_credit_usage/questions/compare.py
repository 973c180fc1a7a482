"""This window against the one before it: the change in the total, and the users whose credits moved most.

The preceding window has the same length and ends where this one starts, [start - length, start), so "the last 7
days" compares with the 7 days before them. Movers are counted per user: the summary's rows are combinations of
user, module, product and skill, but "who changed most" is the question an admin asks and can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from ai_credit_usage.runtime.window import Window

MOVERS = 3
MoverStatus = Literal["new", "gone", "up", "down"]
VISIBLE_CENT = 0.005  # a change smaller than this rounds to 0.00: not a change an admin can see
COMPARISON_UNAVAILABLE = (
    "not available right now (OpenMeter did not answer that query)"  # the preceding window's query failed
)


def preceding(window: Window) -> Window:
    return Window(window.start - (window.end - window.start), window.start)


def describe_span(span: timedelta) -> str:
    """How long the windows are, readable at any length: "31 days", "36 hours", "90 minutes" when exact, else one
    decimal of the largest unit that fits twice ("21.2 days", "5.5 hours"), never "1,835,792 seconds"."""
    seconds = span.total_seconds()
    if seconds % 86_400 == 0:
        return _count(int(seconds // 86_400), "day")
    if seconds % 3_600 == 0 and seconds <= 3 * 86_400:
        return _count(int(seconds // 3_600), "hour")
    if seconds % 60 == 0 and seconds <= 3 * 3_600:
        return _count(int(seconds // 60), "minute")
    if seconds < 120:
        return _count(round(seconds), "second")
    unit, size = next((unit, size) for unit, size in _UNITS if seconds >= 2 * size)
    amount = f"{seconds / size:,.1f}"
    if amount.endswith(".0"):  # 21 days and 5 minutes: "about 21 days", not a "21.0" that looks exact
        return f"about {_count(round(seconds / size), unit)}"
    return f"{amount} {unit}s"


_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60))


def _count(count: int, unit: str) -> str:
    return f"{count:,} {unit}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Previous:
    """What the preceding window held: its total and, when the meter has a user dimension, each user's credits."""

    window: Window
    total: float
    by_user: dict[str, float] | None


@dataclass(frozen=True)
class Comparison:
    window: Window
    previous_window: Window
    current: float
    previous: float

    @property
    def change(self) -> float:
        return self.current - self.previous

    @property
    def percent(self) -> float | None:
        """None when the previous window had no usage: a percentage of nothing is not a number an admin can use."""
        return None if self.previous == 0 else self.change / abs(self.previous) * 100

    @property
    def span(self) -> str:
        return describe_span(self.window.end - self.window.start)


def compare(window: Window, current: float, previous: Previous) -> Comparison:
    return Comparison(window, previous.window, current, previous.total)


@dataclass(frozen=True)
class Mover:
    name: str
    current: float
    previous: float

    @property
    def change(self) -> float:
        return self.current - self.previous

    @property
    def status(self) -> MoverStatus:
        if self.previous == 0:
            return "new"
        if self.current == 0:
            return "gone"
        return "up" if self.change > 0 else "down"

    @property
    def percent(self) -> float | None:
        """None for "new" and "gone", where ±100% or an infinite change would say less than the word."""
        return None if self.status in ("new", "gone") else self.change / abs(self.previous) * 100


def top_movers(current: Mapping[str, float], previous: Mapping[str, float], count: int = MOVERS) -> list[Mover]:
    """The `count` users whose credits changed most in absolute terms (a visible cent at least), largest first."""
    movers = [Mover(name, current.get(name, 0.0), previous.get(name, 0.0)) for name in {*current, *previous}]
    movers = [mover for mover in movers if abs(mover.change) >= VISIBLE_CENT]
    movers.sort(key=lambda mover: (-abs(mover.change), mover.name))
    return movers[:count]
