"""OpenMeter's v3 customers and credits in the stand-in (Kong Konnect Metering & Billing), beside its v3 meters and
events, over the same customers as the v2 entitlements (`EntitlementsStandIn`) and the same events.

- `GET /openmeter/customers` (`list-customers`): `filter[key|name|…]` as StringFieldFilter (`eq` exact and
  case-sensitive, `contains` partial and case-insensitive), page paging; deleted customers are left out.
- `GET /openmeter/customers/{customerId}/credits/balance` (`get-customer-credit-balance`, beta):
  `{retrieved_at, balances:[{currency, live, settled, pending}]}` in decimal strings; `filter[currency][eq|oeq]`
  (`neq` is a 400), `timestamp` for a past value (then `live` is 0). An unknown customer is a 404.
- `GET /openmeter/customers/{customerId}/credits/grants` (`list-credit-grants`, beta): page paging (default 20),
  `filter[status|currency|key]`; an unknown customer lists nothing (the handler does not look it up).
- Credits not enabled (`credits_enabled = False`): both answer 501 with an empty body.
- `GET /openmeter/customers/{customerId}/entitlement-access/features/{featureKey}?expand=value` (upstream after
  PR #5143, not in Konnect's published spec): served only with `serves_entitlement_value = True` (else the route is
  unknown: 404); the v2 value's figures as decimal strings; no entitlement answers `static`, `has_access: false`.

The ledger: grants of a customer per currency; the usage of the customer's subjects on `meter_slug` burns the
grants of its charge currency one credit per unit, from the first grant on, lowest `priority` first, then the
earliest expiry, then creation. Usage no grant covers makes `live` negative (`credit_only` settlement) and is paid
first by the next grant. An expired or voided grant drops what is left of it. `settled` equals `live` (the stand-in
has no open charges); `pending` is what grants not yet effective hold. Paths follow Konnect's published spec and
upstream's `api/v3/openapi.yaml`; see the project's shared `openmeter-v3.md`, sections 7, 9 and 11.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams

from ai_credit_usage.openmeter.numbers import to_float64_or_null
from ai_credit_usage.openmeter.standin.entitlements import Customer, EntitlementsStandIn
from ai_credit_usage.openmeter.standin.problems import ApiError, InvalidParameter, Problem, Unimplemented
from ai_credit_usage.openmeter.standin.store import compile_json_path, format_time, json_value, parse_rfc3339, unix
from ai_credit_usage.openmeter.standin.v3 import (
    STRING_FIELD_OPS,
    ULID,
    deep_params,
    int_param,
    numeric,
    string_matches,
    under_base,
)
from ai_credit_usage.openmeter.standin.wire import EventStore, Handler, StandInRequest

CUSTOMER_FILTERS = {
    name: STRING_FIELD_OPS for name in ("key", "name", "primary_email", "usage_attribution_subject_key", "plan_key")
}
BALANCE_FILTERS = {"currency": frozenset({"eq", "oeq", "neq"}), "feature_key": STRING_FIELD_OPS}
GRANT_FILTERS = {"status": frozenset({"eq"}), "currency": frozenset({"eq"}), "key": STRING_FIELD_OPS}
_FEATURE_KEY = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_NEVER = 2**62
CREATED = "2025-01-01T00:00:00Z"  # the stand-in's customers carry no creation time of their own


@dataclass
class LedgerGrant:
    id: str
    customer: Customer
    name: str
    currency: str
    amount: float
    priority: int
    effective: int
    created: int
    expires: int | None = None
    voided: int | None = None
    key: str | None = None

    def status(self, at: int) -> str:
        """As `toAPIBillingCreditGrantStatus` words it: voided, expired (expiry at or before now), else active, or
        pending while it is not effective yet."""
        if self.voided is not None and self.voided <= at:
            return "voided"
        if self.expires is not None and self.expires <= at:
            return "expired"
        return "pending" if self.effective > at else "active"

    def burn_order(self) -> tuple[int, int, int, str]:
        return (self.priority, self.expires or _NEVER, self.created, self.id)


class CreditsV3StandIn:
    """The v3 customers, credits ledger and entitlement value of the stand-in, and the router that serves them."""

    def __init__(self, lock: threading.Lock, entitlements: EntitlementsStandIn) -> None:
        self._lock = lock
        self.entitlements = entitlements  # the customers, the clock and the entitlement engine are shared
        self.grants: list[LedgerGrant] = []
        self.credits_enabled = True
        self.serves_entitlement_value = False  # as Konnect's published spec of 2026-07-01
        self.meter_slug = "ai_credits"
        # customer key -> the currency its usage burns (default: its first grant's)
        self.charge_currency: dict[str, str] = {}
        self._seq = 0

    # ---- test-side API -------------------------------------------------------------------------------------------

    def add_credit_grant(
        self,
        customer_key: str,
        *,
        amount: float,
        effective_at: datetime,
        currency: str = "USD",
        expires_at: datetime | None = None,
        priority: int = 10,
        name: str = "Credits",
        created_at: datetime | None = None,
        voided_at: datetime | None = None,
        key: str | None = None,
    ) -> str:
        with self._lock:
            customer = next(c for c in self.entitlements.customers if c.key == customer_key and c.deleted_at is None)
            self._seq += 1
            grant = LedgerGrant(
                id=f"01M{self._seq:023d}",
                customer=customer,
                name=name,
                currency=currency,
                amount=amount,
                priority=priority,
                effective=unix(effective_at),
                created=unix(created_at or effective_at),
                expires=unix(expires_at) if expires_at else None,
                voided=unix(voided_at) if voided_at else None,
                key=key,
            )
            self.grants.append(grant)
            return grant.id

    def reset(self) -> None:
        with self._lock:
            self.grants.clear()
            self.charge_currency.clear()

    # ---- routing -------------------------------------------------------------------------------------------------

    def __call__(self, standin: EventStore, request: StandInRequest) -> Handler | None:
        rest = under_base(request.parts)
        if rest is None or not rest or rest[0] != "customers":
            return None
        if rest == ["customers"]:
            handler: Handler = lambda: self._list_customers(request)  # noqa: E731
        elif len(rest) == 4 and rest[2] == "credits" and rest[3] in ("balance", "grants"):
            customer_id, what = rest[1], rest[3]
            if what == "balance":
                handler = lambda: self._balance(standin, request, customer_id)  # noqa: E731
            else:
                handler = lambda: self._grants(request, customer_id)  # noqa: E731
        elif len(rest) == 5 and rest[2:4] == ["entitlement-access", "features"]:
            if not self.serves_entitlement_value:
                raise ApiError(404, "The requested route was not found")
            customer_id, feature = rest[1], rest[4]
            handler = lambda: self._access(standin, request.query, customer_id, feature)  # noqa: E731
        else:
            return None  # the v3 router answers every other path (and 404s what it does not know)
        if request.method != "GET":
            raise ApiError(405, "The requested method is not allowed")
        return handler

    # ---- customers ----------------------------------------------------------------------------------------------

    def _list_customers(self, request: StandInRequest) -> dict[str, Any]:
        filters, page = deep_params(request, CUSTOMER_FILTERS, {"size", "number"}, depth=2)
        size = int_param(page, "size", 20, minimum=0)
        number = int_param(page, "number", 1, minimum=1)
        found = [c for c in self.entitlements.customers if c.deleted_at is None]
        for field, ops in filters.items():
            found = [
                c
                for c in found
                if all(any(string_matches(op, value, v) for v in _field(c, field)) for op, value in ops)
            ]
        found.sort(key=lambda c: (c.key, c.id))  # the default sort is `name`; a stand-in customer's name is its key
        chosen = found[(number - 1) * size : number * size]
        return {
            "data": [_customer(c) for c in chosen],
            "meta": {"page": {"size": size, "number": number, "total": len(found)}},
        }

    def _customer(self, customer_id: str) -> Customer | None:
        if not ULID.match(customer_id):  # path validation: 404 in BaseAPIError's words
            raise ApiError(404, "The requested entity was not found")
        return next((c for c in self.entitlements.customers if c.id == customer_id), None)

    # ---- the ledger --------------------------------------------------------------------------------------------

    def _balance(self, standin: EventStore, request: StandInRequest, customer_id: str) -> dict[str, Any]:
        customer = self._customer(customer_id)
        filters, _ = deep_params(request, BALANCE_FILTERS, set(), depth=2)
        if not self.credits_enabled:
            raise Unimplemented()
        if customer is None or customer.deleted_at is not None:
            raise Problem(404, f"customer not found: {customer_id}")
        currencies: set[str] | None = None
        for op, value in filters.get("currency", []):
            if op == "neq":
                raise ApiError.bad_request(
                    InvalidParameter("filter[currency]", "neq operator is not supported", "query")
                )
            named = {value} if op == "eq" else {part.strip() for part in value.split(",") if part.strip()}
            currencies = named if currencies is None else currencies | named
        raw = request.query.get("timestamp")
        at = self._now()
        if raw is not None:
            try:
                at = unix(parse_rfc3339(raw))
            except ValueError:
                raise ApiError.bad_request(
                    InvalidParameter("timestamp", "must be an RFC 3339 date-time", "query")
                ) from None
        ledger = self._ledger(standin, customer, at)
        balances = []
        for currency in sorted(ledger):
            if currencies is not None and currency not in currencies:
                continue
            live, pending = ledger[currency]
            balances.append(
                {
                    "currency": currency,
                    "live": numeric(0.0 if raw is not None else live),  # historical balances have no live part
                    "settled": numeric(live),
                    "pending": numeric(pending),
                }
            )
        return {"retrieved_at": format_time(at), "balances": balances}

    def _grants(self, request: StandInRequest, customer_id: str) -> dict[str, Any]:
        self._customer(customer_id)
        filters, page = deep_params(request, GRANT_FILTERS, {"size", "number"}, depth=2)
        if not self.credits_enabled:
            raise Unimplemented()
        size = int_param(page, "size", 20, minimum=1)
        number = int_param(page, "number", 1, minimum=1)
        now = self._now()
        found = [g for g in self.grants if g.customer.id == customer_id]
        for field, ops in filters.items():
            for op, value in ops:
                if field == "status":
                    found = [g for g in found if g.status(now) == value]
                elif field == "currency":
                    found = [g for g in found if g.currency == value]
                else:
                    found = [g for g in found if string_matches(op, value, g.key or "")]
        chosen = found[(number - 1) * size : number * size]
        return {
            "data": [_grant(g, now) for g in chosen],
            "meta": {"page": {"size": size, "number": number, "total": len(found)}},
        }

    def _ledger(self, standin: EventStore, customer: Customer, at: int) -> dict[str, tuple[float, float]]:
        """(live, pending) per currency of the customer's grants at `at`."""
        grants = [g for g in self.grants if g.customer is customer]
        if not grants:
            return {}
        charged = self.charge_currency.get(customer.key, grants[0].currency)
        start = min(g.effective for g in grants)
        steps: list[tuple[int, int, str, float]] = []  # (time, kind, grant id, value): ends, starts, usage
        for grant in grants:
            ends = min(grant.expires or _NEVER, grant.voided or _NEVER)
            if grant.effective < ends:
                steps.append((grant.effective, 1, grant.id, 0.0))
                if ends <= at:
                    steps.append((ends, 0, grant.id, 0.0))
        steps += [(t, 2, "", v) for t, v in self._usage(standin, customer, start, at)]
        steps = [step for step in steps if step[0] <= at]
        steps.sort(key=lambda step: step[:2])
        by_id = {g.id: g for g in grants}
        left: dict[str, float] = {}
        debt = 0.0

        def burn(amount: float) -> float:
            for grant_id in sorted(left, key=lambda gid: by_id[gid].burn_order()):
                if by_id[grant_id].currency != charged:
                    continue
                taken = min(left[grant_id], amount)
                left[grant_id] -= taken
                amount -= taken
                if amount <= 0:
                    return 0.0
            return amount

        for _, kind, grant_id, value in steps:
            if kind == 0:
                left.pop(grant_id, None)
            elif kind == 1:
                left[grant_id] = by_id[grant_id].amount
                if debt > 0 and by_id[grant_id].currency == charged:
                    debt = burn(debt)
            else:
                debt += burn(value)
        out: dict[str, tuple[float, float]] = {}
        for grant in grants:
            live, pending = out.get(grant.currency, (0.0, 0.0))
            live += left.get(grant.id, 0.0)
            if grant.status(at) == "pending":
                pending += grant.amount
            out[grant.currency] = (live, pending)
        if charged in out:
            live, pending = out[charged]
            out[charged] = (live - debt, pending)
        return out

    def _usage(self, standin: EventStore, customer: Customer, start: int, until: int) -> list[tuple[int, float]]:
        """(time, credits) of the meter's events of the customer's subjects in [start, until]."""
        meter = standin.meter(self.meter_slug)
        path = compile_json_path(meter.get("valueProperty") or "$")
        by_subject = standin.rows_by_subject()
        found = []
        for subject in customer.subjects:
            for row in by_subject.get(subject, []):
                if row.event["type"] == meter["eventType"] and start <= row.time <= until:
                    value = to_float64_or_null(json_value(row.event.get("data"), path))
                    if value is not None:
                        found.append((row.time, value))
        return sorted(found)

    # ---- the entitlement value (upstream after PR #5143) --------------------------------------------------------

    def _access(self, standin: EventStore, q: QueryParams, customer_id: str, feature: str) -> dict[str, Any]:
        customer = self._customer(customer_id)
        if not _FEATURE_KEY.match(feature) or len(feature) > 64:
            raise ApiError(404, "The requested entity was not found")
        expands = q.getlist("expand")
        if any(value != "value" for value in expands):
            raise ApiError.bad_request(
                InvalidParameter("expand", "value is not one of the allowed values [value]", "query")
            )
        if customer is None:
            raise Problem(404, f"customer not found: {customer_id}")
        body = self.entitlements.value(standin, QueryParams(""), customer.id, feature)  # 412 when deleted
        if "balance" in body:  # metered
            out: dict[str, Any] = {"type": "metered", "feature_key": feature, "has_access": bool(body.get("hasAccess"))}
            if "value" in expands:
                out["value"] = {
                    "balance": numeric(body["balance"]),
                    "usage": numeric(body["usage"]),
                    "overage": numeric(body["overage"]),
                    "total_available_grant_amount": numeric(body["totalAvailableGrantAmount"]),
                    "grant_balances": {gid: numeric(v) for gid, v in body["grantBalances"].items()},
                }
            return out
        if "config" in body:
            return {"type": "static", "feature_key": feature, "has_access": True, "config": body["config"]}
        if body.get("hasAccess"):
            return {"type": "boolean", "feature_key": feature, "has_access": True}
        return {"type": "static", "feature_key": feature, "has_access": False}  # NoAccessValue: a constant type

    def _now(self) -> int:
        return unix(self.entitlements.clock())


def _field(customer: Customer, field: str) -> list[str]:
    """The values a customer filter field is matched against (a customer has several subject keys)."""
    if field in ("key", "name"):
        return [customer.key]
    if field == "usage_attribution_subject_key":
        return list(customer.subject_keys)
    return [""]


def _customer(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.key,
        "key": customer.key,
        "usage_attribution": {"subject_keys": list(customer.subject_keys)},
        "labels": {},
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def _grant(grant: LedgerGrant, now: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": grant.id,
        "name": grant.name,
        "labels": {},
        "created_at": format_time(grant.created),
        "updated_at": format_time(grant.created),
        "funding_method": "none",
        "currency": grant.currency,
        "amount": numeric(grant.amount),
        "priority": grant.priority,
        "effective_at": format_time(grant.effective),
        "status": grant.status(now),
    }
    if grant.key is not None:
        out["key"] = grant.key
    if grant.expires is not None:
        out["expires_at"] = format_time(grant.expires)
    if grant.voided is not None:
        out["voided_at"] = format_time(grant.voided)
    return out
