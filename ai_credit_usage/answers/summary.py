"""The workbook's Summary and About sheets for one answer: the counterpart of render.py's text.

Summary: the tenant, the window, the total, the comparison with the preceding window, a trend's typical period and
unusual ones, the top 5 by user, module, product and skill with their shares, and the charts. About: where every
number comes from and what a row means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ai_credit_usage.answers.demo_notice import DEMO_ABOUT
from ai_credit_usage.answers.render import period_text
from ai_credit_usage.answers.workbook import CREDITS_FORMAT, SHARE_FORMAT, Block, Fact, LineChartSpec, Report
from ai_credit_usage.questions.compare import COMPARISON_UNAVAILABLE, Comparison, Mover
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.forecast import Outlook
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.sink import TableSink, Top
from ai_credit_usage.questions.trend import NO_VALUE, Trend, unusual_rule
from ai_credit_usage.runtime.window import format_utc

TOP_SUMMARY = "top 5s: the credits of each user, module, product or skill, and its share of the total"
FORECAST_SUMMARY = (
    "the forecast for the whole window (used so far plus the projected rest) with its intervals, as of when it was "
    "made; a line chart of the cumulative total and its bounds from the Data sheet"
)


@dataclass(frozen=True)
class Asked:
    """Which question was asked, of what, for whom."""

    tool: str
    title: str
    tenant: str
    query: Query
    source: str  # where the numbers come from, e.g. "OpenMeter meter 'ai_credits'"
    demo: bool
    generated: datetime


def summary_report(asked: Asked, sink: TableSink, findings: Findings) -> Report:
    window, time_zone, trend, outlook = asked.query.window, asked.query.time_zone, findings.trend, findings.forecast
    generated = format_utc(asked.generated)
    facts = [Fact("Data", DEMO_ABOUT)] if asked.demo else []
    facts += [
        Fact("Tenant", asked.tenant),
        *(Fact(f"Only {name}", value) for name, value in asked.query.filters.pairs),
        Fact("Question", f"{asked.title} ({asked.tool})"),
        Fact("From (UTC)", format_utc(window.start)),
        Fact("To (UTC, exclusive)", format_utc(window.end)),
        Fact("Time zone", time_zone),
    ]
    if trend is not None:
        facts += _trend_facts(trend)
    if outlook is not None:
        facts += _forecast_facts(outlook)
        facts += [Fact("Generated at (UTC)", generated), Fact("Rows in Data", sink.row_count)]
    else:
        facts += [
            Fact("Generated at (UTC)", generated),
            Fact("Total credits", sink.total_credits, CREDITS_FORMAT),
            Fact("Rows in Data", sink.row_count),
        ]
        facts += _comparison_facts(findings)
    if findings.no_match is not None:
        facts.append(Fact("No usage", findings.no_match.sentence()))
    blocks = [_top_block(dimension, top) for dimension, top in sink.tops().items()]
    if findings.movers and findings.comparison is not None:
        blocks.append(_movers_block(findings.movers, findings.comparison))
    line_chart = None
    if trend is not None:
        if trend.unusual:
            blocks.append(_unusual_block(trend))
        last = 2 + max(1, len(trend.series))  # the series (or the single credits column), not the total
        line_chart = LineChartSpec(f"Credits per {trend.granularity} ({trend.time_zone})", 3, last)
    if outlook is not None:
        # The cumulative total with its intervals (Data columns 5 to 9) against the days. BALANCE CROSSING: the
        # balance helper adds the allowance as one more line here.
        line_chart = LineChartSpec(f"Cumulative credits, recorded and projected ({time_zone})", 5, 9)
    about: list[tuple[str, object]] = [("data", DEMO_ABOUT)] if asked.demo else []
    about += [
        ("tool", asked.tool),
        ("tenant", asked.tenant),
        ("filters", _filters_about(asked)),
        ("from (UTC)", format_utc(window.start)),
        ("to (UTC, exclusive)", format_utc(window.end)),
        ("rows", sink.row_count),
        ("projected total credits" if outlook is not None else "total credits", sink.total_credits),
        ("source", asked.source),
        *findings.about,
        ("times", _times(trend, outlook, time_zone)),
        ("credits", "exact, as OpenMeter sums them; the chat answer rounds them to 2 decimals"),
        ("Summary sheet", FORECAST_SUMMARY if outlook is not None else TOP_SUMMARY),
        ("generated at (UTC)", generated),
    ]
    return Report(
        facts=tuple(facts), blocks=tuple(blocks), about=tuple(about), line_chart=line_chart, title=asked.title
    )


def _filters_about(asked: Asked) -> str:
    pairs = asked.query.filters.pairs
    if not pairs:
        return "none: every user, module, product and skill of the tenant"
    narrowed = ", ".join(f"{name} = {value!r}" for name, value in pairs)
    return f"{narrowed} (exact match, as OpenMeter compares; every query and event of this answer is narrowed to it)"


def _times(trend: Trend | None, outlook: Outlook | None, time_zone: str) -> str:
    if trend is not None:
        return f"UTC; periods are calendar {trend.granularity}s in {time_zone}"
    if outlook is not None:
        return f"UTC; days are calendar days in {time_zone}"
    return "UTC"


def _forecast_facts(outlook: Outlook) -> list[Fact]:
    facts = [
        Fact("As of (UTC)", format_utc(outlook.as_of)),
        Fact("Last day of the forecast", outlook.last_day.isoformat()),
        Fact("Used so far", outlook.used_so_far, CREDITS_FORMAT),
        Fact("Projected total", outlook.projected_total, CREDITS_FORMAT),
        Fact("80% interval: low", outlook.interval_80[0], CREDITS_FORMAT),
        Fact("80% interval: high", outlook.interval_80[1], CREDITS_FORMAT),
        Fact("95% interval: low", outlook.interval_95[0], CREDITS_FORMAT),
        Fact("95% interval: high", outlook.interval_95[1], CREDITS_FORMAT),
        Fact("History learned from (days)", outlook.history_days),
    ]
    if not outlook.enough_history:
        facts.append(Fact("Caution", outlook.too_little_history()))
    if outlook.balance is not None and outlook.balance_runs_out is not None:
        earliest, likely, latest = outlook.balance_runs_out
        facts += [
            Fact("Credit balance now", outlook.balance, CREDITS_FORMAT),
            Fact("Balance runs out, earliest", earliest or "lasts the period"),
            Fact("Balance runs out, expected", likely or "lasts the period"),
            Fact("Balance runs out, latest", latest or "lasts the period"),
        ]
    return facts


def _trend_facts(trend: Trend) -> list[Fact]:
    unit = trend.granularity
    facts = [Fact("Granularity", unit)]
    if trend.judged:
        facts.append(Fact(trend.typical_name().capitalize(), trend.typical, CREDITS_FORMAT))
        unusual = f"{len(trend.unusual)} (listed below)" if trend.unusual else "none"
    else:
        unusual = trend.not_judged(short=True)
    return [*facts, Fact(f"Unusual {unit}s", unusual)]


def _movers_block(movers: list[Mover], comparison: Comparison) -> Block:
    return Block(
        f"Biggest changes by user against the previous {comparison.span}",
        ("user", "status", "credits", "before", "change"),
        tuple((mover.name or NO_VALUE, mover.status, mover.current, mover.previous, mover.change) for mover in movers),
        (None, None, CREDITS_FORMAT, CREDITS_FORMAT, CREDITS_FORMAT),
    )


def _unusual_block(trend: Trend) -> Block:
    unit, typical = trend.granularity, trend.typical_name()
    rows = []
    for found in trend.unusual:
        period = trend.periods[found.index]
        partial = "yes" if period.partial else "no"
        rows.append((period_text(period.label, unit), found.credits, found.times_typical, partial))
    basis = f"the median complete {unit}" + (" that had some" if trend.typical_with_usage else "")
    return Block(
        f"Unusual {unit}s: {unusual_rule(f'the {typical} ({basis})', times_first=True)}",
        (unit, "credits", f"times the {typical}", "partial"),
        tuple(rows),
        (None, CREDITS_FORMAT, "0.0", None),
    )


def _comparison_facts(findings: Findings) -> list[Fact]:
    comparison = findings.comparison
    if comparison is None:
        return [Fact("Previous window", COMPARISON_UNAVAILABLE)]
    before = comparison.previous_window
    facts = [
        Fact("Previous window (UTC)", f"{format_utc(before.start)} to {format_utc(before.end)}"),
        Fact(f"Previous {comparison.span}: credits", comparison.previous, CREDITS_FORMAT),
        Fact("Change (credits)", comparison.change, CREDITS_FORMAT),
    ]
    if comparison.percent is None:
        facts.append(Fact("Change (%)", "no usage in the previous period"))
    else:
        facts.append(Fact("Change (%)", comparison.percent / 100, SHARE_FORMAT))
    return facts


def _top_block(dimension: str, top: list[Top]) -> Block:
    rows = tuple((name or NO_VALUE, credits, share) for name, credits, share in top)
    return Block(
        f"Top {len(rows)} {dimension}{'' if len(rows) == 1 else 's'} by credits",
        (dimension, "credits", "share"),
        rows,
        (None, CREDITS_FORMAT, SHARE_FORMAT),
        chart="Top users by credits" if dimension == "user" else None,
    )
