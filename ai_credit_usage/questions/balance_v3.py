"""The credits-left question on OpenMeter's v3 API (Kong Konnect): the same answer as on v1, as far as v3 has it.

The customer by its exact key; then the entitlement value where the server has it (balance, this period's usage,
overage, each grant's balance), and otherwise the prepaid credits ledger: the balance (`live`: what is available
now, possibly negative) of one currency, never several added together, and the grants (amount, status, priority,
effective and expiry times; the ledger keeps no remaining amount per grant, so none is shown). Neither has a daily
history of its own, so the runway's pace is the tenant's own daily usage on the meter, the forecast's history.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from ai_credit_usage.openmeter.credits_v3 import CreditGrant, CreditsV3, CurrencyBalance, Customer
from ai_credit_usage.openmeter.entitlements import EntitlementValue
from ai_credit_usage.openmeter.interface import AggregateQuery, OpenMeter
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.questions.balance import (
    LOOKBACK_DAYS,
    NEVER,
    STATE_RANK,
    CreditBalance,
    DayUsage,
    GrantLine,
    GrantState,
    checked_key,
    lookback_window,
)
from ai_credit_usage.questions.runway import Pot, runway
from ai_credit_usage.questions.together import together
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.window import Window

_STATE: dict[str, GrantState] = {
    "active": "active",
    "pending": "future",
    "expired": "expired",
    "voided": "voided",
}
DEFAULT_PRIORITY = 10  # the ledger's default (spec: BillingCreditGrant.priority)


class SeveralCurrencies(UserFacingError):
    """The ledger holds credits in more than one currency and no setting names the one to read."""


class BalanceServiceV3:
    """Reads one tenant's credits on v3: `CreditsV3` for the customer, the value and the ledger; the meter for the
    tenant's daily usage (the runway's pace) and the usage since the ledger's grants took effect."""

    def __init__(
        self,
        credits: CreditsV3,
        openmeter: OpenMeter,
        meter: Callable[[], Awaitable[Meter]],  # the usage tools' cached meter definition
        customer_key: Callable[[str], str | None],  # Settings.customer_key
        *,
        currency: str | None = None,  # OPENMETER_CREDITS_CURRENCY
        lookback_days: int = LOOKBACK_DAYS,
    ) -> None:
        self._credits = credits
        self._openmeter = openmeter
        self._meter = meter
        self._customer_key = customer_key
        self._currency = currency
        self._lookback_days = lookback_days

    def describe(self, found: CreditBalance) -> str:
        return self._credits.describe(found.customer_key, found.source)

    async def balance(self, tenant: str, now: datetime) -> CreditBalance:
        key = checked_key(self._customer_key, tenant)
        base = CreditBalance(
            tenant=tenant, customer_key=key, feature=self._credits.feature_key, as_of=now, status="none", pace="tenant"
        )
        customer = await self._credits.customer(key)
        if customer is None:
            return _none(
                base, f"Tenant {tenant} has no customer in OpenMeter (customer key {key}), so it has no credits."
            )
        lookback = lookback_window(now, self._lookback_days)
        value, daily = await together(
            lambda: self._credits.entitlement_value(customer), lambda: self._daily(tenant, lookback)
        )
        history = {day.day: day.credits for day in daily if day.day < now.astimezone(UTC).date()}
        if value is not None:
            return self._from_value(base, value, daily, history, lookback)
        return await self._from_ledger(base, customer, daily, history, lookback)

    def _from_value(
        self,
        base: CreditBalance,
        value: EntitlementValue,
        daily: list[DayUsage],
        history: dict[date, float],
        lookback: Window,
    ) -> CreditBalance:
        """The entitlement value: the same figures as v1's, without the period's bounds or the grants' amounts."""
        lines = [
            GrantLine(
                id=grant_id,
                name=f"grant {grant_id[-6:]}",
                amount=None,
                remaining=left,
                effective_at=None,
                expires_at=None,
                recurring=False,
                priority=None,
                state="active",
                created_at=None,
            )
            for grant_id, left in sorted(value.grant_balances.items(), key=lambda item: (-item[1], item[0]))
        ]
        balance = value.balance or 0.0  # always there on v3 (v2's value leaves it out for no access)
        pots = [Pot("the balance", balance, (0, NEVER, NEVER, ""))] if balance > 0 else []
        return replace(
            base,
            status="metered",
            entitlement_type="metered",
            balance=balance,
            usage=value.usage,
            overage=value.overage,
            total_available=value.total_available,
            has_access=value.has_access,
            grants=lines,
            daily=daily,
            lookback=lookback,
            outlook=runway(pots, history, now=base.as_of, reset=None),
            source="entitlement",
        )

    async def _from_ledger(
        self,
        base: CreditBalance,
        customer: Customer,
        daily: list[DayUsage],
        history: dict[date, float],
        lookback: Window,
    ) -> CreditBalance:
        balances, grants = await together(
            lambda: self._credits.balances(customer), lambda: self._credits.grants(customer)
        )
        ledger = replace(base, source="ledger")
        if balances is None:  # the customer went away between the two requests
            return _none(
                ledger, f"Tenant {base.tenant} has no customer in OpenMeter (customer key {base.customer_key})."
            )
        currency = self._pick(base.tenant, balances, grants)
        if currency is None:
            return _none(ledger, f"Tenant {base.tenant} has no prepaid credits in OpenMeter: no balance and no grants.")
        entry = next((b for b in balances if b.currency == currency), None)
        mine = [g for g in grants if g.currency == currency]
        if entry is None and not mine:
            held = ", ".join(sorted({b.currency for b in balances} | {g.currency for g in grants}))
            return _none(
                ledger,
                f"Tenant {base.tenant} holds no credits in {currency} (OPENMETER_CREDITS_CURRENCY); it holds {held}.",
            )
        entry = entry or CurrencyBalance(currency, 0.0, 0.0, 0.0)
        lines = ledger_lines(mine)
        active = [g for g in mine if g.status == "active"]
        since = min((g.effective_at or g.created_at for g in active), default=None)
        now = base.as_of
        used = await self._usage(base.tenant, Window(since, now)) if since is not None and since < now else 0.0
        return replace(
            ledger,
            status="metered",
            balance=entry.live,
            usage=used if since is not None else None,
            overage=max(0.0, -entry.live),  # usage no grant covers (credit_only settlement)
            has_access=entry.live > 0,
            grants=lines,
            daily=daily,
            lookback=lookback,
            outlook=runway(ledger_pots(entry, mine), history, now=now, reset=None),
            currency=currency,
            settled=entry.settled,
            pending=entry.pending,
            usage_since=since,
        )

    def _pick(self, tenant: str, balances: list[CurrencyBalance], grants: list[CreditGrant]) -> str | None:
        """The one currency to read: the setting's, else the only one the customer holds; never a sum of several."""
        if self._currency is not None:
            return self._currency
        held = sorted(
            {b.currency for b in balances} | {g.currency for g in grants if g.status in ("active", "pending")}
        )
        if len(held) > 1:
            raise SeveralCurrencies(
                f"Tenant {tenant} holds credits in several currencies ({', '.join(held)}), which cannot be added up; "
                "ask the operator to set OPENMETER_CREDITS_CURRENCY to the one that holds the AI credits."
            )
        return held[0] if held else None

    async def _daily(self, tenant: str, window: Window) -> list[DayUsage]:
        """The tenant's credits per UTC day of `window` on the meter, zero-filled (what the forecast learns from)."""
        meter = await self._meter()
        rows = await self._openmeter.query(meter, AggregateQuery(window, (), tenant, "day", "UTC"))
        per_day: dict[date, float] = {}
        for row in rows:
            if row.window_start is not None:
                day = row.window_start.astimezone(UTC).date()
                per_day[day] = per_day.get(day, 0.0) + row.value
        days = []
        day = window.start.date()
        while day <= window.end.date() and datetime(day.year, day.month, day.day, tzinfo=UTC) < window.end:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            days.append(DayUsage(day, start, per_day.get(day, 0.0)))
            day += timedelta(days=1)
        return days

    async def _usage(self, tenant: str, window: Window) -> float:
        meter = await self._meter()
        rows = await self._openmeter.query(meter, AggregateQuery(window, (), tenant))
        return math.fsum(row.value for row in rows)


def _none(base: CreditBalance, reason: str) -> CreditBalance:
    return replace(base, status="none", reason=reason)


def ledger_lines(grants: list[CreditGrant]) -> list[GrantLine]:
    """The grants as the ledger burns them (lower priority first, then the earliest expiry, then creation): active
    ones, then pending ones, then expired and voided ones. No remaining amount: the ledger keeps none per grant."""

    def order(grant: CreditGrant) -> tuple[int, int, datetime, datetime, str]:
        priority = DEFAULT_PRIORITY if grant.priority is None else grant.priority
        return (STATE_RANK[_STATE[grant.status]], priority, grant.expires_at or NEVER, grant.created_at, grant.id)

    return [
        GrantLine(
            id=grant.id,
            name=grant.name,
            amount=grant.amount,
            remaining=None,
            effective_at=grant.effective_at,
            expires_at=grant.expires_at,
            recurring=False,
            priority=grant.priority,
            state=_STATE[grant.status],
            created_at=grant.created_at,
        )
        for grant in sorted(grants, key=order)
    ]


def ledger_pots(entry: CurrencyBalance, grants: list[CreditGrant]) -> list[Pot]:
    """What the runway burns: the live balance as one pot (the ledger does not split it by grant), gone at the last
    expiry when every active grant expires; and each pending grant from the day it takes effect."""
    active = [g for g in grants if g.status == "active"]
    expiries = [g.expires_at for g in active]
    gone = max(e for e in expiries if e is not None) if active and all(expiries) else None
    pots = []
    if entry.live > 0:
        pots.append(Pot(f"the {entry.currency} balance", entry.live, (0, gone or NEVER, NEVER, ""), expires=gone))
    for grant in grants:
        if grant.status == "pending":
            priority = DEFAULT_PRIORITY if grant.priority is None else grant.priority
            pots.append(
                Pot(
                    grant.name,
                    grant.amount,
                    (priority, grant.expires_at or NEVER, grant.created_at, grant.id),
                    starts=grant.effective_at or grant.created_at,
                    expires=grant.expires_at,
                )
            )
    return pots
