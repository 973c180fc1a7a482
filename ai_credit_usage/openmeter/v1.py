"""OpenMeter's v1/v2 API behind our seam: `GET /api/v1/meters/{slug}`, its `/query`, and `GET /api/v2/events`.

The replies are checked here against the shapes the real server sends (the meter definition included); anything
else is "an answer that could not be read". Filters are built as data and JSON-encoded, so no tenant name can add
operators or keys to them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx2
from pydantic import BaseModel, ValidationError

from ai_credit_usage.openmeter.http import OpenMeterError, OpenMeterHttp
from ai_credit_usage.openmeter.interface import AggregateQuery, CloudEvent, UsageRow
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.runtime.window import Window, format_utc

logger = logging.getLogger(__name__)

EVENTS_PAGE_SIZE = 100  # the most /api/v2/events hands out per page
SUBJECTS_PER_FILTER = 50  # at most this many subjects in one `$in` filter (the URL's length bounds it too)
# Proxies and load balancers commonly refuse request lines near 8 KB; an events query (its filter names the subjects)
# stays under this, with room for the cursor that later pages add.
MAX_QUERY_BYTES = 6000
CURSOR_ROOM = 200
_WINDOW_SIZE = {"day": "DAY", "month": "MONTH"}
SERVES_V3 = (
    "OpenMeter at OPENMETER_URL speaks its v3 API (as Kong Konnect does), not the v1 API this server is set to use; "
    "ask the operator to set OPENMETER_API=v3 and OPENMETER_URL to the v3 base URL (e.g. https://us.api.konghq.com/v3)."
)


class _Definition(BaseModel):
    """The fields of OpenMeter's Meter schema we use; anything else in the body is ignored."""

    id: str | None = None
    slug: str = "?"
    aggregation: str
    eventType: str = ""
    valueProperty: str | None = None
    groupBy: dict[str, str] | None = None
    eventFrom: datetime | None = None


class _QueryRow(BaseModel):
    value: float
    subject: str | None = None
    groupBy: dict[str, str | None] = {}
    windowStart: datetime | None = None  # the calendar window's start when the query has a windowSize


class _QueryResult(BaseModel):
    data: list[_QueryRow]


class _IngestedEvent(BaseModel):
    event: CloudEvent


class _EventsPage(BaseModel):
    items: list[_IngestedEvent]
    nextCursor: str | None = None


class OpenMeterV1:
    """The v1 meter endpoints and the v2 event list, over one `OpenMeterHttp`."""

    def __init__(self, http: OpenMeterHttp) -> None:
        self._http = http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def meter(self, key: str) -> Meter:
        try:
            body = await self._http.get_json(f"/api/v1/meters/{key}", {}, meter=key)
        except OpenMeterError as exc:  # Konnect (v3 only) answers the v1 path in its own words
            if exc.status == 404 and exc.problem is not None and exc.problem.from_v3:
                logger.warning("OPENMETER_URL answers v1 paths like OpenMeter's v3 API: set OPENMETER_API=v3")
                raise OpenMeterError(SERVES_V3) from None
            raise
        try:
            definition = _Definition.model_validate(body)
        except ValidationError as exc:  # e.g. groupBy as a list: not OpenMeter's documented shape
            raise self._http.unreadable("meter definition", exc) from None
        return Meter.build(
            key=definition.slug,
            aggregation=definition.aggregation,
            event_type=definition.eventType,
            value_property=definition.valueProperty,
            dimensions=definition.groupBy,
            id=definition.id,
            events_from=definition.eventFrom,
        )

    async def query(self, meter: Meter, query: AggregateQuery) -> list[UsageRow]:
        """One aggregate row per group over the whole window, or per group and calendar window (DAY or MONTH in the
        query's time zone) when asked; only windows with usage come back. OpenMeter does not paginate."""
        window = query.window
        params: list[tuple[str, str]] = [("from", format_utc(window.start)), ("to", format_utc(window.end))]
        if query.unit is not None:
            params += [("windowSize", _WINDOW_SIZE[query.unit]), ("windowTimeZone", query.time_zone)]
        params += [("groupBy", key) for key in query.group_by]
        params.append(("advancedMeterGroupByFilters", json.dumps(_dimension_filters(query), ensure_ascii=False)))
        body = await self._http.get_json(f"/api/v1/meters/{meter.slug}/query", params, meter=meter.slug)
        try:
            rows = _QueryResult.model_validate(body).data
        except ValidationError as exc:
            raise self._http.unreadable("meter query", exc) from None
        return [UsageRow(row.value, row.groupBy, row.subject, row.windowStart) for row in rows]

    async def event_page(
        self, meter: Meter, window: Window, subjects: Sequence[str] | None, cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        """One page (at most 100 events, newest first) and the cursor of the next, if OpenMeter gave one."""
        params = _events_params(window, meter.event_type, subjects, cursor)
        body = await self._http.get_json("/api/v2/events", params, meter=None)
        try:
            page = _EventsPage.model_validate(body)
        except ValidationError as exc:
            raise self._http.unreadable("events page", exc) from None
        # OpenMeter sets nextCursor only when the page is full; a last full page is followed by an empty one.
        return [item.event for item in page.items], page.nextCursor or None

    def subject_chunks(
        self, meter: Meter, window: Window, subjects: Sequence[str], *, max_count: int = SUBJECTS_PER_FILTER
    ) -> list[list[str]]:
        """`subjects` in order, cut into `$in` lists of at most `max_count` whose events query (with a cursor) stays
        under MAX_QUERY_BYTES once URL-encoded. A subject too long for any query is an error the user can relay."""
        base = len(_encoded_query(_events_params(window, meter.event_type, [], "c" * CURSOR_ROOM)))
        separator = _encoded_length(", ")  # json.dumps puts this between list items
        chunks: list[list[str]] = []
        size = 0
        for subject in subjects:
            cost = _encoded_length(json.dumps(subject, ensure_ascii=False))
            if base + cost > MAX_QUERY_BYTES:
                logger.warning("subject of %d characters is too long for an events query", len(subject))
                raise OpenMeterError(
                    f"One of the names OpenMeter files your tenant's usage under (its subject) is {len(subject):,} "
                    "characters long, too long to ask OpenMeter for its events; the credit totals and the summary "
                    "still work, and the operator should check how usage is reported to OpenMeter."
                )
            if chunks and len(chunks[-1]) < max_count and size + separator + cost <= MAX_QUERY_BYTES:
                chunks[-1].append(subject)
                size += separator + cost
            else:
                chunks.append([subject])
                size = base + cost
        return chunks

    def describe_query(self, meter: Meter, query: AggregateQuery) -> str:
        calendar = " without windowSize"
        if query.unit is not None:
            calendar = f", windowSize {_WINDOW_SIZE[query.unit]}, windowTimeZone {query.time_zone}"
        return (
            f"GET /api/v1/meters/{meter.slug}/query{calendar}, grouped by {', '.join(query.group_by)}; "
            f"filter {_described_filters(query)}; from and to = the window"
        )

    def describe_events(self, meter: Meter) -> str:
        return f"GET /api/v2/events, type {meter.event_type}, time in the window"


def _dimension_filters(query: AggregateQuery) -> dict[str, Any]:
    """One `$eq` per dimension, ANDed by the server (meter_query.go compares `JSON_VALUE(data, path) = ?` with the
    value as a bound parameter): the tenant first, then the caller's filters. Built as data, so a value is never an
    operator, a list or a pattern."""
    filters: dict[str, Any] = {"tenant": {"$eq": query.tenant}}
    for dimension, value in query.filters:
        if dimension != "tenant":  # nothing may replace the tenant's own filter
            filters[dimension] = {"$eq": value}
    return filters


def _described_filters(query: AggregateQuery) -> str:
    return ", ".join(f"{name} = {value!r}" for name, value in [("tenant", query.tenant), *query.filters])


def _events_params(
    window: Window, event_type: str, subjects: Sequence[str] | None, cursor: str | None
) -> dict[str, str]:
    event_filter: dict[str, Any] = {"type": {"$eq": event_type}}
    if subjects is not None:
        event_filter["subject"] = {"$in": list(subjects)}
    # One operator per object: real OpenMeter answers 400 to {"$gte": a, "$lt": b}.
    event_filter["time"] = {"$and": [{"$gte": format_utc(window.start)}, {"$lt": format_utc(window.end)}]}
    params = {"limit": str(EVENTS_PAGE_SIZE), "filter": json.dumps(event_filter, ensure_ascii=False)}
    if cursor is not None:
        params["cursor"] = cursor
    return params


def _encoded_query(params: Mapping[str, str]) -> str:
    return str(httpx2.QueryParams(params))  # the encoding the request itself gets


def _encoded_length(text: str) -> int:
    """Bytes `text` takes in a URL-encoded query value (percent-encoding works character by character)."""
    return len(_encoded_query({"v": text})) - len("v=")
