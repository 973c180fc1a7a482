"""What a question found besides its rows: the comparison, the movers, the trend, the forecast, a balance, and notes
for the About sheet."""

from __future__ import annotations

from dataclasses import dataclass, field

from ai_credit_usage.questions.balance import CreditBalance
from ai_credit_usage.questions.compare import Comparison, Mover
from ai_credit_usage.questions.filters import NoMatch
from ai_credit_usage.questions.forecast import Outlook
from ai_credit_usage.questions.trend import Trend


@dataclass
class Findings:
    comparison: Comparison | None = None  # None: the preceding window could not be read; the answer stands
    comparison_in_text: bool = False  # the tools whose text carries the comparison line (all carry it elsewhere)
    movers: list[Mover] | None = None  # None: not part of this answer; [] when nobody's credits changed
    trend: Trend | None = None
    forecast: Outlook | None = None
    balance: CreditBalance | None = None  # the credits left: the whole answer of get_credit_balance, no rows
    source: str | None = None  # where the numbers come from when not the tool's meter (the balance's entitlement)
    tops_in_text: bool = False  # the answer's text names the top 5 of every dimension (every summary)
    no_match: NoMatch | None = None  # the filters matched nothing: what to say, with the closest values
    about: list[tuple[str, object]] = field(default_factory=list)  # where the numbers come from, what a row is
