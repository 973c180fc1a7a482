"""A customer's entitlement to the credits feature, read from OpenMeter's v2 customer-entitlement API.

`GET /api/v2/customers/{customerIdOrKey}/entitlements/{featureKey}` (the entitlement: type, usage period, current
period, last reset, soft limit), `.../value` (balance, usage, overage, hasAccess, grant balances), `.../grants`
(amount, priority, effective at, expires at, recurrence, voided) and `.../history?windowSize=DAY` (the usage the
entitlement itself counted, per day). Paths and fields follow `api/openapi.cloud.yaml` in openmeterio/openmeter and
its Go handlers (`openmeter/customer/httpdriver`, `openmeter/entitlement/driver/v2`); see the project's shared
`openmeter-v3.md`, section 8.

The customer is named by its exact key, never found through the customer list's `key`/`subject` search (a partial,
case-insensitive match that can find another tenant). The key is URL-path-escaped; keys that would change the path
are refused before they get here (`Settings.customer_key`). Every reply is checked against the documented shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from ai_credit_usage.openmeter.http import OpenMeterHttp
from ai_credit_usage.runtime.window import Window, format_utc

GRANTS_PAGE_SIZE = 100  # the server's default page size
MAX_GRANT_PAGES = 20  # 2,000 grants: far more than any allowance has; the rest would not be read
# A customer that does not exist (or whose entitlement does not), and a deleted customer (412), both mean: no allowance.
_ABSENT = frozenset({404, 412})
EntitlementType = Literal["metered", "static", "boolean"]


@dataclass(frozen=True)
class Recurrence:
    """A usage period or a grant's recurrence: `interval` (DAY, WEEK, MONTH, YEAR or an ISO duration) from `anchor`."""

    interval: str
    anchor: datetime
    interval_iso: str | None = None


@dataclass(frozen=True)
class Entitlement:
    id: str
    type: EntitlementType
    feature_key: str
    is_soft_limit: bool = False
    usage_period: Recurrence | None = None
    current_period: Window | None = None  # `to` is the exclusive reset instant
    last_reset: datetime | None = None
    measure_usage_from: datetime | None = None
    customer_key: str | None = None


@dataclass(frozen=True)
class EntitlementValue:
    """The value at one instant. `has_access` is absent (false) in OpenMeter's v2 JSON when there is no access."""

    has_access: bool
    balance: float | None = None
    usage: float | None = None
    overage: float | None = None
    total_available: float | None = None
    grant_balances: dict[str, float] = field(default_factory=dict)
    config: str | None = None


@dataclass(frozen=True)
class Grant:
    id: str
    amount: float
    effective_at: datetime
    created_at: datetime
    priority: int | None = None
    expires_at: datetime | None = None  # exclusive
    recurrence: Recurrence | None = None
    next_recurrence: datetime | None = None
    voided_at: datetime | None = None
    deleted_at: datetime | None = None
    name: str | None = None  # from the grant's metadata (`name`, else `description`); OpenMeter grants have no name


@dataclass(frozen=True)
class HistoryWindow:
    """One window of the entitlement's own usage history."""

    start: datetime
    end: datetime
    usage: float
    balance_at_start: float


class _Recurring(BaseModel):
    interval: str
    anchor: datetime
    intervalISO: str | None = None

    def out(self) -> Recurrence:
        return Recurrence(self.interval, self.anchor, self.intervalISO)


class _Entitlement(BaseModel):
    id: str
    type: EntitlementType
    featureKey: str
    isSoftLimit: bool = False
    usagePeriod: _Recurring | None = None
    currentUsagePeriod: dict[str, datetime] | None = None
    lastReset: datetime | None = None
    measureUsageFrom: datetime | None = None
    customerKey: str | None = None


class _Value(BaseModel):
    hasAccess: bool = False
    balance: float | None = None
    usage: float | None = None
    overage: float | None = None
    totalAvailableGrantAmount: float | None = None
    grantBalances: dict[str, float] | None = None
    config: str | None = None


class _Grant(BaseModel):
    id: str
    amount: float
    effectiveAt: datetime
    createdAt: datetime
    priority: int | None = None
    expiresAt: datetime | None = None
    recurrence: _Recurring | None = None
    nextRecurrence: datetime | None = None
    voidedAt: datetime | None = None
    deletedAt: datetime | None = None
    metadata: dict[str, str] | None = None


class _GrantPage(BaseModel):
    totalCount: int
    page: int
    pageSize: int
    items: list[_Grant]


class _Window(BaseModel):
    period: dict[str, datetime]
    usage: float
    balanceAtStart: float


class _History(BaseModel):
    windowedHistory: list[_Window]


class EntitlementsV2:
    """The customer-entitlement endpoints of one feature, over the shared `OpenMeterHttp` (which it does not own)."""

    def __init__(self, http: OpenMeterHttp, feature_key: str) -> None:
        self._http = http
        self.feature_key = feature_key

    def _path(self, customer_key: str, tail: str = "") -> tuple[str, str]:
        """The request path and its template (the span's name carries no customer key)."""
        base = f"/api/v2/customers/{quote(customer_key, safe='')}/entitlements/{self.feature_key}"
        return base + tail, f"/api/v2/customers/{{customerKey}}/entitlements/{self.feature_key}{tail}"

    async def _get(self, customer_key: str, tail: str, params: Any) -> Any:
        path, template = self._path(customer_key, tail)
        return await self._http.get_json(path, params, meter=None, template=template, absent=_ABSENT)

    async def entitlement(self, customer_key: str) -> Entitlement | None:
        """The customer's entitlement to the feature active now; None when the customer or the entitlement is not
        there (404) or the customer is deleted (412)."""
        body = await self._get(customer_key, "", {})
        if body is None:
            return None
        try:
            raw = _Entitlement.model_validate(body)
            period = None
            if raw.currentUsagePeriod is not None:
                period = Window(raw.currentUsagePeriod["from"], raw.currentUsagePeriod["to"])
        except (ValidationError, KeyError, ValueError) as exc:
            raise self._http.unreadable("entitlement", exc) from None
        return Entitlement(
            id=raw.id,
            type=raw.type,
            feature_key=raw.featureKey,
            is_soft_limit=raw.isSoftLimit,
            usage_period=raw.usagePeriod.out() if raw.usagePeriod else None,
            current_period=period,
            last_reset=raw.lastReset,
            measure_usage_from=raw.measureUsageFrom,
            customer_key=raw.customerKey,
        )

    async def value(self, customer_key: str, at: datetime) -> EntitlementValue | None:
        """The value at `at` (OpenMeter rounds it up to the next minute). An unknown feature answers 200 `{}`: no
        access and no figures. None when the customer is not there."""
        body = await self._get(customer_key, "/value", {"time": format_utc(at)})
        if body is None:
            return None
        try:
            raw = _Value.model_validate(body)
        except ValidationError as exc:
            raise self._http.unreadable("entitlement value", exc) from None
        return EntitlementValue(
            has_access=raw.hasAccess,
            balance=raw.balance,
            usage=raw.usage,
            overage=raw.overage,
            total_available=raw.totalAvailableGrantAmount,
            grant_balances=dict(raw.grantBalances or {}),
            config=raw.config,
        )

    async def grants(self, customer_key: str) -> list[Grant]:
        """Every grant of the entitlement that is not deleted (voided ones included, marked), oldest first."""
        grants: list[Grant] = []
        for page in range(1, MAX_GRANT_PAGES + 1):
            params = {"page": str(page), "pageSize": str(GRANTS_PAGE_SIZE), "orderBy": "createdAt", "order": "ASC"}
            body = await self._get(customer_key, "/grants", params)
            if body is None:
                return grants
            try:
                raw = _GrantPage.model_validate(body)
            except ValidationError as exc:
                raise self._http.unreadable("grants page", exc) from None
            grants += [_grant(item) for item in raw.items]
            if not raw.items or len(grants) >= raw.totalCount:
                break
        return grants

    async def daily_history(self, customer_key: str, window: Window, time_zone: str = "UTC") -> list[HistoryWindow]:
        """The entitlement's own usage per day of `window` (OpenMeter zero-fills every window)."""
        params = {
            "windowSize": "DAY",
            "from": format_utc(window.start),
            "to": format_utc(window.end),
            "windowTimeZone": time_zone,
        }
        body = await self._get(customer_key, "/history", params)
        if body is None:
            return []
        try:
            raw = _History.model_validate(body)
            return [
                HistoryWindow(w.period["from"], w.period["to"], w.usage, w.balanceAtStart) for w in raw.windowedHistory
            ]
        except (ValidationError, KeyError) as exc:
            raise self._http.unreadable("entitlement history", exc) from None

    def describe(self, customer_key: str) -> str:
        """The requests, in words, for the workbook's About sheet."""
        path, _ = self._path(customer_key)
        return f"GET {path} and its /value, /grants and /history?windowSize=DAY (OpenMeter v2 entitlements)"


def _grant(raw: _Grant) -> Grant:
    metadata = raw.metadata or {}
    return Grant(
        id=raw.id,
        amount=raw.amount,
        effective_at=raw.effectiveAt,
        created_at=raw.createdAt,
        priority=raw.priority,
        expires_at=raw.expiresAt,
        recurrence=raw.recurrence.out() if raw.recurrence else None,
        next_recurrence=raw.nextRecurrence,
        voided_at=raw.voidedAt,
        deleted_at=raw.deletedAt,
        name=metadata.get("name") or metadata.get("description"),
    )
