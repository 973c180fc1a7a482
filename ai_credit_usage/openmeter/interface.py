"""The seam between the questions (usage.py) and OpenMeter: what they ask, in our own terms.

The questions never see a URL, a query parameter or a reply's JSON shape; they ask an `OpenMeter` for the meter, for
aggregates over a window, and for pages of raw events. `v1.OpenMeterV1` (the v1 meter and v2 event endpoints) is
one implementation; another API is another class with these methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.runtime.window import Window

CalendarUnit = Literal["day", "month"]  # OpenMeter's calendar windows; weeks are folded from days by the caller


@dataclass(frozen=True)
class AggregateQuery:
    """The tenant's credits over `window`, one row per combination of `group_by` values (and per calendar `unit`
    in `time_zone`, when given). The tenant filter is an exact match on the meter's `tenant` dimension, always;
    `filters` narrow it further, each (dimension, value) an exact match too, all of them together (AND).

    `group_by` keeps each dimension once, in first-seen order: real OpenMeter appends a repeated `groupBy` to its
    SQL instead of dropping it (openmeter/meter/httphandler/mapping.go), so no implementation may send one twice."""

    window: Window
    group_by: tuple[str, ...]
    tenant: str
    unit: CalendarUnit | None = None
    time_zone: str = "UTC"
    filters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_by", tuple(dict.fromkeys(self.group_by)))


@dataclass(frozen=True)
class UsageRow:
    """One aggregate row: the credits of one combination (in one calendar window, when the query asked for them)."""

    value: float
    dimensions: dict[str, str | None] = field(default_factory=dict)
    subject: str | None = None
    window_start: datetime | None = None


class CloudEvent(BaseModel):
    """A raw usage event as OpenMeter stores it; `data` is the event's JSON payload."""

    id: str
    type: str
    subject: str
    time: datetime | None = None
    data: Any = None


class OpenMeter(Protocol):
    """What the questions need of OpenMeter. Every failure is an `OpenMeterError` (or a `MeterConfigError` for a
    meter that cannot answer safely) whose message is one sentence for the chat user."""

    async def meter(self, key: str) -> Meter:
        """The meter's definition: how credits and dimensions are read from an event."""
        ...

    async def query(self, meter: Meter, query: AggregateQuery) -> list[UsageRow]:
        """Every row of the aggregate at once (OpenMeter does not paginate them); only rows with usage."""
        ...

    async def event_page(
        self, meter: Meter, window: Window, subjects: Sequence[str] | None, cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        """One page of the meter's events (of `subjects`; None: of every subject) in the window, newest first, and
        the next page's cursor."""
        ...

    def subject_chunks(self, meter: Meter, window: Window, subjects: Sequence[str]) -> list[list[str]]:
        """`subjects` in order, cut into the lists one events request can carry."""
        ...

    def describe_query(self, meter: Meter, query: AggregateQuery) -> str:
        """The request an aggregate becomes, in words, for the workbook's About sheet."""
        ...

    def describe_events(self, meter: Meter) -> str:
        """The requests the events walk makes, in words, for the About sheet."""
        ...

    async def aclose(self) -> None: ...


async def sequential_event_pages(
    openmeter: OpenMeter, meter: Meter, window: Window, subjects: Sequence[str] | None = None
) -> AsyncIterator[list[CloudEvent]]:
    """Every event of the meter's type (of `subjects`, if given) in the window, newest first, a page at a time: the
    plain sequential walk, which the sliced walk in event_walk.py must reproduce exactly (the tests compare)."""
    events, cursor = await openmeter.event_page(meter, window, subjects, None)
    while True:
        yield events
        if cursor is None:
            return
        events, cursor = await openmeter.event_page(meter, window, subjects, cursor)
