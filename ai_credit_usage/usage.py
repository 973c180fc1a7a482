"""The questions the tools answer, as `(tenant, window) -> Table`: the only place that knows which OpenMeter call
answers which question. The tenant always arrives from the caller's header; nothing here takes it from arguments.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.meter import Meter
from ai_credit_usage.openmeter import OpenMeterClient
from ai_credit_usage.window import Window

logger = logging.getLogger(__name__)

TENANT_COLUMNS = ("tenant", "credits")
SUMMARY_COLUMNS = ("user", "module", "product", "tenant", "skill", "credits")
EVENT_COLUMNS = ("time", "user", "module", "product", "tenant", "credits")


@dataclass
class Table:
    """Column names and rows; `credits` is always the last column and a float."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def total_credits(self) -> float:
        return math.fsum(row[-1] for row in self.rows)


class UsageService:
    def __init__(self, client: OpenMeterClient, meter_slug: str, *, max_event_rows: int) -> None:
        self._client = client
        self._meter_slug = meter_slug
        self._max_event_rows = max_event_rows

    async def meter(self) -> Meter:
        return Meter.from_definition(await self._client.get_meter(self._meter_slug))

    async def tenant_total(self, tenant: str, window: Window) -> Table:
        """One row, even at zero usage: the tenant's credits over the window."""
        meter = await self.meter()
        rows = await self._client.query_meter(meter.slug, window, ["tenant"], _tenant_filter(tenant))
        total = math.fsum(row.value for row in rows if row.groupBy.get("tenant") == tenant)
        return Table(TENANT_COLUMNS, [(tenant, total)])

    async def summary(self, tenant: str, window: Window) -> Table:
        """One row per (user, module, product, tenant, skill) combination, largest credits first."""
        meter = await self.meter()
        dimensions = [name for name in SUMMARY_COLUMNS[:-1] if name in meter.dimension_paths]
        rows = await self._client.query_meter(meter.slug, window, dimensions, _tenant_filter(tenant))
        table = Table(SUMMARY_COLUMNS)
        for row in rows:
            if row.groupBy.get("tenant") != tenant:  # belt and braces: OpenMeter already filtered on it
                continue
            table.rows.append((*(row.groupBy.get(name) or "" for name in SUMMARY_COLUMNS[:-1]), row.value))
        table.rows.sort(key=lambda row: (-row[-1], row[:-1]))
        return table

    async def events(self, tenant: str, window: Window) -> Table:
        """Every raw event of the tenant in the window, newest first.

        The events API cannot filter on event data, so we page through the meter's event type in the window and
        keep the events whose tenant dimension is exactly the caller's tenant.
        """
        meter = await self.meter()
        table = Table(EVENT_COLUMNS)
        skipped = 0
        async for page in self._client.iter_event_pages(window, meter.event_type):
            for event in page:
                if event.type != meter.event_type or meter.dimension(event.data, "tenant") != tenant:
                    continue
                credits = meter.credits(event.data)
                if credits is None or event.time is None:  # the meter does not count it either
                    skipped += 1
                    continue
                if len(table.rows) >= self._max_event_rows:
                    raise UserFacingError(
                        f"There are more than {self._max_event_rows:,} credit events in this window, more than one "
                        "download can hold; ask for a shorter window."
                    )
                table.rows.append(
                    (
                        event.time.astimezone(UTC),
                        meter.dimension(event.data, "user"),
                        meter.dimension(event.data, "module"),
                        meter.dimension(event.data, "product"),
                        tenant,
                        credits,
                    )
                )
        if skipped:
            logger.warning("skipped %d events without a numeric credits value or a time", skipped)
        table.rows.sort(key=_event_time, reverse=True)
        return table


def _tenant_filter(tenant: str) -> dict[str, Any]:
    return {"tenant": {"$eq": tenant}}


def _event_time(row: tuple[Any, ...]) -> datetime:
    return row[0]
