"""What the server asked the stand-in, read the same way whichever OpenMeter API it spoke, so a test written once
checks both: v1's query parameters (`groupBy`, `windowSize`, `advancedMeterGroupByFilters`, the events `filter`
JSON) and v3's query body (`group_by_dimensions`, `granularity`, `filters.dimensions`) and deepObject parameters
(`filter[time][lt]`, `filter[subject][oeq]`, `page[after]`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, RecordedRequest

_UNITS = {"DAY": "day", "MONTH": "month", "P1D": "day", "P1M": "month"}


@dataclass(frozen=True)
class SentQuery:
    """One meter query: its window, grouping, calendar unit and zone, and the tenant filter as {operator: value}."""

    start: str | None
    end: str | None
    group_by: list[str]
    tenant_filter: dict[str, Any]
    unit: str | None
    time_zone: str | None
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)  # every other dimension's filter, by name

    @property
    def narrowed_to(self) -> dict[str, str]:
        """The filters beside the tenant's as {dimension: value}, each an exact match (`eq`/`$eq`)."""
        return {name: found["eq"] for name, found in self.filters.items()}


@dataclass(frozen=True)
class SentPage:
    """One events request: the time range, the event type, the subjects named, whether it carried a cursor. v3 sends
    only the end (Konnect takes one time operator): its `start` is None, the reader cuts at the window's start."""

    start: str | None
    end: str
    type: str
    subjects: list[str] | None
    cursor: bool
    page_size: str | None


def meter_queries(openmeter: OpenMeterStandIn) -> list[SentQuery]:
    return [_query(openmeter.api, request) for request in openmeter.requests if request.path.endswith("/query")]


def events_path(openmeter: OpenMeterStandIn) -> str:
    return "/api/v3/openmeter/events" if openmeter.api == "v3" else "/api/v2/events"


def event_pages(openmeter: OpenMeterStandIn) -> list[SentPage]:
    path = events_path(openmeter)
    return [page_of(openmeter.api, request) for request in openmeter.requests if request.path == path]


def _query(api: str, request: RecordedRequest) -> SentQuery:
    if api == "v3":
        body = request.json()
        dimensions = dict(body.get("filters", {}).get("dimensions", {}))
        tenant = dimensions.pop("tenant", {})
        return SentQuery(
            body.get("from"),
            body.get("to"),
            body.get("group_by_dimensions", []),
            tenant,
            _UNITS.get(body.get("granularity", "")),
            body.get("time_zone"),
            dimensions,
        )
    advanced = request.param("advancedMeterGroupByFilters")
    filters = json.loads(advanced) if advanced else {}
    tenant = filters.pop("tenant", {})
    return SentQuery(
        request.param("from"),
        request.param("to"),
        request.params("groupBy"),
        _plain(tenant),
        _UNITS.get(request.param("windowSize") or ""),
        request.param("windowTimeZone"),
        {name: _plain(found) for name, found in filters.items()},
    )


def _plain(found: dict[str, Any]) -> dict[str, Any]:
    """v1's operators without their `$`, as v3 names them."""
    return {op.removeprefix("$"): value for op, value in found.items()}


def page_of(api: str, request: RecordedRequest) -> SentPage:
    if api == "v3":
        oeq, eq = request.param("filter[subject][oeq]"), request.param("filter[subject][eq]")
        subjects = oeq.split(",") if oeq is not None else [eq] if eq is not None else None
        return SentPage(
            request.param("filter[time][gte]"),
            request.param("filter[time][lt]") or "",
            request.param("filter[type][eq]") or "",
            subjects,
            request.param("page[after]") is not None,
            request.param("page[size]"),
        )
    event_filter = json.loads(request.param("filter") or "{}")
    start, end = event_filter["time"]["$and"]
    subject = event_filter.get("subject")
    return SentPage(
        start["$gte"],
        end["$lt"],
        event_filter["type"]["$eq"],
        subject["$in"] if subject else None,
        request.param("cursor") is not None,
        request.param("limit"),
    )
