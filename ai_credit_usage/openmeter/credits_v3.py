"""A customer's credits on OpenMeter's v3 API (Kong Konnect Metering & Billing): the customer by its exact key, the
entitlement value where it is served, and the prepaid credits ledger.

- `GET /openmeter/customers?filter[key][eq]=<key>`: an exact, case-sensitive match (`customer/adapter/customer.go`);
  the key that comes back is checked again, so a server that matched loosely can never hand us another tenant.
- `GET /openmeter/customers/{customerId}/entitlement-access/features/{featureKey}?expand=value` (beta, upstream
  PR #5143; not in Konnect's published spec of 2026-07-01): `value{balance, usage, overage,
  total_available_grant_amount, grant_balances}` as decimal strings. A 404 (not served, or no such customer) and a
  200 without `value` (no metered entitlement: the handler answers `static`, `has_access: false`) both mean: read
  the ledger instead.
- `GET /openmeter/customers/{customerId}/credits/balance` (beta): `balances[{currency, live, settled, pending}]`;
  501 with an empty body when credits are not enabled (`api/v3/server/routes.go`).
- `GET /openmeter/customers/{customerId}/credits/grants` (beta, page paging): amount, currency, status, priority,
  effective and expiry times. The ledger keeps no remaining amount per grant.

Paths, parameters and fields follow both specs (tests check every request against them); see the project's shared
`openmeter-v3.md`, sections 7, 9 and 11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, ValidationError

from ai_credit_usage.openmeter.entitlements import EntitlementValue
from ai_credit_usage.openmeter.http import OpenMeterError, OpenMeterHttp

CUSTOMERS_PAGE_SIZE = 10  # an exact key matches at most one live customer; a few spare for deleted look-alikes
GRANTS_PAGE_SIZE = 100
MAX_GRANT_PAGES = 20  # 2,000 grants: far more than a ledger has; the rest would not be read
_NUMERIC = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_ABSENT = frozenset({404, 412})  # no such customer (or route), a deleted customer
_M = TypeVar("_M", bound=BaseModel)
GrantStatus = Literal["pending", "active", "expired", "voided"]
CREDITS_NOT_ENABLED = (
    "Prepaid credits are not enabled for this OpenMeter organization (it answered 501 Not Implemented), so there is "
    "no balance to read; ask the operator to enable credits in Konnect Metering & Billing or to unset "
    "OPENMETER_CREDITS_FEATURE."
)


def _numeric(value: object) -> float:
    """v3's `Numeric`: a decimal string, read to the nearest float."""
    if not isinstance(value, str) or not _NUMERIC.match(value):
        raise ValueError("not a decimal string")
    return float(value)


Numeric = Annotated[float, BeforeValidator(_numeric)]


@dataclass(frozen=True)
class Customer:
    id: str
    key: str


# The two below are read straight from the wire (pydantic validates them as it validates a model; fields the server
# adds are ignored): their names are the API's own.


@dataclass(frozen=True)
class CurrencyBalance:
    """One currency of the ledger: `live` is what is available now (it may be negative), `settled` what is booked,
    `pending` what is granted but not booked yet."""

    currency: str
    live: Numeric
    settled: Numeric
    pending: Numeric


@dataclass(frozen=True)
class CreditGrant:
    id: str
    name: str
    currency: str
    amount: Numeric
    status: GrantStatus
    created_at: datetime
    priority: int | None = None  # lower burns first; the server's default is 10
    effective_at: datetime | None = None
    expires_at: datetime | None = None  # exclusive
    voided_at: datetime | None = None


class _Customer(BaseModel):
    id: str
    key: str
    deleted_at: datetime | None = None


class _CustomerPage(BaseModel):
    data: list[_Customer]


class _Value(BaseModel):
    balance: Numeric
    usage: Numeric
    overage: Numeric
    total_available_grant_amount: Numeric
    grant_balances: dict[str, Numeric] = {}


class _Access(BaseModel):
    type: str
    feature_key: str
    has_access: bool
    value: _Value | None = None


class _Balances(BaseModel):
    balances: list[CurrencyBalance]


class _PageMeta(BaseModel):
    total: int | None = None


class _Meta(BaseModel):
    page: _PageMeta


class _GrantPage(BaseModel):
    data: list[CreditGrant]
    meta: _Meta


class CreditsV3:
    """The customer, entitlement-value and credits-ledger reads of one feature, over the shared `OpenMeterHttp`
    (which it does not own)."""

    def __init__(self, http: OpenMeterHttp, feature_key: str) -> None:
        self._http = http
        self.feature_key = feature_key

    async def customer(self, key: str) -> Customer | None:
        """The live customer whose key is exactly `key`; None when there is none."""
        params = {"filter[key][eq]": key, "page[size]": str(CUSTOMERS_PAGE_SIZE)}
        body = await self._http.get_json("/openmeter/customers", params, meter=None)
        page = _read(self._http, _CustomerPage, body, "customer list")
        found = [c for c in page.data if c.key == key and c.deleted_at is None]  # exact, whatever the server did
        if not found:
            return None
        if not _ULID.match(found[0].id):
            raise self._http.unreadable("customer list", "its customer id is not a ULID")  # not quoted: upstream text
        return Customer(found[0].id, found[0].key)

    async def entitlement_value(self, customer: Customer) -> EntitlementValue | None:
        """The metered entitlement's value now; None when the endpoint is not served, or the customer has no metered
        entitlement to the feature (then the ledger is the source)."""
        path = f"/openmeter/customers/{customer.id}/entitlement-access/features/{quote(self.feature_key, safe='')}"
        template = f"/openmeter/customers/{{customerId}}/entitlement-access/features/{self.feature_key}"
        body = await self._http.get_json(path, {"expand": "value"}, meter=None, template=template, absent=_ABSENT)
        if body is None:
            return None
        access = _read(self._http, _Access, body, "entitlement access")
        if access.type != "metered" or access.value is None:
            return None
        value = access.value
        return EntitlementValue(  # v2's value, in v3's words (`BillingEntitlementAccessValue`)
            has_access=access.has_access,
            balance=value.balance,
            usage=value.usage,
            overage=value.overage,
            total_available=value.total_available_grant_amount,
            grant_balances=dict(value.grant_balances),
        )

    async def balances(self, customer: Customer) -> list[CurrencyBalance] | None:
        """The ledger's balance per currency now; None when the customer is not there."""
        body = await self._ledger(customer, "balance", None)
        if body is None:
            return None
        found = _read(self._http, _Balances, body, "credit balance")
        return found.balances

    async def grants(self, customer: Customer) -> list[CreditGrant]:
        """Every credit grant of the customer, in all currencies and states (the currency is picked by the caller:
        Konnect's grant filter takes only three-letter codes)."""
        grants: list[CreditGrant] = []
        for number in range(1, MAX_GRANT_PAGES + 1):
            params = {"page[size]": str(GRANTS_PAGE_SIZE), "page[number]": str(number)}
            body = await self._ledger(customer, "grants", params)
            if body is None:
                return grants
            page = _read(self._http, _GrantPage, body, "credit grants page")
            grants += page.data
            total = page.meta.page.total
            if len(page.data) < GRANTS_PAGE_SIZE or (total is not None and len(grants) >= total):
                break
        return grants

    async def _ledger(self, customer: Customer, what: str, params: Any) -> Any:
        """GET the customer's `credits/<what>`; None when the customer is not there. Credits not enabled (501) is
        the same sentence from either endpoint: they are asked together, and whichever fails first is the answer."""
        try:
            return await self._http.get_json(
                f"/openmeter/customers/{customer.id}/credits/{what}",
                params,
                meter=None,
                template=f"/openmeter/customers/{{customerId}}/credits/{what}",
                absent=_ABSENT,
            )
        except OpenMeterError as exc:
            if exc.status == 501:
                error = OpenMeterError(CREDITS_NOT_ENABLED)
                error.status = 501
                raise error from None
            raise

    def describe(self, customer_key: str, source: str) -> str:
        """The requests, in words, for the workbook's About sheet."""
        found = f"GET /openmeter/customers?filter[key][eq]={customer_key}"
        if source == "entitlement":
            return (
                f"{found}, then GET /openmeter/customers/{{id}}/entitlement-access/features/{self.feature_key}"
                "?expand=value (OpenMeter v3, beta)"
            )
        return f"{found}, then GET /openmeter/customers/{{id}}/credits/balance and /credits/grants (v3 ledger, beta)"


def _read(http: OpenMeterHttp, model: type[_M], body: Any, what: str) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise http.unreadable(what, exc) from None
