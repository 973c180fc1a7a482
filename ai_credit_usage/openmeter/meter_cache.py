"""The meter's definition, kept per process so a tool call does not first wait for it: one round trip saved per answer.

Works over any implementation of the seam (`interface.OpenMeter`): it only calls `meter(key)`.

- Fresh for `fresh_seconds` (60 s): served without asking OpenMeter.
- Then, up to `max_age_seconds` (300 s): still served at once, and one refresh starts in the background; the next
  calls see its result (a changed definition replaces the old one, and is logged).
- Older than that, or never read: the call waits for the definition; concurrent calls share one request.
- Evicted at once when OpenMeter says the definition no longer holds: a 404 or 400 for the meter (`evict`, called by
  the questions on a query's 404/400 too), or a definition we must refuse (`MeterConfigError`: no `tenant` dimension,
  not SUM, an unreadable JSONPath). An evicted or refused meter is never served from the cache: the next call asks
  again and refuses again, so a meter that loses its tenant dimension stops every call within one refresh.
- A refresh that fails for a passing reason (timeout, 5xx, rate limit) keeps the definition until `max_age_seconds`.

The cache holds only the definition (no tenant's data), one per meter key.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ai_credit_usage.openmeter.http import OpenMeterError
from ai_credit_usage.openmeter.interface import OpenMeter
from ai_credit_usage.openmeter.meter import Meter, MeterConfigError

logger = logging.getLogger(__name__)

FRESH_SECONDS = 60.0
MAX_AGE_SECONDS = 300.0
DEFINITIVE_STATUSES = frozenset({400, 404})  # the meter is gone, or the definition we hold no longer matches


@dataclass(frozen=True)
class _Entry:
    meter: Meter
    read_at: float


class MeterCache:
    """The definition of the meter `key`, as `openmeter.meter(key)` gives it, cached as the module says."""

    def __init__(
        self,
        openmeter: OpenMeter,
        key: str,
        *,
        fresh_seconds: float = FRESH_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._openmeter, self._key, self._clock = openmeter, key, clock
        self._fresh, self._max_age = fresh_seconds, max(max_age_seconds, fresh_seconds)
        self._entry: _Entry | None = None
        self._reading: asyncio.Task[Meter] | None = None  # the one request in flight, shared by every caller
        self._generation = 0  # bumped by evict(): a read that started before an eviction is not stored

    async def get(self) -> Meter:
        """The definition: from the cache when young enough (refreshing it in the background when no longer fresh),
        else read now."""
        entry = self._entry
        if entry is not None:
            age = self._clock() - entry.read_at
            if age < self._max_age:
                if age >= self._fresh:
                    self._start_reading(background=True)
                return entry.meter
        return await asyncio.shield(self._start_reading(background=False))

    def evict(self) -> None:
        """Forget the definition (OpenMeter answered 404/400 about the meter): the next call reads it anew."""
        if self._entry is not None:
            logger.info("meter %s: definition evicted, it is read again on the next call", self._key)
        self._entry = None
        self._generation += 1

    @property
    def reading(self) -> asyncio.Task[Meter] | None:
        """The read in flight, if any (tests await it instead of sleeping)."""
        return self._reading

    async def aclose(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None and not reading.done():
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    def _start_reading(self, *, background: bool) -> asyncio.Task[Meter]:
        if self._reading is None:
            # A background refresh outlives the call that noticed the age: it runs in a context of its own, so its
            # span is not filed under that call's trace.
            context = contextvars.Context() if background else None
            self._reading = asyncio.get_running_loop().create_task(self._read(self._generation), context=context)
            self._reading.add_done_callback(self._finished)
            if background:
                logger.debug("meter %s: refreshing the definition in the background", self._key)
        return self._reading

    async def _read(self, generation: int) -> Meter:
        try:
            meter = await self._openmeter.meter(self._key)
        except MeterConfigError:
            self.evict()  # fail closed: a definition we refuse is never served, not even the old one
            raise
        except OpenMeterError as error:
            if error.status in DEFINITIVE_STATUSES:
                self.evict()
            raise
        if generation == self._generation:
            previous = self._entry
            if previous is not None and previous.meter != meter:
                logger.warning("meter %s: its definition changed; answers use the new one from now on", self._key)
            self._entry = _Entry(meter, self._clock())
        return meter

    def _finished(self, task: asyncio.Task[Meter]) -> None:
        if self._reading is task:
            self._reading = None
        if not task.cancelled() and task.exception() is not None:  # retrieved here, so a background failure is no
            logger.info("meter %s: reading the definition failed: %s", self._key, task.exception())  # stray warning
