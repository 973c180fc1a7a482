"""The credits-left answer: its text (one line of balance, usage and reset, the grants table, overage, soft limit,
runway, the meter cross-check, the link) and its workbook (Summary, Grants, Daily, a chart of this period's
cumulative usage against the allowance, About). The counterpart of render.py and summary.py for the balance.

Every name that comes from OpenMeter or the caller (tenant, grant names) is escaped for the table and cut to a
bounded length, so it can neither break the table nor become markup; the workbook stores text as literal strings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ai_credit_usage.answers.demo_notice import DEMO_ABOUT
from ai_credit_usage.answers.render import download_line, escape_cell, format_credits, shorten_cell
from ai_credit_usage.answers.workbook import CREDITS_FORMAT, DATE_FORMAT, Fact, Report, Sheet, SheetChart
from ai_credit_usage.questions.balance import CreditBalance, GrantLine
from ai_credit_usage.questions.runway import LEFT_OVER
from ai_credit_usage.questions.sink import PREVIEW_ROWS
from ai_credit_usage.runtime.window import format_utc

NAME_LIMIT = 80
_EVERY = {"DAY": "daily", "WEEK": "weekly", "MONTH": "monthly", "YEAR": "yearly"}
GRANT_COLUMNS = ("grant", "amount", "left", "effective", "expires", "recurs", "priority", "state")
DAILY_COLUMNS = ("day", "credits", "used this period", "projected", "low 80%", "high 80%", "allowance")


def _name(text: str) -> str:
    return shorten_cell(text, NAME_LIMIT)


def _when(moment: datetime) -> str:
    """2026-02-01 00:00 UTC"""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _from_now(moment: datetime, now: datetime) -> str:
    """in 11 days / in 5 hours / now"""
    left = moment - now
    if left <= timedelta(0):
        return "now"
    if left < timedelta(hours=1):
        minutes = max(1, round(left.total_seconds() / 60))
        return f"in {minutes} minute{'' if minutes == 1 else 's'}"
    if left < timedelta(days=2):
        hours = round(left.total_seconds() / 3600)
        return f"in {hours} hour{'' if hours == 1 else 's'}"
    days = round(left.total_seconds() / 86400)
    return f"in {days} days"


def no_allowance_text(found: CreditBalance) -> str:
    if found.reason is not None:  # v3 tells a tenant without a customer from a customer without credits
        return escape_cell(found.reason)  # it names the tenant and its key as they are: escaped like any name
    return f"No credit allowance is set up for tenant {_name(found.tenant)}."


def not_metered_text(found: CreditBalance) -> str:
    return (
        f"Tenant {_name(found.tenant)} has a {found.entitlement_type} entitlement to {found.feature}, not a metered "
        "one: there is no metered credit allowance, so there is no balance to count down."
    )


def headline(found: CreditBalance) -> str:
    """The one line: the balance now, this period's usage, when the period resets."""
    assert found.balance is not None
    if found.source == "ledger":
        return _ledger_headline(found, found.balance)
    line = (
        f"Tenant {_name(found.tenant)}: **{format_credits(found.balance)} credits left** as of {_when(found.as_of)}; "
        f"{format_credits(found.usage or 0.0)} used this period"
    )
    if found.period is not None:
        line += (
            f" (since {_day(found.period.start)}); the period resets on {_when(found.period.end)} "
            f"({_from_now(found.period.end, found.as_of)})."
        )
    else:
        line += "."
    return line


def _ledger_headline(found: CreditBalance, live: float) -> str:
    """v3's ledger: the live balance of its one currency, and the usage since the active grants took effect (the
    ledger has no period and no reset)."""
    line = (
        f"Tenant {_name(found.tenant)}: **{format_credits(live)} credits left** ({found.currency} ledger, live) as of "
        f"{_when(found.as_of)}"
    )
    if found.usage_since is not None:
        line += (
            f"; {format_credits(found.usage or 0.0)} used since {_day(found.usage_since)}, when its active grants took "
            "effect"
        )
    if found.pending:
        line += f"; {format_credits(found.pending)} more granted but not booked yet"
    return line + "."


def status_lines(found: CreditBalance) -> list[str]:
    if found.source == "ledger":
        if found.balance is not None and found.balance < 0:
            return [
                f"The {found.currency} ledger is {format_credits(-found.balance)} below zero: usage beyond what the "
                "grants cover."
            ]
        return ["No credits are left in the ledger."] if found.has_access is False else []
    lines = []
    if found.overage:
        lines.append(f"Overage: {format_credits(found.overage)} credits used this period beyond what the grants cover.")
    if found.soft_limit:
        lines.append("This allowance is a soft limit: usage may go on beyond the balance (it shows up as overage).")
    elif found.has_access is False:
        lines.append("No credits are left: OpenMeter denies access until the period resets or a new grant starts.")
    return lines


def grant_table(grants: list[GrantLine], source: str = "entitlement") -> list[str]:
    """The first grants as a table: an entitlement's with what is left of each; v3's ledger's with status, priority
    and dates instead, as the ledger keeps no remaining amount per grant."""
    if not grants:
        return ["No grants: nothing has been granted on this allowance."]
    ledger = source == "ledger"
    if ledger:
        lines = ["| grant | amount | status | priority | effective | expires |", "|---|---:|---|---:|---|---|"]
    else:
        lines = ["| grant | amount | left | expires | recurs |", "|---|---:|---:|---|---|"]
    lines += [_ledger_grant_row(grant) if ledger else _grant_row(grant) for grant in grants[:PREVIEW_ROWS]]
    if len(grants) > PREVIEW_ROWS:
        lines.append(f"Showing {PREVIEW_ROWS} of {len(grants):,} grants; the Excel file has all of them.")
    if ledger:
        lines.append("The ledger keeps no remaining amount per grant: the balance above is what is left of them all.")
    return lines


def _grant_row(grant: GrantLine) -> str:
    left = "not yet effective" if grant.remaining is None else format_credits(grant.remaining)
    if grant.state in ("expired", "voided"):
        left = f"0.00 ({grant.state})"
    recurs = _EVERY.get(grant.recurrence or "", "yes") if grant.recurring else "no"
    return f"| {_name(grant.name)} | {_amount(grant)} | {left} | {_expires(grant)} | {recurs} |"


_LEDGER_STATUS = {"active": "active", "future": "pending", "expired": "expired", "voided": "voided"}


def _ledger_grant_row(grant: GrantLine) -> str:
    effective = _when(grant.effective_at) if grant.effective_at else "-"
    priority = "-" if grant.priority is None else str(grant.priority)
    status = _LEDGER_STATUS[grant.state]
    return f"| {_name(grant.name)} | {_amount(grant)} | {status} | {priority} | {effective} | {_expires(grant)} |"


def _amount(grant: GrantLine) -> str:
    return "-" if grant.amount is None else format_credits(grant.amount)


def _expires(grant: GrantLine) -> str:
    return _when(grant.expires_at) if grant.expires_at else "never"


def _date(day: date) -> str:
    return day.isoformat()


def runway_lines(found: CreditBalance) -> list[str]:
    """The runway as a range, whether it comes before the reset, and a grant that expires unused on the way."""
    outlook = found.outlook
    if outlook is None or found.balance is None:
        return []
    reset = f"the period resets on {_day(found.period.end)}" if found.period else "the period resets"
    beyond = reset if outlook.until_reset else f"{_date(outlook.horizon)} (a year ahead)"
    if found.balance <= LEFT_OVER:
        lines = ["Runway: nothing is left to run down."]
    elif outlook.history_days == 0 or not any(day.credits > 0 for day in found.daily):
        lines = ["Runway: no usage in the last weeks, so the balance is not running down."]
    elif outlook.earliest is None:
        lines = [f"Runway: at the recent pace the balance lasts until {beyond}."]
    else:
        when = ""  # v3 has no period to reset: no clause about it
        if found.period is not None:
            when = f"before {reset}" if found.runway and found.runway.before_reset else f"after {reset}"
        also = f", {when}" if when else ""
        if outlook.latest is None:
            likely = f"around {_date(outlook.likely)}" if outlook.likely else ""
            span = (
                f"{', '.join(part for part in (likely, when) if part)} (80% range: {_date(outlook.earliest)} at the "
                f"earliest; at the slow end of the range it lasts until {beyond})"
            ).lstrip()
        elif outlook.latest == outlook.earliest:
            span = f"on {_date(outlook.earliest)}{also}"
        elif outlook.likely is not None:
            span = (
                f"around {_date(outlook.likely)} (80% range {_date(outlook.earliest)} to {_date(outlook.latest)}){also}"
            )
        else:
            span = f"between {_date(outlook.earliest)} and {_date(outlook.latest)}{also}"
        lines = [f"Runway: at the recent pace the balance runs out {span}."]
    if found.pace == "tenant" and found.balance > LEFT_OVER:
        lines.append("The pace is the tenant's own daily usage on the meter (the forecast's history).")
    if outlook.history_days and not outlook.enough_history:
        lines.append(
            f"The pace comes from only {outlook.history_days} complete days of usage: take the runway as a rough guide."
        )
    if outlook.expiring is not None:
        name, day, amount = outlook.expiring
        lines.append(
            f"{_name(name)} expires on {_date(day)} with about {format_credits(amount)} credits that the expected "
            "pace will not use up by then."
        )
    return lines


def disagreement_line(found: CreditBalance) -> str | None:
    if not found.disagrees or found.lookback is None or found.meter_usage is None:
        return None
    return (
        f"Note: from {_day(found.lookback.start)} to now the entitlement counted "
        f"{format_credits(found.entitlement_lookback_usage)} credits but the tenant meter shows "
        f"{format_credits(found.meter_usage)}: OpenMeter burns the allowance only with usage of the customer's "
        f"subjects ({_name(found.customer_key)} and its subject keys), so usage reported under other subjects is "
        "not taken from the balance (see docs/credits.md)."
    )


def render_balance(found: CreditBalance, *, download_url: str, expires_at: datetime) -> str:
    lines = [headline(found), *status_lines(found), "", *grant_table(found.grants, found.source), ""]
    lines += runway_lines(found)
    if (note := disagreement_line(found)) is not None:
        lines.append(note)
    lines.append(download_line(download_url, expires_at, found.as_of))
    return "\n".join(lines)


# ---- the workbook -------------------------------------------------------------------------------------------------


def grant_rows(grants: list[GrantLine]) -> tuple[tuple[object, ...], ...]:
    return tuple(
        (
            grant.name,
            grant.amount,
            grant.remaining,
            grant.effective_at,
            grant.expires_at,
            (grant.recurrence or "yes") if grant.recurring else "no",
            grant.priority,
            grant.state,
        )
        for grant in grants
    )


def daily_rows(found: CreditBalance) -> tuple[tuple[object, ...], ...]:
    """Each lookback day: its credits, and within the current period the running total and the allowance; then the
    days ahead to the reset: the running total projected at the recent pace (expected, 80% range)."""
    rows: list[tuple[object, ...]] = []
    running = 0.0
    period_start: date | None = found.period.start.astimezone(UTC).date() if found.period else None
    allowance = found.total_available
    for day in found.daily:
        if period_start is not None and day.day >= period_start:
            running += day.credits
            rows.append((day.day, day.credits, running, None, None, None, allowance))
        else:
            rows.append((day.day, day.credits, None, None, None, None, None))
    projection = found.outlook.projection if found.outlook else None
    if projection is None or found.usage is None:
        return tuple(rows)
    used = found.usage  # the period's usage as of now: the projection adds what is still to come
    for ahead in projection.days:
        row = (used + ahead.total, used + ahead.total_80[0], used + ahead.total_80[1], allowance)
        if rows and rows[-1][0] == ahead.day:  # today: recorded so far, and projected to its end
            rows[-1] = (*rows[-1][:3], *row)
        else:
            rows.append((ahead.day, None, None, *row))
    return tuple(rows)


def balance_workbook_content(
    found: CreditBalance, *, demo: bool, source: str, generated: datetime
) -> tuple[Report, list[Sheet], SheetChart]:
    facts = [Fact("Data", DEMO_ABOUT)] if demo else []
    facts += [
        Fact("Tenant", found.tenant),
        Fact("Question", "AI credits left (get_credit_balance)"),
        Fact("As of (UTC)", format_utc(found.as_of)),
        Fact("Balance (credits left)", found.balance, CREDITS_FORMAT),
        Fact("Used this period", found.usage, CREDITS_FORMAT),
        Fact("Overage", found.overage, CREDITS_FORMAT),
        Fact("Allowance this period (used from grants + left)", found.total_available, CREDITS_FORMAT),
        Fact("Has access", "yes" if found.has_access else "no"),
        Fact("Soft limit", "yes" if found.soft_limit else "no"),
    ]
    if found.source == "ledger":  # v3's prepaid credits ledger: one currency, no period
        facts += [
            Fact("Source", "credits ledger (OpenMeter v3, beta)"),
            Fact("Currency", found.currency),
            Fact("Settled (booked)", found.settled, CREDITS_FORMAT),
            Fact("Pending (granted, not booked)", found.pending, CREDITS_FORMAT),
            Fact("Usage counted since (UTC)", format_utc(found.usage_since) if found.usage_since else "-"),
        ]
    if found.period is not None:
        facts += [
            Fact("Period from (UTC)", format_utc(found.period.start)),
            Fact("Period resets at (UTC)", format_utc(found.period.end)),
            Fact("Usage period", (found.usage_interval or "?").lower()),
        ]
    runway = found.runway
    facts += [
        Fact("Runs out, earliest (UTC day)", runway.earliest if runway else "not before the horizon"),
        Fact("Runs out, latest (UTC day)", (runway.latest or "not before the horizon") if runway else "-"),
    ]
    if found.outlook is not None:
        facts.append(Fact("Runway horizon", found.outlook.horizon))
    if found.meter_usage is not None and found.lookback is not None:
        facts += [
            Fact("Entitlement usage over the lookback", found.entitlement_lookback_usage, CREDITS_FORMAT),
            Fact("Tenant meter usage over the lookback", found.meter_usage, CREDITS_FORMAT),
        ]
    facts.append(Fact("Generated at (UTC)", format_utc(generated)))
    about: list[tuple[str, object]] = [("data", DEMO_ABOUT)] if demo else []
    about += [
        ("tool", "get_credit_balance"),
        ("tenant", found.tenant),
        ("customer key", found.customer_key),
        ("feature", found.feature),
        ("source", source),
        (
            "Grants sheet",
            "every grant that is not deleted, in OpenMeter's burn-down order (priority, earliest "
            "expiry, creation); 'left' is blank for a grant not effective yet",
        ),
        (
            "Daily sheet",
            "the entitlement's own usage per UTC day (what burns the balance); within the current period "
            "also the running total and the allowance; then to the reset the running total projected at the "
            "recent pace (expected and its 80% range)",
        ),
        ("times", "UTC; a period's end and a grant's expiry are exclusive instants"),
        ("generated at (UTC)", format_utc(generated)),
    ]
    if found.source == "ledger":
        about.append(("ledger", "the ledger keeps no remaining amount per grant: 'left' stays blank for every grant"))
    if found.pace == "tenant":
        about.append(("pace", "the Daily sheet and the runway use the tenant's own usage on the meter per UTC day"))
    if found.lookback is not None:
        about.append(("lookback", found.lookback.describe()))
    sheets = [
        Sheet(
            "Grants",
            GRANT_COLUMNS,
            grant_rows(found.grants),
            (None, CREDITS_FORMAT, CREDITS_FORMAT, None, None, None, None, None),
        ),
        Sheet("Daily", DAILY_COLUMNS, daily_rows(found), (DATE_FORMAT, *(CREDITS_FORMAT,) * 6)),
    ]
    chart = SheetChart("This period: cumulative usage, recorded and projected, against the allowance", "Daily", 3, 7)
    report = Report(facts=tuple(facts), about=tuple(about), title="AI credits left")
    return report, sheets, chart
