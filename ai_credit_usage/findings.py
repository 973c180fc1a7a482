"""What a question found besides its rows: the comparison, the movers, the trend, and notes for the About sheet."""

from __future__ import annotations

from dataclasses import dataclass, field

from ai_credit_usage.compare import Comparison, Mover
from ai_credit_usage.forecast import Outlook
from ai_credit_usage.trend import Trend


@dataclass
class Findings:
    comparison: Comparison | None = None  # None: the preceding window could not be read; the answer stands
    comparison_in_text: bool = False  # the tools whose text carries the comparison line (all carry it elsewhere)
    movers: list[Mover] | None = None  # None: not part of this answer; [] when nobody's credits changed
    trend: Trend | None = None
    forecast: Outlook | None = None
    about: list[tuple[str, object]] = field(default_factory=list)  # where the numbers come from, what a row is
