"""`--demo`: a generated, realistic AI-credit data set behind an in-process OpenMeter, so the server can be tried
without an OpenMeter key.

Only the data is made up. The production `OpenMeterClient` talks to an `OpenMeterStandIn` (the same stand-in the
tests check against real OpenMeter semantics) through `httpx2.ASGITransport`, so every demo answer goes through the
production client, usage, rendering and workbook code: the demo cannot drift from the real path.

The data is deterministic: a fixed seed, laid out on the 90 UTC days up to the start-up day, with events after "now"
dropped. Started twice on the same day it holds the same events (those before "now"). It has four tenants (`demo`,
`acme`, `globex`, `initech`) of a dozen users each, the TAIS modules with their products and skills, a weekday
rhythm (weekends low), a slow growth trend, a quiet week and one spike day (a runaway agent workflow in `demo`).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, format_time
from ai_credit_usage.openmeter.standin.entitlements import period_at

logger = logging.getLogger(__name__)

# What `main.py --demo` loads settings with: no real key is needed, and none is ever sent anywhere.
DEMO_API_KEY = "demo-mode-no-real-key"
DEMO_OPENMETER_URL = "http://openmeter.demo"
DEMO_FEATURE = "ai_credits"
DEMO_CURRENCY = "USD"  # the currency of the demo ledger's credits (v3)
# The demo sets the credits feature, so get_credit_balance is offered (on v1) and answers from the demo allowances.
DEMO_SETTINGS: dict[str, str] = {
    "openmeter_api_key": DEMO_API_KEY,
    "openmeter_url": DEMO_OPENMETER_URL,
    "openmeter_credits_feature": DEMO_FEATURE,
}
# With OPENMETER_API=v3 the demo stand-in speaks v3, at the base URL a self-hosted OpenMeter would have.
DEMO_SETTINGS_V3: dict[str, str] = {**DEMO_SETTINGS, "openmeter_url": f"{DEMO_OPENMETER_URL}/api/v3"}


def demo_settings(api: str | None) -> dict[str, str]:
    """The settings `--demo` overrides: v1 unless OPENMETER_API says v3."""
    return DEMO_SETTINGS_V3 if (api or "").strip().lower() == "v3" else DEMO_SETTINGS


SEED = 20_260_101
DAYS = 90
USERS_PER_TENANT = 12
SPIKE_DAYS_AGO = 3  # inside the default 7-day window, so the very first question finds something
QUIET_WEEK_DAYS_AGO = range(35, 42)  # a holiday week: everyone at a fifth of the usual usage
QUIET_FACTOR = 0.2
SPIKE_TENANT = "demo"
SPIKE_EVENTS = 200

# tenant -> (relative size, UTC hour the working day starts)
TENANTS: dict[str, tuple[float, int]] = {
    "demo": (1.0, 7),
    "acme": (1.4, 13),
    "globex": (0.8, 8),
    "initech": (0.45, 16),
}
EVENTS_PER_WEEKDAY = 100  # for a tenant of relative size 1.0, before the trend
WEEKDAY_FACTOR = (1.0, 1.1, 1.05, 1.0, 0.8, 0.12, 0.08)  # Monday .. Sunday


@dataclass(frozen=True)
class Module:
    name: str
    product: str
    skills: tuple[str, ...]
    weight: float  # share of events
    median_credits: float
    spread: float  # sigma of the log-normal credits
    string_credits: bool = False  # this producer sends credits as numeric strings, as real producers may


MODULES = (
    Module("chat", "assistant", ("answer-question", "summarise", "draft-email", "brainstorm"), 0.40, 1.2, 0.6),
    Module("search", "knowledge", ("semantic-search", "answer-with-sources"), 0.20, 0.6, 0.5),
    Module("documents", "knowledge", ("summarise-document", "extract-fields", "compare-documents"), 0.15, 3.5, 0.6),
    Module("agents", "agent-studio", ("web-research", "data-analysis", "workflow-automation"), 0.10, 9.0, 0.7),
    Module("translation", "assistant", ("translate-text", "translate-document"), 0.15, 1.8, 0.5, string_credits=True),
)
FIRST_NAMES = (
    "Anna", "Ben", "Chiara", "David", "Elif", "Finn", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena", "Mateo",
    "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe",
    "Aisha", "Bruno", "Carla", "Dmitri", "Emma", "Felix", "Hana", "Ivan", "Julia", "Karim", "Lucia", "Max",
)  # fmt: skip
LAST_NAMES = (
    "Schmidt", "Okafor", "Rossi", "Novak", "Yilmaz", "Hansen", "Kim", "Tanaka", "Garcia", "Weber", "Mensah", "Berg",
    "Silva", "Dubois", "Haddad", "Sharma", "Moreau", "Fischer", "Lindqvist", "Patel", "Chen", "Lopez", "Kowalski",
    "Nguyen", "Murphy", "Costa", "Ivanova", "Jensen", "Meyer", "Ali", "Santos", "Keller", "Larsen", "Wagner",
)  # fmt: skip


@dataclass(frozen=True)
class _User:
    email: str
    activity: float  # relative share of the tenant's events
    module_weights: tuple[float, ...]  # per MODULES entry


def demo_events(now: datetime) -> list[dict[str, Any]]:
    """Every demo CloudEvent up to `now`, oldest first; the same list for the same `now`. Treat them as read-only:
    they are made once per `now` (about a second) and shared by every caller."""
    return list(_demo_events(now))


@functools.lru_cache(maxsize=2)
def _demo_events(now: datetime) -> tuple[dict[str, Any], ...]:
    rng = random.Random(SEED)  # noqa: S311 - sample data, not security
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS - 1)
    users = {tenant: _users(rng, tenant) for tenant in TENANTS}
    events: list[dict[str, Any]] = []
    for index in range(DAYS):
        day = first_day + timedelta(days=index)
        days_ago = DAYS - 1 - index
        trend = 0.85 + 0.3 * index / (DAYS - 1)  # adoption grows slowly over the quarter
        quiet = QUIET_FACTOR if days_ago in QUIET_WEEK_DAYS_AGO else 1.0
        for tenant, (size, day_starts) in TENANTS.items():
            expected = EVENTS_PER_WEEKDAY * size * WEEKDAY_FACTOR[day.weekday()] * trend * quiet
            count = max(0, round(rng.gauss(expected, math.sqrt(expected))))
            people = users[tenant]
            chosen = rng.choices(people, weights=[user.activity for user in people], k=count)
            for user in chosen:
                module = rng.choices(MODULES, weights=user.module_weights)[0]
                hour = _working_hour(rng, day_starts)
                events.append(_event(rng, tenant, user.email, module, rng.choice(module.skills), day, hour))
            if tenant == SPIKE_TENANT and days_ago == SPIKE_DAYS_AGO:
                events += _spike(rng, tenant, people[4].email, day)
    events.sort(key=lambda event: event["time"])
    cutoff = format_time(now.astimezone(UTC).replace(microsecond=0))
    return tuple(event for event in events if event["time"] < cutoff)  # one format throughout: text order is time order


def _working_hour(rng: random.Random, day_starts: int) -> float:
    """An hour of the UTC day, most of them in the tenant's working day, peaking mid-day (redrawn, not clamped, so
    no pile-up at midnight)."""
    while True:
        hour = rng.gauss(day_starts + 4.5, 2.8)
        if 0 <= hour < 24:
            return hour


def _users(rng: random.Random, tenant: str) -> list[_User]:
    firsts = rng.sample(FIRST_NAMES, USERS_PER_TENANT)
    lasts = rng.sample(LAST_NAMES, USERS_PER_TENANT)
    users = []
    for first, last in zip(firsts, lasts, strict=True):
        weights = tuple(module.weight * rng.uniform(0.3, 1.7) for module in MODULES)
        activity = rng.lognormvariate(0, 0.8)  # a few heavy users, a long tail of light ones
        users.append(_User(f"{first}.{last}@{tenant}.example".lower(), activity, weights))
    return users


def _event(
    rng: random.Random, tenant: str, user: str, module: Module, skill: str, day: datetime, hour: float
) -> dict[str, Any]:
    credits = round(rng.lognormvariate(math.log(module.median_credits), module.spread), 4)
    return {
        "specversion": "1.0",
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": f"//tais/{module.name}-service",
        "type": AI_CREDITS_METER["eventType"],
        "subject": user,  # the user, not the tenant: the tenant lives only in the data, as in TAIS
        "time": format_time(day + timedelta(seconds=int(hour * 3600))),
        "data": {
            "credits": f"{credits:.4f}" if module.string_credits else credits,
            "tenant": tenant,
            "user": user,
            "module": module.name,
            "product": module.product,
            "skill": skill,
        },
    }


# The demo allowances: the usage period is anchored so it always resets ALLOWANCE_RESET_DAYS after today.
ALLOWANCE_RESET_DAYS = 12
PACE_DAYS = 28
COMFORTABLE_TENANT, RUNNING_OUT_TENANT, TOP_UP_TENANT, NO_ALLOWANCE_TENANT = "acme", "demo", "globex", "initech"


def demo_allowances(
    standin: OpenMeterStandIn,
    now: datetime,
    events: list[dict[str, Any]],
    *,
    feature: str = DEMO_FEATURE,
    meter_slug: str = "ai_credits",
    customer_key: Callable[[str], str | None] = lambda tenant: tenant,
) -> None:
    """A customer per demo tenant (its users as the subject keys) with an entitlement to `feature` and grants sized
    from the tenant's own usage, so the story holds whatever the day: acme is comfortable, demo runs out a few days
    before the reset, globex has a top-up that expires in a few days, initech has no allowance at all."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = today + timedelta(days=ALLOWANCE_RESET_DAYS)  # the next reset; earlier periods count back from it
    if anchor.day > 28:  # months step from the anchor's day as Go's AddDate does: keep it in every month
        anchor = anchor.replace(day=28)
    first_day = today - timedelta(days=DAYS - 1)
    period_start = period_at(anchor, "MONTH", now)[0]
    standin.credits.meter_slug = meter_slug  # the usage the ledger burns
    for tenant in TENANTS:
        key = customer_key(tenant)
        if tenant == NO_ALLOWANCE_TENANT or key is None:
            continue
        mine = [event for event in events if event["data"]["tenant"] == tenant]
        subjects = sorted({event["subject"] for event in mine})
        used = sum(_credits(event) for event in mine if event["time"] >= format_time(period_start))
        recent = format_time(now - timedelta(days=PACE_DAYS))
        pace = sum(_credits(event) for event in mine if event["time"] >= recent) / PACE_DAYS
        entitlements = standin.entitlements
        entitlements.add_customer(key, subject_keys=subjects)
        entitlements.add_entitlement(
            key, feature, meter=meter_slug, interval="MONTH", anchor=anchor, created_at=first_day,
            measure_usage_from=first_day,
        )  # fmt: skip
        # The monthly plan: what this period used so far, plus this many days of the recent pace.
        days_left_in_plan = {COMFORTABLE_TENANT: 60, RUNNING_OUT_TENANT: ALLOWANCE_RESET_DAYS / 3, TOP_UP_TENANT: 30}
        amount = round(used + pace * days_left_in_plan[tenant], -1 if tenant == RUNNING_OUT_TENANT else -2)
        entitlements.add_grant(key, feature, amount=amount, effective_at=first_day, priority=5,
                               recurrence=("MONTH", anchor), name="Monthly plan")  # fmt: skip
        # v3's prepaid ledger tells the same story: this month's plan, expiring at the reset (ledger grants do not
        # recur), and globex's top-up; its usage burns them from the first one on.
        credits = standin.credits
        credits.add_credit_grant(key, amount=amount, effective_at=period_start, priority=5, name="Monthly plan",
                                 expires_at=period_at(anchor, "MONTH", now)[1], currency=DEMO_CURRENCY)  # fmt: skip
        if tenant == TOP_UP_TENANT:  # the top-up is burnt first (priority 1) and expires in 4 days with credits left
            top_up_start = today - timedelta(days=26)
            top_up_used = sum(_credits(e) for e in mine if e["time"] >= format_time(top_up_start))
            top_up = round(top_up_used + pace * 8, -1)
            entitlements.add_grant(key, feature, amount=top_up, effective_at=top_up_start,
                                   priority=1, expiration=("DAY", 30), name="Top-up (30 days)")  # fmt: skip
            credits.add_credit_grant(key, amount=top_up, effective_at=top_up_start, priority=1,
                                     expires_at=top_up_start + timedelta(days=30), name="Top-up (30 days)",
                                     currency=DEMO_CURRENCY)  # fmt: skip


def _credits(event: dict[str, Any]) -> float:
    return float(event["data"]["credits"])


def _spike(rng: random.Random, tenant: str, user: str, day: datetime) -> list[dict[str, Any]]:
    """A misconfigured agent workflow looping for an afternoon: the anomaly an admin should spot."""
    agents = next(module for module in MODULES if module.name == "agents")
    return [
        _event(rng, tenant, user, agents, "workflow-automation", day, 13 + 5.5 * i / SPIKE_EVENTS)
        for i in range(SPIKE_EVENTS)
    ]


def demo_transport(
    now: datetime,
    *,
    api_key: str,
    meter_slug: str,
    api: str = "v1",
    feature: str | None = DEMO_FEATURE,
    customer_key: Callable[[str], str | None] = lambda tenant: tenant,
    clock: Callable[[], datetime] | None = None,
) -> httpx2.AsyncBaseTransport:
    """An OpenMeter stand-in (of the `api` the settings speak) holding the demo events under the configured meter
    slug, as a transport for the production OpenMeter client: requests go to the stand-in's ASGI app in-process,
    with no socket. With a `feature`, the demo tenants get their allowances (v1: entitlements; v3: the credits ledger)
    (`demo_allowances`) under `customer_key(tenant)`; `clock` is the server's, so the stand-in's "now" is the same."""
    started = time.perf_counter()
    events = demo_events(now)
    standin = OpenMeterStandIn(
        api_key=api_key, meters=[{**AI_CREDITS_METER, "slug": meter_slug}], record_requests=False, api=api
    )
    standin.ingest(*events, ingested_at=now)
    if clock is not None:
        standin.entitlements.clock = clock
    if feature is not None:
        demo_allowances(standin, now, events, feature=feature, meter_slug=meter_slug, customer_key=customer_key)
    logger.warning(
        "DEMO MODE: answering from %d generated events (tenants %s, the %d days up to %s, OpenMeter's %s API), made "
        "in %.1f s; this is sample data, not anybody's real usage",
        len(events),
        ", ".join(TENANTS),
        DAYS,
        format_time(now.replace(microsecond=0)),
        api,
        time.perf_counter() - started,
    )
    return httpx2.ASGITransport(app=standin.app)
