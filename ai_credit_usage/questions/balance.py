"""The credits-left question: the tenant's allowance as OpenMeter's entitlement holds it, read through the seams.

One entitlement (the customer of the tenant, the feature OPENMETER_CREDITS_FEATURE): its value now (balance, this
period's usage, overage, access), its period, its grants with what is left of each, and its own daily usage over a
lookback long enough to take a pace from. Beside it the tenant meter's usage over the same days, because
OpenMeter burns the balance with the usage of the customer's *subjects*, not of the `tenant` dimension the usage
tools read: where the two differ, the answer says so.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol

from ai_credit_usage.openmeter.entitlements import (
    Entitlement,
    EntitlementsV2,
    EntitlementValue,
    Grant,
    HistoryWindow,
)
from ai_credit_usage.openmeter.interface import AggregateQuery, OpenMeter
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.questions.forecast import LOOKBACK_DAYS as FORECAST_LOOKBACK_DAYS
from ai_credit_usage.questions.runway import Pot, RunwayFinding, runway
from ai_credit_usage.questions.together import together
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.window import Window

# The history the runway's pace is learned from: as much as the forecast method uses (twelve weeks).
LOOKBACK_DAYS = FORECAST_LOOKBACK_DAYS
# The two counts are told apart only beyond rounding: 0.5 % of the larger, and at least a cent.
DISAGREEMENT_SHARE = 0.005
DISAGREEMENT_MIN = 0.01
Status = Literal["metered", "none", "not_metered"]
GrantState = Literal["active", "future", "expired", "voided"]
STATE_RANK = {"active": 0, "future": 1, "expired": 2, "voided": 3}  # the order the answer lists grants in
NEVER = datetime.max.replace(tzinfo=UTC)  # sorts after every expiry and creation time


class CustomerKeyRefused(UserFacingError):
    outcome = "invalid"


@dataclass(frozen=True)
class GrantLine:
    """One grant as the answer shows it; `remaining` is None for a grant that is not effective yet, and for every
    grant of v3's credits ledger (which keeps no remaining amount per grant: nothing is made up). v3's entitlement
    value names each grant's balance but not its amount or dates (None)."""

    id: str
    name: str
    amount: float | None
    remaining: float | None
    effective_at: datetime | None
    expires_at: datetime | None
    recurring: bool
    priority: int | None
    state: GrantState
    created_at: datetime | None
    recurrence: str | None = None  # e.g. MONTH


@dataclass(frozen=True)
class DayUsage:
    day: date
    start: datetime
    credits: float  # the entitlement's own count of the day (what burns the balance)


@dataclass(frozen=True)
class Runway:
    """When the balance runs out at the recent pace: a range of days, not one falsely precise date."""

    earliest: date  # at the fast end of the 80% range
    likely: date | None  # at the expected pace (None: at that pace it lasts the horizon)
    latest: date | None  # at the slow end; None: at that pace it lasts the horizon (the reset, or a year)
    before_reset: bool  # the earliest day comes before the period resets
    grant_expiring_first: str | None = None  # a grant that expires with credits left before the balance runs out


@dataclass(frozen=True)
class CreditBalance:
    """What the question found. `status` "none": no customer or no entitlement (no figures); "not_metered": a boolean
    or static entitlement (no allowance to count down)."""

    tenant: str
    customer_key: str
    feature: str
    as_of: datetime
    status: Status
    entitlement_type: str | None = None
    balance: float | None = None
    usage: float | None = None
    overage: float | None = None
    total_available: float | None = None
    has_access: bool | None = None
    soft_limit: bool = False
    period: Window | None = None
    usage_interval: str | None = None
    grants: list[GrantLine] = field(default_factory=list)
    daily: list[DayUsage] = field(default_factory=list)
    lookback: Window | None = None
    meter_usage: float | None = None  # the tenant meter's usage over `lookback`; None when it could not be read
    outlook: RunwayFinding | None = None  # the runway as found: both paths, the horizon, a grant expiring unused
    # v3: "entitlement" (the entitlement value) or "ledger" (the prepaid credits ledger, one currency of it)
    source: Literal["entitlement", "ledger"] = "entitlement"
    currency: str | None = None
    settled: float | None = None  # the ledger's booked balance (`balance` is its `live` one)
    pending: float | None = None  # granted, not booked yet
    usage_since: datetime | None = None  # the ledger has no period: the usage since its active grants took effect
    pace: Literal["entitlement", "tenant"] = "entitlement"  # whose daily usage `daily` (and the runway) is
    reason: str | None = None  # status "none" on v3: why, in one sentence

    @property
    def runway(self) -> Runway | None:
        """None when the balance outlasts the horizon (the period's reset, or a year) even at the fast pace."""
        found = self.outlook
        if found is None or found.earliest is None:
            return None
        reset = self.period.end.astimezone(UTC).date() if self.period else None
        expiring = found.expiring
        return Runway(
            earliest=found.earliest,
            likely=found.likely,
            latest=found.latest,
            before_reset=reset is not None and found.earliest < reset,
            grant_expiring_first=expiring[0] if expiring and expiring[1] <= found.earliest else None,
        )

    @property
    def entitlement_lookback_usage(self) -> float:
        return sum(day.credits for day in self.daily)

    @property
    def disagrees(self) -> bool:
        """The tenant meter counted a different amount over the lookback than the entitlement did."""
        if self.meter_usage is None or not self.daily:
            return False
        ours, theirs = self.entitlement_lookback_usage, self.meter_usage
        return abs(ours - theirs) > max(DISAGREEMENT_MIN, DISAGREEMENT_SHARE * max(abs(ours), abs(theirs)))


def lookback_window(now: datetime, days: int) -> Window:
    """Whole UTC days up to now, `days` back (the forecast method's history)."""
    end = now.astimezone(UTC)
    return Window((end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0), end)


def checked_key(customer_key: Callable[[str], str | None], tenant: str) -> str:
    """The tenant's customer key (Settings.customer_key), or one sentence when its name cannot make one."""
    key = customer_key(tenant)
    if key is None:
        raise CustomerKeyRefused(
            "This tenant's name cannot be used to look up its credit allowance in OpenMeter (it contains "
            "characters such as / or %, or is . or ..); ask the operator to check OPENMETER_CUSTOMER_KEY."
        )
    return key


class Balances(Protocol):
    """What the balance and forecast questions ask of a credits source (v1's entitlements, v3's credits)."""

    async def balance(self, tenant: str, now: datetime) -> CreditBalance: ...

    def describe(self, found: CreditBalance) -> str: ...


class BalanceService:
    """Reads one tenant's allowance: the entitlements client for the numbers, the meter for the cross-check."""

    def __init__(
        self,
        entitlements: EntitlementsV2,
        openmeter: OpenMeter,
        meter: Callable[[], Awaitable[Meter]],  # the usage tools' cached meter definition (UsageService.meter)
        customer_key: Callable[[str], str | None],  # Settings.customer_key: None for a name that changes the path
        *,
        lookback_days: int = LOOKBACK_DAYS,
    ) -> None:
        self._entitlements = entitlements
        self._openmeter = openmeter
        self._meter = meter
        self._customer_key = customer_key
        self._lookback_days = lookback_days

    @property
    def feature(self) -> str:
        return self._entitlements.feature_key

    def describe(self, found: CreditBalance) -> str:
        return self._entitlements.describe(found.customer_key)

    def key_of(self, tenant: str) -> str:
        return checked_key(self._customer_key, tenant)

    async def balance(self, tenant: str, now: datetime) -> CreditBalance:
        key = self.key_of(tenant)
        base = CreditBalance(tenant=tenant, customer_key=key, feature=self.feature, as_of=now, status="none")
        entitlement = await self._entitlements.entitlement(key)
        if entitlement is None:
            return base
        if entitlement.type != "metered":
            return replace(base, status="not_metered", entitlement_type=entitlement.type)
        lookback = self._lookback(entitlement, now)
        value, grants, history, meter_usage = await together(
            lambda: self._entitlements.value(key, now),
            lambda: self._entitlements.grants(key),
            lambda: self._history(key, lookback),
            lambda: self._meter_usage(tenant, lookback),
        )
        if value is None:  # the customer went away between the two requests
            return base
        lines = grant_lines(grants, value, now)
        daily = [DayUsage(w.start.astimezone(UTC).date(), w.start, w.usage) for w in history]
        today = now.astimezone(UTC).date()
        outlook = runway(
            pots(lines),
            {day.day: day.credits for day in daily if day.day < today},
            now=now,
            reset=entitlement.current_period.end if entitlement.current_period else None,
        )
        return CreditBalance(
            tenant=tenant,
            customer_key=key,
            feature=self.feature,
            as_of=now,
            status="metered",
            entitlement_type=entitlement.type,
            balance=value.balance or 0.0,
            usage=value.usage or 0.0,
            overage=value.overage or 0.0,
            total_available=value.total_available,
            has_access=value.has_access,
            soft_limit=entitlement.is_soft_limit,
            period=entitlement.current_period,
            usage_interval=entitlement.usage_period.interval if entitlement.usage_period else None,
            grants=lines,
            daily=daily,
            lookback=lookback,
            meter_usage=meter_usage,
            outlook=outlook,
        )

    def _lookback(self, entitlement: Entitlement, now: datetime) -> Window:
        """Whole UTC days up to now, LOOKBACK_DAYS back, from the first midnight at or after the entitlement starts
        measuring usage: OpenMeter's history leaves out a day window that starts before measureUsageFrom, so a
        partial first day would be missing from the history but not from the meter."""
        days = lookback_window(now, self._lookback_days)
        start, end = days.start, days.end
        if entitlement.measure_usage_from is not None:
            measured = entitlement.measure_usage_from.astimezone(UTC)
            midnight = measured.replace(hour=0, minute=0, second=0, microsecond=0)
            start = max(start, midnight if midnight == measured else midnight + timedelta(days=1))
        return Window(min(start, end), end)

    async def _history(self, key: str, window: Window) -> list[HistoryWindow]:
        if window.end <= window.start:  # the entitlement starts measuring today: no complete day yet
            return []
        return await self._entitlements.daily_history(key, window)

    async def _meter_usage(self, tenant: str, window: Window) -> float | None:
        """The tenant meter's total over `window`, as the usage tools count it; None if it cannot be read (the
        cross-check is a courtesy: the balance stands without it)."""
        if window.end <= window.start:
            return 0.0
        try:
            meter = await self._meter()
            rows = await self._openmeter.query(meter, AggregateQuery(window=window, group_by=(), tenant=tenant))
        except UserFacingError:
            return None
        return math.fsum(row.value for row in rows)


def pots(lines: list[GrantLine]) -> list[Pot]:
    """The grants that can still be burnt (active with credits left, or starting later), for the runway."""
    return [
        Pot(
            name=line.name,
            left=(line.amount or 0.0) if line.remaining is None else line.remaining,
            order=(line.priority or 1, line.expires_at or NEVER, line.created_at or NEVER, line.id),
            starts=line.effective_at if line.state == "future" else None,
            expires=line.expires_at,
        )
        for line in lines
        if line.state == "future" or (line.state == "active" and (line.remaining or 0.0) > 0)
    ]


def grant_lines(grants: list[Grant], value: EntitlementValue, now: datetime) -> list[GrantLine]:
    """The grants in OpenMeter's burn-down order (priority, earliest expiry, creation, id): active ones first, then
    those still to come, then expired and voided ones."""

    def state(grant: Grant) -> GrantState:
        if grant.voided_at is not None and grant.voided_at <= now:
            return "voided"
        if grant.expires_at is not None and grant.expires_at <= now:
            return "expired"
        return "future" if grant.effective_at > now else "active"

    ordered = sorted(
        grants,
        key=lambda g: (STATE_RANK[state(g)], g.priority or 1, g.expires_at or NEVER, g.created_at, g.id),
    )
    lines = []
    for grant in ordered:
        current = state(grant)
        remaining: float | None
        if current == "active":
            remaining = value.grant_balances.get(grant.id, 0.0)
        else:
            remaining = None if current == "future" else 0.0
        lines.append(
            GrantLine(
                id=grant.id,
                name=grant.name or f"grant {grant.id[-6:]}",
                amount=grant.amount,
                remaining=remaining,
                effective_at=grant.effective_at,
                expires_at=grant.expires_at,
                recurring=grant.recurrence is not None,
                priority=grant.priority,
                state=current,
                created_at=grant.created_at,
                recurrence=grant.recurrence.interval if grant.recurrence else None,
            )
        )
    return lines
