"""The text a tool answers with: a window line, a GFM table of at most 50 rows, the cut line, the total, what the
question found besides (the credits not shown, the comparison, the movers, unusual periods), the link.

Cell text is escaped so a value can neither break the table (pipes, line breaks) nor turn into markup the chat
might render (links, HTML, code spans). A preview stays under about 20,000 characters whatever the names in it:
when it would not, long cells are shortened with an ellipsis, here only, never in the workbook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ai_credit_usage.answers.table import Table
from ai_credit_usage.questions.compare import COMPARISON_UNAVAILABLE, VISIBLE_CENT, Comparison, Mover
from ai_credit_usage.questions.filters import NO_FILTERS, Filters
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.forecast import Outlook
from ai_credit_usage.questions.sink import PREVIEW_ROWS, TableSink
from ai_credit_usage.questions.trend import NO_VALUE, Granularity, Trend, unusual_rule
from ai_credit_usage.runtime.window import Window, format_utc

MAX_PREVIEW_CHARS = 20_000
CELL_LIMITS = (200, 100, 50, 24, 12)  # the longest cell allowed, tried in turn until the preview fits
ELLIPSIS = "…"
UNUSUAL_LISTED = 10
_MARKDOWN_SPECIAL = re.compile(r"([\\|`\[\]<>])")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029\x85]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ADVERB = {"day": "daily", "week": "weekly (weeks start on Monday)", "month": "monthly"}


def escape_cell(text: str) -> str:
    """Markdown-safe table cell: backslash-escape markup, line breaks as <br>, other control characters dropped."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\t", " "))
    return _CONTROL.sub("", _LINE_BREAKS.sub("<br>", text))


def shorten_cell(text: str, limit: int) -> str:
    """`escape_cell(text)`, cut to at most `limit` characters with an ellipsis when longer.

    The cut is made on the raw text, so no escape sequence is split and the result stays markdown-safe.
    """
    return _shortened(text, limit)[0]


def _shortened(text: str, limit: int) -> tuple[str, bool]:
    """The shortened cell and whether it was cut."""
    escaped = escape_cell(text)
    if len(escaped) <= limit:
        return escaped, False
    # The longest raw prefix whose escaped form leaves room for the ellipsis; look only as far as needed (a name may
    # be megabytes long), then bisect: the escaped length never shrinks as the prefix grows.
    high = limit
    while high < len(text) and len(escape_cell(text[:high])) <= limit - 1:
        high *= 2
    low, high = 0, min(high, len(text))
    while low < high:
        middle = (low + high + 1) // 2
        if len(escape_cell(text[:middle])) <= limit - 1:
            low = middle
        else:
            high = middle - 1
    return escape_cell(text[:low]) + ELLIPSIS, True


def shorten_plain(text: str, limit: int) -> str:
    """The structured counterpart of `shorten_cell`: the raw text cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def format_credits(value: float) -> str:
    """Two decimals with thousands separators; a small non-zero amount is `<0.01`, never a misleading 0.00."""
    if value != 0 and abs(value) < 0.005:
        return "<0.01" if value > 0 else ">-0.01"
    text = f"{value:,.2f}"
    return "0.00" if text == "-0.00" else text


def format_change(value: float) -> str:
    """A signed change in credits: +12.50, -3.00, or "no change" below a visible cent."""
    if abs(value) < VISIBLE_CENT:
        return "no change"
    return ("+" if value > 0 else "") + format_credits(value)


def format_percent(value: float) -> str:
    return f"{value:+,.1f}%"


def period_text(label: date, granularity: Granularity) -> str:
    return label.strftime("%Y-%m") if granularity == "month" else label.isoformat()


def shown_cents(value: float) -> Decimal:
    """The amount `format_credits` shows, as an exact number of cents (`<0.01` counts as the 0.00 it rounds to)."""
    return Decimal(f"{value:.2f}")


@dataclass(frozen=True)
class Shown:
    """The rows a preview shows and what it leaves out (its credits exact, as the structured result gives them)."""

    rows: list[tuple[Any, ...]]
    hidden: int
    hidden_credits: float
    newest: bool = False  # a trend shows its newest periods (still oldest first); the hidden ones are older


def shown_rows(table: Table | TableSink, findings: Findings) -> Shown:
    """The first 50 rows; for a trend with more periods, the newest 50, the end that says where usage is going."""
    trend = findings.trend
    if trend is not None and len(trend.periods) > PREVIEW_ROWS:
        first = len(trend.periods) - PREVIEW_ROWS
        rows = [trend.row(position) for position in range(first, len(trend.periods))]
        return Shown(rows, first, math.fsum(trend.totals[:first]), newest=True)
    rows = table.preview_rows[:PREVIEW_ROWS]
    hidden = table.row_count - len(rows)
    return Shown(rows, hidden, table.rest_credits if hidden else 0.0)


@dataclass(frozen=True)
class Preview:
    text: str
    cell_limit: int  # the longest cell it shows; the structured result shortens its strings the same way
    shortened: bool  # some cell, name or header was cut
    shown: Shown  # the rows it shows, which the structured result gives too


def render_answer(table: Table | TableSink, **options: Any) -> str:
    """The answer text alone; `options` are `render_preview`'s."""
    return render_preview(table, **options).text


def render_preview(
    table: Table | TableSink,
    *,
    tenant: str,
    window: Window,
    download_url: str,
    expires_at: datetime,
    now: datetime,
    findings: Findings | None = None,
    budget: int = MAX_PREVIEW_CHARS,
    filters: Filters = NO_FILTERS,
) -> Preview:
    """The answer text with the longest cell limit that keeps it within `budget` characters."""
    findings = findings or Findings()
    shown = shown_rows(table, findings)
    text = ""
    known: dict[tuple[str, int], tuple[str, bool]] = {}  # names repeat on many rows, and across the limits tried
    for limit in CELL_LIMITS:
        cut: list[bool] = []

        def cell(value: str, limit: int = limit, cut: list[bool] = cut) -> str:
            key = (value, limit)
            if key not in known:
                known[key] = _shortened(value, limit)
            shown, shortened = known[key]
            if shortened:
                cut.append(True)
            return shown

        def name(value: str, limit: int = limit, cut: list[bool] = cut) -> str:
            """A name outside the table (the Top lines): plain, cut as a cell is, and counted as cut as one."""
            shown = shorten_plain(value, limit)
            if shown != value:
                cut.append(True)
            return plain_text(shown)

        text = _render(table, shown, cell, name, tenant, window, download_url, expires_at, now, findings, filters)
        if len(text) <= budget:
            return Preview(text, limit, bool(cut), shown)
    return Preview(text, CELL_LIMITS[-1], True, shown)  # pragma: no cover - only an absurd PUBLIC_BASE_URL gets here


def _render(
    table: Table | TableSink,
    preview: Shown,
    cell: Callable[[str], str],
    name: Callable[[str], str],
    tenant: str,
    window: Window,
    download_url: str,
    expires_at: datetime,
    now: datetime,
    findings: Findings,
    filters: Filters,
) -> str:
    trend, outlook = findings.trend, findings.forecast
    shown = preview.rows
    first_amount = len(table.columns) - table.amounts
    scope = "".join(f", {name} {cell(value)}" for name, value in filters.pairs)  # what the answer is narrowed to
    heading = f"Tenant {cell(tenant)}{scope}, {window.describe()}"
    if outlook is not None:
        heading = (
            f"Tenant {cell(tenant)}{scope}, forecast for {window.describe()}, daily in {outlook.time_zone}, "
            f"as of {format_utc(outlook.as_of)}"
        )
    if trend is not None:
        heading += f", {_ADVERB[trend.granularity]} in {trend.time_zone}"
        if trend.group_by is not None:
            heading += f", by {trend.group_by} (the top 5, the rest as Other)"
    lines = [heading + ":", ""]
    if findings.no_match is not None:  # the filter's value is named back, never shown as a row of the tenant's
        lines += [plain_text(findings.no_match.sentence()), ""]
    lines.append("| " + " | ".join(cell(name) for name in table.columns) + " |")
    lines.append("|" + "|".join("---:" if i >= first_amount else "---" for i in range(len(table.columns))) + "|")

    def show(index: int, value: Any) -> str:
        if index >= first_amount:
            return format_credits(value)
        if isinstance(value, datetime):
            return format_utc(value)
        if isinstance(value, date):
            return period_text(value, trend.granularity if trend else "day")
        return cell(str(value))

    for row in shown:
        lines.append("| " + " | ".join(show(index, value) for index, value in enumerate(row)) + " |")
    lines.append("")
    if preview.hidden:
        lines.append(_cut_line(preview, table.row_count, trend))
    if outlook is not None:
        lines += _forecast_lines(outlook)
    else:
        lines.append(f"Total credits: {format_credits(table.total_credits)}")
    if preview.hidden:
        total_name = "the projected total" if outlook is not None else "the total"
        lines.append(_hidden_line(preview, table.total_credits, trend, table.total_index, total_name))
    if findings.comparison_in_text:
        lines.append(_comparison_line(findings.comparison))
    if findings.movers is not None and findings.comparison is not None:
        lines += _mover_lines(findings.movers, findings.comparison, cell)
    if findings.tops_in_text and isinstance(table, TableSink):
        lines += _top_lines(table, name)
    if trend is not None:
        lines += _trend_lines(trend)
    lines.append(download_line(download_url, expires_at, now))
    return "\n".join(lines)


def plain_text(text: str) -> str:
    """A name outside a table, as it is: only line breaks and control characters go (they would break the line)."""
    return _CONTROL.sub("", _LINE_BREAKS.sub(" ", text.replace("\t", " ")))


def _top_lines(sink: TableSink, name: Callable[[str], str]) -> list[str]:
    """The top 5 of every dimension the answer knows, over all its rows (not the preview): names as they are (but
    cut, `name`), credits and their share of the total."""
    lines = []
    for dimension, top in sink.tops().items():
        listed = []
        for value, credits, share in top:
            shown = name(value) if value else NO_VALUE
            listed.append(f"{shown} {format_credits(credits)}" + (f" ({share:.1%})" if share is not None else ""))
        lines.append(f"Top {dimension}s: {'; '.join(listed)}.")
    return lines


def _forecast_lines(outlook: Outlook) -> list[str]:
    low_80, high_80 = (format_credits(value) for value in outlook.interval_80)
    low_95, high_95 = (format_credits(value) for value in outlook.interval_95)
    lines = [
        f"Used so far ({outlook.first_day.isoformat()} until {format_utc(outlook.as_of)}): "
        f"{format_credits(outlook.used_so_far)} credits.",
        f"Projected total by the end of {outlook.last_day.isoformat()}: {format_credits(outlook.projected_total)} "
        f"credits (80% interval {low_80} to {high_80}; 95% interval {low_95} to {high_95}).",
    ]
    if not outlook.enough_history:
        lines.append(outlook.too_little_history())
    if (crossing := balance_crossing_line(outlook)) is not None:
        lines.append(crossing)
    return lines


def balance_crossing_line(outlook: Outlook) -> str | None:
    """When a balance is configured: whether and when it runs out, at the allowance's own pace (the entitlement's
    daily usage, which may differ from the tenant meter this forecast projects; docs/credits.md). On v3 the pace is
    the tenant's own (no allowance history there) and there is no reset: the horizon is a year ahead."""
    if outlook.balance is None or outlook.balance_runs_out is None or outlook.balance_horizon is None:
        return None
    earliest, likely, latest = outlook.balance_runs_out
    head = f"Balance: {format_credits(outlook.balance)} credits left;"
    pace = "at the allowance's own pace" if outlook.balance_pace == "entitlement" else "at the tenant's recent pace"
    reset = (outlook.balance_horizon + timedelta(days=1)).isoformat()
    horizon = f"the allowance resets on {reset}" if outlook.balance_until_reset else reset
    if earliest is None:
        return f"{head} {pace} it lasts until {horizon}."
    end = "the reset" if outlook.balance_until_reset else reset
    when = f"around {likely.isoformat()}" if likely else f"not before {end} at the expected pace"
    slow = latest.isoformat() if latest else end
    ahead = ""
    if (likely or earliest) > outlook.last_day:
        ahead = f", after this forecast's last day ({outlook.last_day.isoformat()})"
    before = f", before the allowance resets on {reset}" if outlook.balance_until_reset else ""
    return f"{head} {pace} it runs out {when} (80% range {earliest.isoformat()} to {slow}){ahead}{before}."


def download_line(download_url: str, expires_at: datetime, now: datetime) -> str:
    """The last line of every answer with figures: the workbook's link and when it stops working."""
    return f"[Download Excel]({download_url}) (link expires at {format_utc(expires_at)}, {_in(expires_at - now)})"


def _in(remaining: timedelta) -> str:
    """ "in 10 minutes"; seconds below one minute, where rounding up to a minute would overstate a short TTL."""
    seconds = max(0, round(remaining.total_seconds()))
    if seconds < 60:
        return f"in {seconds} second{'' if seconds == 1 else 's'}"
    minutes = round(seconds / 60)
    return f"in {minutes} minute{'' if minutes == 1 else 's'}"


def _cut_line(preview: Shown, count: int, trend: Trend | None) -> str:
    if trend is None or not preview.newest:
        return f"Showing {len(preview.rows):,} of {count:,} rows; the Excel file has all {count:,}."
    unit = trend.granularity
    first, last = (period_text(preview.rows[index][0], unit) for index in (0, -1))
    return (
        f"Showing the newest {len(preview.rows):,} of {count:,} {unit}s ({first} to {last}); "
        f"the Excel file has all {count:,}, from {period_text(trend.periods[0].label, unit)}."
    )


def _hidden_line(
    preview: Shown, total: float, trend: Trend | None, total_index: int = -1, total_name: str = "the total"
) -> str:
    """The credits of the rows not shown, such that the amounts as shown add up to the total as shown: each row is
    rounded to cents, so the exact rest (in the structured result) can be off by a few cents from that."""
    rest = shown_cents(total) - sum((shown_cents(row[total_index]) for row in preview.rows), Decimal(0))
    hidden = preview.hidden
    if trend is not None and preview.newest:
        what, shown = f"older {trend.granularity}{'' if hidden == 1 else 's'}", f"{trend.granularity}s shown"
    else:
        what, shown = f"row{'' if hidden == 1 else 's'}", "rows shown"
    if rest < 0:  # only when many rows round up and the rest is tiny: then say the rest as it is, and why
        return (
            f"The {hidden:,} {what} not shown hold {format_credits(preview.hidden_credits)} credits (the {shown} are "
            f"rounded to cents, so with them this makes {total_name} only approximately)."
        )
    return f"The {hidden:,} {what} not shown hold {rest:,.2f} credits (with the {shown}, they make {total_name})."


def _comparison_line(comparison: Comparison | None) -> str:
    if comparison is None:  # the preceding window's query failed; the rest of the answer stands
        return f"Compared with the preceding window: {COMPARISON_UNAVAILABLE}."
    before = comparison.previous_window
    period = f"the previous {comparison.span} ({format_utc(before.start)} to {format_utc(before.end)}"
    if comparison.percent is None:
        return f"Compared with {period}): {format_change(comparison.change)}; no usage in the previous period."
    return (
        f"Compared with {period}, {format_credits(comparison.previous)} credits): "
        f"{format_change(comparison.change)} ({format_percent(comparison.percent)})."
    )


def _mover_lines(movers: list[Mover], comparison: Comparison, cell: Callable[[str], str]) -> list[str]:
    if not movers:
        return [f"No user's credits changed against the previous {comparison.span}."]
    lines = [f"Biggest changes by user against the previous {comparison.span}:"]
    for mover in movers:
        name = cell(mover.name) if mover.name else "(no user)"
        if mover.status == "new":
            lines.append(f"- {name}: new, {format_credits(mover.current)} credits")
        elif mover.status == "gone":
            lines.append(f"- {name}: gone, {format_credits(mover.previous)} credits before")
        else:
            percent = format_percent(mover.percent or 0.0)
            lines.append(
                f"- {name}: {format_change(mover.change)} ({percent}), "
                f"{format_credits(mover.previous)} to {format_credits(mover.current)}"
            )
    return lines


def _trend_lines(trend: Trend) -> list[str]:
    unit = trend.granularity
    lines: list[str] = []
    partial = sum(period.partial for period in trend.periods)
    if partial:
        lines.append(
            f"{partial} {unit} marked partial: the window covers only part of it, so it looks lower than it is."
            if partial == 1
            else f"{partial} {unit}s marked partial: the window covers only part of them, so they look lower "
            "than they are."
        )
    if not trend.judged:
        lines.append(trend.not_judged())
        return lines
    typical, deviation = format_credits(trend.typical or 0.0), format_credits(trend.deviation or 0.0)
    if trend.typical_with_usage:
        lines.append(
            f"Most complete {unit}s had no usage, so the {trend.typical_name()} is the median of the "
            f"{trend.complete_with_usage} complete {unit}s that had some."
        )
        typical_is = f"the {trend.typical_name()} ({typical})"
    else:
        typical_is = f"the {trend.typical_name()} ({typical}, the median complete {unit})"
    rule = unusual_rule(typical_is, deviation)
    if not trend.unusual:
        lines.append(f"No unusual {unit}s: none is {rule}.")
        return lines
    lines.append(f"Unusual {unit}s, {rule}:")
    ranked = trend.unusual
    for found in ranked[:UNUSUAL_LISTED]:
        period = trend.periods[found.index]
        label = ("week of " if unit == "week" else "") + period_text(period.label, trend.granularity)
        lines.append(
            f"- {label}{' (partial)' if period.partial else ''}: {format_credits(found.credits)} credits, "
            f"{found.times_typical:,.1f} times the {trend.typical_name()}"
        )
    if len(ranked) > UNUSUAL_LISTED:
        lines.append(f"- and {len(ranked) - UNUSUAL_LISTED} more (the Excel file's Summary sheet lists them all)")
    return lines
