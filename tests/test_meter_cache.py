"""The meter definition's cache (openmeter/meter_cache.py): fresh, refreshed in the background, evicted on a 404/400
or a definition we refuse; a clock is injected, nothing sleeps. Then end to end: a warm call asks OpenMeter only its
own queries, and a changed or vanished meter is picked up."""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import replace
from datetime import timedelta

import pytest

from ai_credit_usage.openmeter.http import OpenMeterError
from ai_credit_usage.openmeter.meter import Meter, MeterConfigError
from ai_credit_usage.openmeter.meter_cache import FRESH_SECONDS, MAX_AGE_SECONDS, MeterCache
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from tests.conftest import AI_METER, NOW, FakeClock, ServerStarter, call_tool, text_of

pytestmark = pytest.mark.anyio
METER_PATH = "/api/v1/meters/ai_credits"
PROBE: contextvars.ContextVar[str] = contextvars.ContextVar("probe")  # stands in for the call's span context


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Definitions:
    """A stand-in for any implementation of the seam: only `meter(key)` is used; each answer is queued."""

    def __init__(self, *answers: Meter | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.gate: asyncio.Event | None = None  # when set, an answer waits for it (to see concurrent callers)
        self.seen: list[str | None] = []  # PROBE as each read saw it

    async def meter(self, key: str) -> Meter:
        self.asked += 1
        self.seen.append(PROBE.get(None))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def cache_of(definitions: Definitions, clock: Seconds) -> MeterCache:
    return MeterCache(definitions, "ai_credits", clock=clock)  # type: ignore[arg-type]  # only meter() is needed


CHANGED = replace(AI_METER, event_type="ai_credits_v2")


async def test_a_fresh_definition_is_served_without_asking() -> None:
    definitions, clock = Definitions(AI_METER), Seconds()
    cache = cache_of(definitions, clock)
    assert await cache.get() == AI_METER
    clock.now += FRESH_SECONDS - 1
    assert await cache.get() == AI_METER
    assert definitions.asked == 1
    assert cache.reading is None


async def test_concurrent_cold_calls_share_one_request() -> None:
    definitions, clock = Definitions(AI_METER), Seconds()
    definitions.gate = asyncio.Event()
    cache = cache_of(definitions, clock)
    calls = [asyncio.create_task(cache.get()) for _ in range(5)]
    await asyncio.sleep(0)  # let them all start waiting (a scheduling point, not a wait for time)
    definitions.gate.set()
    assert await asyncio.gather(*calls) == [AI_METER] * 5
    assert definitions.asked == 1


async def test_after_fresh_the_old_one_is_served_and_refreshed_in_the_background() -> None:
    definitions, clock = Definitions(AI_METER, CHANGED), Seconds()
    cache = cache_of(definitions, clock)
    await cache.get()
    clock.now += FRESH_SECONDS
    assert await cache.get() == AI_METER  # at once, from the cache
    assert cache.reading is not None
    await cache.reading
    assert await cache.get() == CHANGED  # the changed definition is picked up
    assert definitions.asked == 2


async def test_a_background_refresh_runs_outside_the_call_that_started_it() -> None:
    """Its span is not filed under that call's trace: the read in the call's context, the refresh in its own."""
    definitions, clock = Definitions(AI_METER), Seconds()
    cache = cache_of(definitions, clock)
    PROBE.set("first call")
    await cache.get()
    clock.now += FRESH_SECONDS
    PROBE.set("later call")
    await cache.get()
    assert cache.reading is not None
    await cache.reading
    assert definitions.seen == ["first call", None]


async def test_past_its_max_age_the_call_waits_for_a_new_definition() -> None:
    definitions, clock = Definitions(AI_METER, CHANGED), Seconds()
    cache = cache_of(definitions, clock)
    await cache.get()
    clock.now += MAX_AGE_SECONDS
    assert await cache.get() == CHANGED


@pytest.mark.parametrize("status", [404, 400])
async def test_a_definitive_answer_to_a_refresh_evicts(status: int) -> None:
    gone = OpenMeterError("OpenMeter has no meter 'ai_credits'")
    gone.status = status
    definitions, clock = Definitions(AI_METER, gone), Seconds()
    cache = cache_of(definitions, clock)
    await cache.get()
    clock.now += FRESH_SECONDS
    await cache.get()
    assert cache.reading is not None
    with pytest.raises(OpenMeterError):
        await cache.reading
    with pytest.raises(OpenMeterError, match="no meter"):
        await cache.get()


async def test_a_meter_that_loses_its_tenant_dimension_is_refused_from_then_on() -> None:
    """Fail closed: a refresh that finds a definition we must refuse drops the old one too."""
    refused = MeterConfigError("The meter 'ai_credits' has no tenant dimension")
    definitions, clock = Definitions(AI_METER, refused), Seconds()
    cache = cache_of(definitions, clock)
    await cache.get()
    clock.now += FRESH_SECONDS
    await cache.get()
    assert cache.reading is not None
    with pytest.raises(MeterConfigError):
        await cache.reading
    for _ in range(2):  # every later call asks again and refuses again: a refusal is never cached either
        with pytest.raises(MeterConfigError, match="no tenant dimension"):
            await cache.get()
    assert definitions.asked == 4


async def test_a_passing_failure_keeps_the_definition_until_its_max_age() -> None:
    slow = OpenMeterError("OpenMeter did not answer in time", retryable=True)
    definitions, clock = Definitions(AI_METER, slow), Seconds()
    cache = cache_of(definitions, clock)
    await cache.get()
    clock.now += FRESH_SECONDS
    await cache.get()
    assert cache.reading is not None
    with pytest.raises(OpenMeterError):
        await cache.reading
    assert await cache.get() == AI_METER
    clock.now += MAX_AGE_SECONDS
    with pytest.raises(OpenMeterError, match="in time"):
        await cache.get()


async def test_evict_forgets_and_a_read_started_before_is_not_stored() -> None:
    definitions, clock = Definitions(AI_METER, CHANGED), Seconds()
    cache = cache_of(definitions, clock)
    definitions.gate = asyncio.Event()
    first = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    cache.evict()
    definitions.gate.set()
    assert await first == AI_METER  # the caller still gets its answer
    assert await cache.get() == CHANGED  # but it was not kept
    assert definitions.asked == 2


# ---- end to end ----------------------------------------------------------------------------------------------------


def meter_reads(openmeter: OpenMeterStandIn) -> int:
    return len([r for r in openmeter.requests if r.path == METER_PATH])


async def test_a_warm_call_asks_only_its_own_queries(server_url: str, openmeter: OpenMeterStandIn) -> None:
    for _ in range(3):
        for tool in ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_usage_trend"):
            assert not (await call_tool(server_url, tool)).is_error
    assert meter_reads(openmeter) == 1


async def test_a_vanished_meter_is_read_again_on_the_next_call(server_url: str, openmeter: OpenMeterStandIn) -> None:
    assert not (await call_tool(server_url, "get_credit_usage_summary")).is_error
    definition = openmeter.meters.pop("ai_credits")
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert "no meter 'ai_credits'" in text_of(result)  # the query's 404 evicts the definition; it is read: 404
    openmeter.add_meter({**definition, "groupBy": {k: v for k, v in definition["groupBy"].items() if k != "tenant"}})
    result = await call_tool(server_url, "get_credit_usage_summary")
    assert "no tenant dimension" in text_of(result)  # read anew, and refused
    assert meter_reads(openmeter) == 3


async def test_a_meter_that_loses_its_tenant_dimension_refuses_from_the_next_call(
    server_url: str, openmeter: OpenMeterStandIn
) -> None:
    """The cached definition still has `tenant`, so the queries still filter on it: the real server refuses such a
    query (400, "meter does not have group by: tenant"): that evicts it, the meter is read again and refused, in
    the same call, and from then on."""
    assert not (await call_tool(server_url, "get_credit_usage_by_tenant")).is_error
    openmeter.add_meter({**AI_CREDITS_METER, "groupBy": {"user": "$.user"}})
    for _ in range(2):
        result = await call_tool(server_url, "get_credit_usage_by_tenant")
        assert "no tenant dimension" in text_of(result)
    assert meter_reads(openmeter) == 3  # a refused definition is never cached


async def test_a_changed_definition_is_used_once_the_cached_one_ages(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, clock: FakeClock
) -> None:
    """A change no query notices (the value moved to another property) is picked up by age."""
    url = start_server()
    openmeter.ingest(
        make_event(tenant="acme", credits=2, time=NOW - timedelta(hours=1), extra_data={"credits_v2": 5}),
    )
    assert "Total credits: 2.00" in text_of(await call_tool(url, "get_credit_events"))
    openmeter.add_meter({**AI_CREDITS_METER, "valueProperty": "$.credits_v2"})
    assert "Total credits: 2.00" in text_of(await call_tool(url, "get_credit_events"))  # still fresh: cached
    clock.advance(seconds=MAX_AGE_SECONDS)
    assert "Total credits: 5.00" in text_of(await call_tool(url, "get_credit_events"))
