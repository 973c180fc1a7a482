"""OpenMeter's v2 customer entitlements in the stand-in: customers, features, entitlements and grants, and the
value, grants, history and list endpoints computed from the same events the meters see.

`GET /api/v2/customers/{customerIdOrKey}/entitlements[/{entitlementIdOrFeatureKey}[/value|/grants|/history]]`,
following `api/openapi.cloud.yaml` and the Go server (the project's shared `openmeter-v3.md`, section 8):

- the customer is its id, or the exact key of a customer that is not deleted: unknown gives 404, deleted 412;
- usage is attributed by event **subject**: the customer's key and its `usageAttribution.subjectKeys`, not by any
  field of the event data (a `tenant` dimension plays no part);
- the value of an unknown feature, or of an entitlement not active at `time`, is `200 {}` (no access; `hasAccess`
  is omitted when false); `time` is rounded up to the next minute; the usage is the current usage period's;
- grants burn lowest `priority` first, then the earliest expiry (none last), then the earliest creation, then id;
  a recurring grant refills to its amount at each recurrence; at a usage-period reset each grant keeps
  min(maxRollover, max(minRollover, balance)) (maxRollover defaults to the amount, as the v2 API sets it) and the
  overage starts again at 0; overage is burnt by a grant that becomes active later in the same period; expired
  and voided grants drop to 0;
- history zero-fills every window and omits windows that start before `measureUsageFrom`.

Not modelled: write endpoints (tests use the methods below), `burndownHistory` (always `[]`), windowTimeZone other
than UTC, meter group-by filters on features, `preserveOverageAtReset`, `issueAfterReset`, month arithmetic beyond
Go's `AddDate` normalisation, pagination parameters other than page/pageSize.
"""

from __future__ import annotations

import copy
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.datastructures import QueryParams

from ai_credit_usage.openmeter.numbers import to_float64_or_null
from ai_credit_usage.openmeter.standin.problems import Problem
from ai_credit_usage.openmeter.standin.store import compile_json_path, format_time, json_value, unix
from ai_credit_usage.openmeter.standin.wire import EventStore, Handler, StandInRequest, single_param, time_param

_FEATURE_OR_ID = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$|^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
INTERVALS = ("DAY", "WEEK", "MONTH", "YEAR")
_ISO = {"P1D": "DAY", "P1W": "WEEK", "P1M": "MONTH", "P1Y": "YEAR"}
_ISO_OF = {value: key for key, value in _ISO.items()}
EXPIRATION_DURATIONS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")
_NEVER = 2**62


def add_interval(moment: datetime, interval: str, count: int = 1) -> datetime:
    """`moment` plus `count` intervals, months and years as Go's AddDate counts them (Jan 31 + 1 month = Mar 3)."""
    if interval == "HOUR":
        return moment + timedelta(hours=count)
    if interval == "DAY":
        return moment + timedelta(days=count)
    if interval == "WEEK":
        return moment + timedelta(weeks=count)
    months = count * (12 if interval == "YEAR" else 1)
    if interval not in ("MONTH", "YEAR"):
        raise ValueError(f"unknown interval {interval!r}")
    index = moment.year * 12 + moment.month - 1 + months
    first = moment.replace(year=index // 12, month=index % 12 + 1, day=1)
    return first + timedelta(days=moment.day - 1)


def period_at(anchor: datetime, interval: str, moment: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the recurring period from `anchor` that holds `moment`."""
    if interval in ("DAY", "WEEK"):
        step = timedelta(days=1 if interval == "DAY" else 7)
        k = math.floor((moment - anchor) / step)
    else:
        months = (moment.year - anchor.year) * 12 + moment.month - anchor.month
        k = months // 12 if interval == "YEAR" else months
    start = add_interval(anchor, interval, k)
    while start > moment:
        k -= 1
        start = add_interval(anchor, interval, k)
    while add_interval(anchor, interval, k + 1) <= moment:
        k += 1
    return add_interval(anchor, interval, k), add_interval(anchor, interval, k + 1)


def _recurrences(anchor: datetime, interval: str, after: int, until: int) -> Iterable[int]:
    """The recurrence instants in (after, until]."""
    moment = period_at(anchor, interval, datetime.fromtimestamp(after, UTC))[1]
    while unix(moment) <= until:
        yield unix(moment)
        moment = add_interval(moment, interval)


@dataclass
class Customer:
    id: str
    key: str
    subject_keys: list[str]
    deleted_at: int | None = None

    @property
    def subjects(self) -> set[str]:
        return {self.key, *self.subject_keys}


@dataclass
class Entitlement:
    id: str
    customer: Customer
    feature_key: str
    feature_id: str
    meter_slug: str
    type: str
    created_at: int
    active_from: int
    active_to: int | None
    interval: str | None = None
    anchor: datetime | None = None
    measure_from: int = 0
    is_soft_limit: bool = False
    config: str | None = None

    def active(self, at: int) -> bool:
        return self.active_from <= at and (self.active_to is None or at < self.active_to)

    @property
    def usage_period(self) -> tuple[str, datetime]:
        if self.interval is None or self.anchor is None:
            raise Problem(400, "entitlement is not metered")
        return self.interval, self.anchor

    def period(self, at: int) -> tuple[int, int]:
        interval, anchor = self.usage_period
        start, end = period_at(anchor, interval, datetime.fromtimestamp(at, UTC))
        return unix(start), unix(end)


@dataclass
class Grant:
    id: str
    entitlement_id: str
    amount: float
    priority: int
    effective: int
    created_at: int
    expiration: tuple[str, int] | None = None
    recurrence: tuple[str, datetime] | None = None
    min_rollover: float = 0.0
    max_rollover: float | None = None
    voided_at: int | None = None
    metadata: dict[str, str] | None = None

    @property
    def expires(self) -> int | None:
        if self.expiration is None:
            return None
        duration, count = self.expiration
        return unix(add_interval(datetime.fromtimestamp(self.effective, UTC), duration, count))

    @property
    def ends(self) -> int:
        """When it stops burning: its expiry or its voiding, whichever is first."""
        return min(self.expires or _NEVER, self.voided_at or _NEVER)

    def burn_order(self) -> tuple[int, int, int, str]:
        return (self.priority, self.expires or _NEVER, self.created_at, self.id)


@dataclass
class _State:
    """The burn-down at one instant."""

    balances: dict[str, float] = field(default_factory=dict)  # active grants only
    overage: float = 0.0
    usage: float = 0.0  # in the current period
    burnt: float = 0.0  # usage covered by grants in the current period

    @property
    def balance(self) -> float:
        return sum(self.balances.values())


class EntitlementsStandIn:
    """The customers, features, entitlements and grants of the stand-in, and the router that serves them.

    `clock` is the server's "now" (tests hand it their injected clock). The test-side methods take the stand-in's
    lock; the routes are called with it held.
    """

    def __init__(self, lock: threading.Lock, clock: Callable[[], datetime] | None = None) -> None:
        self._lock = lock
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.customers: list[Customer] = []
        self.entitlements: list[Entitlement] = []
        self.grants: list[Grant] = []
        self._seq = 0

    # ---- test-side API -------------------------------------------------------------------------------------------

    def _id(self) -> str:
        self._seq += 1
        return f"01K{self._seq:023d}"

    def add_customer(self, key: str, *, subject_keys: Sequence[str] = ()) -> str:
        """A customer with this key (and usage attribution subjects); returns its id."""
        with self._lock:
            if any(c.key == key and c.deleted_at is None for c in self.customers):
                raise ValueError(f"customer key {key!r} already exists")
            customer = Customer(self._id(), key, list(subject_keys))
            self.customers.append(customer)
            return customer.id

    def delete_customer(self, key: str, at: datetime) -> None:
        with self._lock:
            self._customer_by_key(key).deleted_at = unix(at)

    def add_entitlement(
        self,
        customer_key: str,
        feature_key: str,
        *,
        meter: str = "ai_credits",
        type: str = "metered",
        interval: str = "MONTH",
        anchor: datetime | None = None,
        created_at: datetime,
        measure_usage_from: datetime | None = None,
        is_soft_limit: bool = False,
        config: str | None = None,
        active_to: datetime | None = None,
    ) -> str:
        """An entitlement of the customer to the feature (on `meter`); usage is measured from the start of the usage
        period holding `created_at` unless `measure_usage_from` says otherwise (OpenMeter's default)."""
        if type not in ("metered", "static", "boolean") or (type == "metered" and interval not in INTERVALS):
            raise ValueError(f"unsupported entitlement {type} / {interval}")
        with self._lock:
            customer = self._customer_by_key(customer_key)
            feature_id = next((e.feature_id for e in self.entitlements if e.feature_key == feature_key), None)
            entitlement = Entitlement(
                id=self._id(),
                customer=customer,
                feature_key=feature_key,
                feature_id=feature_id or self._id(),
                meter_slug=meter,
                type=type,
                created_at=unix(created_at),
                active_from=unix(created_at),
                active_to=unix(active_to) if active_to else None,
                is_soft_limit=is_soft_limit,
                config=config,
            )
            if type == "metered":
                entitlement.interval, entitlement.anchor = interval, anchor or created_at
                start = entitlement.period(unix(created_at))[0]
                entitlement.measure_from = unix(measure_usage_from) if measure_usage_from else start
            self.entitlements.append(entitlement)
            return entitlement.id

    def add_grant(
        self,
        customer_key: str,
        feature_key: str,
        *,
        amount: float,
        effective_at: datetime,
        created_at: datetime | None = None,
        priority: int = 1,
        expiration: tuple[str, int] | None = None,
        recurrence: tuple[str, datetime] | None = None,
        min_rollover: float = 0.0,
        max_rollover: float | None = None,
        voided_at: datetime | None = None,
        name: str | None = None,
    ) -> str:
        """A grant on the customer's metered entitlement to the feature; `expiration` is (HOUR|DAY|…, count) and
        `recurrence` (DAY|WEEK|MONTH|YEAR, anchor). `name` goes into the grant's metadata."""
        if expiration is not None and expiration[0] not in EXPIRATION_DURATIONS:
            raise ValueError(f"unknown expiration {expiration}")
        if recurrence is not None and recurrence[0] not in INTERVALS:
            raise ValueError(f"unknown recurrence {recurrence}")
        with self._lock:
            entitlement = self._entitlement(self._customer_by_key(customer_key), feature_key, None)
            if entitlement is None or entitlement.type != "metered":
                raise ValueError("grants need a metered entitlement")
            grant = Grant(
                id=self._id(),
                entitlement_id=entitlement.id,
                amount=amount,
                priority=priority,
                effective=unix(effective_at),
                created_at=unix(created_at or effective_at),
                expiration=expiration,
                recurrence=recurrence,
                min_rollover=min_rollover,
                max_rollover=max_rollover,
                voided_at=unix(voided_at) if voided_at else None,
                metadata={"name": name} if name else None,
            )
            self.grants.append(grant)
            return grant.id

    def reset(self) -> None:
        with self._lock:
            self.customers.clear()
            self.entitlements.clear()
            self.grants.clear()

    # ---- routing -------------------------------------------------------------------------------------------------

    def __call__(self, standin: EventStore, request: StandInRequest) -> Handler | None:
        parts, q = request.parts, request.query
        if parts[:3] != ["api", "v2", "customers"] or len(parts) < 5 or parts[4] != "entitlements":
            return None
        tail = parts[6:]
        if len(parts) > 8 or (len(parts) >= 6 and tail not in ([], ["value"], ["grants"], ["history"])):
            return None
        if request.method != "GET":
            raise Problem(405, f"the OpenMeter stand-in only models GET on {request.path}")
        customer_ref = parts[3]
        if not 1 <= len(customer_ref) <= 256:
            raise Problem(400, "customerIdOrKey must be 1 to 256 characters")
        if len(parts) == 5:
            return lambda: self._list(q, customer_ref)
        feature_ref = parts[5]
        if not _FEATURE_OR_ID.match(feature_ref) or len(feature_ref) > 64:
            raise Problem(400, f"Invalid format for parameter entitlementIdOrFeatureKey: {feature_ref!r}")
        what = tail[0] if tail else ""
        routes: dict[str, Callable[[], Any]] = {
            "": lambda: self._get(customer_ref, feature_ref),
            "value": lambda: self.value(standin, q, customer_ref, feature_ref),
            "grants": lambda: self._grants(q, customer_ref, feature_ref),
            "history": lambda: self._history(standin, q, customer_ref, feature_ref),
        }
        return routes[what]

    # ---- lookups -------------------------------------------------------------------------------------------------

    def _customer_by_key(self, key: str) -> Customer:
        found = next((c for c in self.customers if c.key == key and c.deleted_at is None), None)
        if found is None:
            raise ValueError(f"no customer {key!r}")
        return found

    def _customer(self, ref: str) -> Customer:
        """By id, or by the exact key of a customer that is not deleted (openmeter/customer/adapter/customer.go)."""
        found = next((c for c in self.customers if c.id == ref), None)
        found = found or next((c for c in self.customers if c.key == ref and c.deleted_at is None), None)
        if found is None:
            raise Problem(404, f"customer with id or key {ref} not found in default namespace")
        if found.deleted_at is not None:
            raise Problem(412, f"customer is deleted [namespace=default customer.id={found.id}]")
        return found

    def _entitlement(self, customer: Customer, ref: str, at: int | None) -> Entitlement | None:
        """By id, or the customer's entitlement to the feature key that is active at `at` (any, when None)."""
        for entitlement in self.entitlements:
            if entitlement.customer is not customer:
                continue
            if entitlement.id == ref or (entitlement.feature_key == ref and (at is None or entitlement.active(at))):
                return entitlement
        return None

    def _now(self) -> int:
        return unix(self.clock())

    # ---- the endpoints -------------------------------------------------------------------------------------------

    def _list(self, q: QueryParams, customer_ref: str) -> dict[str, Any]:
        customer, now = self._customer(customer_ref), self._now()
        page, size = _page(q)
        items = [e for e in self.entitlements if e.customer is customer and e.active(now)]
        shown = items[(page - 1) * size : page * size]
        return {
            "totalCount": len(items),
            "page": page,
            "pageSize": size,
            "items": [self._render(e, now) for e in shown],
        }

    def _get(self, customer_ref: str, feature_ref: str) -> dict[str, Any]:
        customer, now = self._customer(customer_ref), self._now()
        entitlement = self._entitlement(customer, feature_ref, now)
        if entitlement is None:
            raise Problem(404, f"entitlement not found {feature_ref} for customer {customer.id}")
        return self._render(entitlement, now)

    def value(self, standin: EventStore, q: QueryParams, customer_ref: str, feature_ref: str) -> dict[str, Any]:
        """The v2 entitlement value body (also what v3's entitlement access answers from)."""
        customer = self._customer(customer_ref)
        at_time = time_param(q, "time")
        at = unix(at_time) if at_time else self._now()
        if at_time is not None and at_time.microsecond:
            at += 1  # unix() floors; the fraction counts as the next second for the round-up below
        at = -(-at // 60) * 60  # rounded up to the next minute (metered/balance.go)
        entitlement = self._entitlement(customer, feature_ref, at)
        if entitlement is None or not entitlement.active(at):
            return {}  # NoAccessValue: hasAccess false is omitted
        if entitlement.type == "boolean":
            return {"hasAccess": True}
        if entitlement.type == "static":
            return {"hasAccess": True, "config": entitlement.config or "{}"}
        state = self._burn(standin, entitlement, at, [])[0]
        balance = state.balance
        body: dict[str, Any] = {}
        if balance > 0 or entitlement.is_soft_limit:
            body["hasAccess"] = True
        body |= {
            "balance": balance,
            "usage": state.usage,
            "overage": state.overage,
            "totalAvailableGrantAmount": state.burnt + balance,
            "grantBalances": dict(state.balances),
        }
        return body

    def _grants(self, q: QueryParams, customer_ref: str, feature_ref: str) -> dict[str, Any]:
        customer = self._customer(customer_ref)
        entitlement = self._entitlement(customer, feature_ref, self._now())
        if entitlement is None:
            raise Problem(404, f"entitlement not found {feature_ref} for customer {customer.id}")
        order_by = single_param(q, "orderBy") or "createdAt"
        if order_by not in ("id", "createdAt", "updatedAt"):
            raise Problem(400, f"invalid orderBy: {order_by}")
        descending = (single_param(q, "order") or "ASC") == "DESC"
        grants = [g for g in self.grants if g.entitlement_id == entitlement.id]
        grants.sort(key=lambda g: (g.id if order_by == "id" else g.created_at, g.id), reverse=descending)
        page, size = _page(q)
        return {
            "totalCount": len(grants),
            "page": page,
            "pageSize": size,
            "items": [_render_grant(g, self._now()) for g in grants[(page - 1) * size : page * size]],
        }

    def _history(self, standin: EventStore, q: QueryParams, customer_ref: str, feature_ref: str) -> dict[str, Any]:
        window_size = single_param(q, "windowSize")
        if window_size is None:
            raise Problem(400, "Query argument windowSize is required, but not found")
        if window_size not in ("HOUR", "DAY"):
            raise Problem(400, f"the OpenMeter stand-in models windowSize HOUR and DAY, not {window_size!r}")
        if (single_param(q, "windowTimeZone") or "UTC") != "UTC":
            raise Problem(400, "the OpenMeter stand-in models windowTimeZone UTC only")
        customer, now = self._customer(customer_ref), self._now()
        entitlement = self._entitlement(customer, feature_ref, now)
        if entitlement is None:
            raise Problem(404, f"entitlement not found {feature_ref} for customer {customer.id}")
        if entitlement.type != "metered":
            raise Problem(400, "entitlement is not metered")
        start_time, end_time = time_param(q, "from"), time_param(q, "to")
        start = unix(start_time) if start_time else max(entitlement.period(now)[0], entitlement.measure_from)
        end = unix(end_time) if end_time else now
        if start < entitlement.measure_from:
            raise Problem(400, f"from {format_time(start)} cannot be before {format_time(entitlement.measure_from)}")
        start -= start % 60
        end = end if end % 60 == 0 else end - end % 60 + 60
        step = 3600 if window_size == "HOUR" else 86400
        first = start - start % step
        last = end if end % step == 0 else end - end % step + step
        windows = [(w, w + step) for w in range(first, last, step) if w >= entitlement.measure_from]
        checkpoints = [w for w, _ in windows]
        _, balances = self._burn(standin, entitlement, max([end, *checkpoints]), checkpoints)
        usage = self._usage_by_window(standin, entitlement, [(w, min(e, end)) for w, e in windows])
        return {
            "windowedHistory": [
                {
                    "period": {"from": format_time(w), "to": format_time(e)},
                    "usage": used,
                    "balanceAtStart": balances[w],
                }
                for (w, e), used in zip(windows, usage, strict=True)
            ],
            "burndownHistory": [],
        }

    # ---- the engine ----------------------------------------------------------------------------------------------

    def _events(self, standin: EventStore, entitlement: Entitlement, until: int) -> list[tuple[int, float]]:
        """(time, value) of the meter's events of the customer's subjects, from measureUsageFrom to `until`."""
        meter = standin.meter(entitlement.meter_slug)
        if meter["aggregation"] not in ("SUM", "COUNT"):
            raise Problem(400, "the OpenMeter stand-in models entitlements on SUM and COUNT meters only")
        value_path = compile_json_path(meter.get("valueProperty") or "$")
        by_subject = standin.rows_by_subject()
        found: list[tuple[int, float]] = []
        for subject in entitlement.customer.subjects:
            for row in by_subject.get(subject, []):
                if row.event["type"] != meter["eventType"] or not entitlement.measure_from <= row.time < until:
                    continue
                if meter["aggregation"] == "COUNT":
                    found.append((row.time, 1.0))
                else:
                    value = to_float64_or_null(json_value(row.event.get("data"), value_path))
                    if value is not None:
                        found.append((row.time, value))
        found.sort(key=lambda item: item[0])
        return found

    def _usage_by_window(
        self, standin: EventStore, entitlement: Entitlement, windows: list[tuple[int, int]]
    ) -> list[float]:
        events = self._events(standin, entitlement, max((e for _, e in windows), default=0))
        return [sum(v for t, v in events if w <= t < e) for w, e in windows]

    def _burn(
        self, standin: EventStore, entitlement: Entitlement, until: int, checkpoints: list[int]
    ) -> tuple[_State, dict[int, float]]:
        """Run the burn-down from measureUsageFrom to `until` (exclusive); the balance at each checkpoint too."""
        grants = {g.id: g for g in self.grants if g.entitlement_id == entitlement.id}
        start = entitlement.measure_from
        steps: list[tuple[int, int, int, str, float]] = []  # (time, kind, order, grant id, value)
        interval, anchor = entitlement.usage_period
        for reset in _recurrences(anchor, interval, start, until):
            steps.append((reset, 0, 0, "", 0.0))
        for grant in grants.values():
            begins, ends = max(grant.effective, start), grant.ends
            if begins >= ends or begins > until:
                continue
            steps.append((begins, 2, 0, grant.id, 0.0))
            if ends <= until:
                steps.append((ends, 1, 0, grant.id, 0.0))
            if grant.recurrence is not None:
                every, since = grant.recurrence
                for moment in _recurrences(since, every, begins, min(until, ends - 1)):
                    steps.append((moment, 3, 0, grant.id, 0.0))
        steps += [(t, 4, 0, "", 0.0) for t in checkpoints]
        steps += [(t, 5, i, "", v) for i, (t, v) in enumerate(self._events(standin, entitlement, until))]
        steps.sort(key=lambda step: step[:3])
        state, seen = _State(), {}

        def burn(amount: float) -> None:
            for grant_id in sorted(state.balances, key=lambda gid: grants[gid].burn_order()):
                taken = min(state.balances[grant_id], amount)
                state.balances[grant_id] -= taken
                state.burnt += taken
                amount -= taken
                if amount <= 0:
                    return
            state.overage += amount

        for moment, kind, _, grant_id, value in steps:
            if kind == 0:  # a usage-period reset
                for gid, balance in state.balances.items():
                    grant = grants[gid]
                    ceiling = grant.amount if grant.max_rollover is None else grant.max_rollover
                    state.balances[gid] = min(ceiling, max(grant.min_rollover, balance))
                state.overage = state.usage = state.burnt = 0.0
            elif kind == 1:  # expired or voided
                state.balances.pop(grant_id, None)
            elif kind == 2:  # becomes active: it burns the overage of the period so far
                state.balances[grant_id] = grants[grant_id].amount
                carried, state.overage = state.overage, 0.0
                if carried > 0:
                    burn(carried)
            elif kind == 3 and grant_id in state.balances:  # a recurrence refills
                state.balances[grant_id] = grants[grant_id].amount
            elif kind == 4:
                seen[moment] = state.balance
            elif kind == 5:
                state.usage += value
                burn(value)
        return state, seen

    def _render(self, entitlement: Entitlement, now: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": entitlement.type,
            "id": entitlement.id,
            "featureKey": entitlement.feature_key,
            "featureId": entitlement.feature_id,
            "customerId": entitlement.customer.id,
            "customerKey": entitlement.customer.key,
            "activeFrom": format_time(entitlement.active_from),
            "createdAt": format_time(entitlement.created_at),
            "updatedAt": format_time(entitlement.created_at),
        }
        if entitlement.active_to is not None:
            body["activeTo"] = format_time(entitlement.active_to)
        if entitlement.type == "static":
            body["config"] = entitlement.config or "{}"
        if entitlement.type != "metered":
            return body
        interval, anchor = entitlement.usage_period
        period_start, period_end = entitlement.period(now)
        body |= {
            "isSoftLimit": entitlement.is_soft_limit,
            "preserveOverageAtReset": False,
            "lastReset": format_time(max(period_start, entitlement.measure_from)),
            "currentUsagePeriod": {"from": format_time(period_start), "to": format_time(period_end)},
            "measureUsageFrom": format_time(entitlement.measure_from),
            "usagePeriod": {"interval": interval, "intervalISO": _ISO_OF[interval], "anchor": format_time(anchor)},
        }
        return body


def _page(q: QueryParams) -> tuple[int, int]:
    try:
        page, size = int(single_param(q, "page") or 1), int(single_param(q, "pageSize") or 100)
    except ValueError:
        raise Problem(400, "page and pageSize must be integers") from None
    if page < 1 or not 1 <= size <= 1000:
        raise Problem(400, "page must be at least 1 and pageSize 1 to 1000")
    return page, size


def _render_grant(grant: Grant, now: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": grant.id,
        "entitlementId": grant.entitlement_id,
        "amount": grant.amount,
        "priority": grant.priority,
        "effectiveAt": format_time(grant.effective),
        "minRolloverAmount": grant.min_rollover,
        "maxRolloverAmount": grant.amount if grant.max_rollover is None else grant.max_rollover,
        "createdAt": format_time(grant.created_at),
        "updatedAt": format_time(grant.created_at),
    }
    if grant.expiration is not None and grant.expires is not None:
        body["expiration"] = {"duration": grant.expiration[0], "count": grant.expiration[1]}
        body["expiresAt"] = format_time(grant.expires)
    if grant.recurrence is not None:
        interval, anchor = grant.recurrence
        body["recurrence"] = {"interval": interval, "intervalISO": _ISO_OF[interval], "anchor": format_time(anchor)}
        after = datetime.fromtimestamp(max(now, grant.effective), UTC)
        body["nextRecurrence"] = format_time(period_at(anchor, interval, after)[1])
    if grant.voided_at is not None:
        body["voidedAt"] = format_time(grant.voided_at)
    if grant.metadata:
        body["metadata"] = copy.deepcopy(grant.metadata)
    return body
