"""OpenMeter's v3 API behind our seam (Kong Konnect Metering & Billing, and self-hosted OpenMeter under /api/v3):
`GET /openmeter/meters?filter[key][eq]=` and `/meters/{meterId}`, `POST /openmeter/meters/{meterId}/query`, and
`GET /openmeter/events`.

The traps, each with its source in `openmeter-v3.md` (shared docs): a meter is addressed by its upper-case ULID
only (a key in the path is a 404), so the key is looked up once and its id cached; the query body rejects unknown
fields; values are decimal strings; events come 20 a page unless asked for 100, with a cursor only on full pages;
the subject filter has no `in`, only `oeq` (comma-separated, trimmed, at most 50 values), so a subject that a comma
list cannot carry is asked for on its own with `eq`; a query key is never repeated (that is a 400). Errors come in
two shapes (v3's BaseAPIError and the v1 problem); http.py reads both, and they become the same sentences as v1's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx2
from pydantic import BaseModel, Field, ValidationError, field_validator

from ai_credit_usage.openmeter.http import OpenMeterError, OpenMeterHttp
from ai_credit_usage.openmeter.interface import AggregateQuery, CloudEvent, UsageRow
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.runtime.window import Window, format_utc

logger = logging.getLogger(__name__)

EVENTS_PAGE_SIZE = 100  # the most /openmeter/events hands out per page (the default is 20)
SUBJECTS_PER_FILTER = 50  # `oeq` takes at most 50 values
MAX_VALUE_BYTES = 1024  # the filter parser refuses a longer value (one `oeq` list is one value)
MAX_QUERY_BYTES = 6000  # as v1: proxies commonly refuse request lines near 8 KB
CURSOR_ROOM = 200
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_NUMERIC = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_GRANULARITY = {"day": "P1D", "month": "P1M"}
_M = TypeVar("_M", bound=BaseModel)
NOT_V3 = (
    "OpenMeter at OPENMETER_URL does not serve the v3 API this server is set to use (its meter list was not found); "
    "ask the operator to check OPENMETER_URL (the v3 base URL, e.g. https://us.api.konghq.com/v3) and OPENMETER_API."
)


class _Definition(BaseModel):
    """The fields of v3's Meter schema we use; anything else in the body is ignored."""

    id: str
    key: str
    aggregation: str
    event_type: str = ""
    value_property: str | None = None
    dimensions: dict[str, str] | None = None
    events_from: datetime | None = None


class _MeterPage(BaseModel):
    data: list[_Definition]


class _QueryRow(BaseModel):
    value: float
    dimensions: dict[str, str] = {}
    from_: datetime | None = Field(default=None, alias="from")  # the calendar window's start, with a granularity

    @field_validator("value", mode="before")
    @classmethod
    def _decimal_string(cls, value: object) -> float:
        """`Numeric`: a decimal string, read exactly to the nearest float (as v1's JSON numbers are)."""
        if not isinstance(value, str) or not _NUMERIC.match(value):
            raise ValueError("not a decimal string")
        return float(value)


class _QueryResult(BaseModel):
    data: list[_QueryRow]


class _IngestedEvent(BaseModel):
    event: CloudEvent


class _CursorPage(BaseModel):
    next: str | None = None


class _CursorMeta(BaseModel):
    page: _CursorPage


class _EventsPage(BaseModel):
    data: list[_IngestedEvent]
    meta: _CursorMeta


class OpenMeterV3:
    """The v3 meter and event endpoints, over one `OpenMeterHttp` whose base URL is the v3 base
    (`https://us.api.konghq.com/v3`, `http://localhost:8888/api/v3`)."""

    def __init__(self, http: OpenMeterHttp) -> None:
        self._http = http
        self._ids: dict[str, str] = {}  # meter key -> its ULID, once found

    async def aclose(self) -> None:
        await self._http.aclose()

    async def meter(self, key: str) -> Meter:
        """The meter by its ULID once known (or when OPENMETER_METER is one); first by its key. A known id that is
        gone (404) is forgotten and the key looked up again."""
        meter_id = key if ULID.match(key) else self._ids.get(key)
        if meter_id is not None:
            try:
                body = await self._http.get_json(
                    f"/openmeter/meters/{meter_id}", None, meter=key, template="/openmeter/meters/{meterId}"
                )
            except OpenMeterError as exc:
                if exc.status != 404 or meter_id == key:
                    raise
                self._ids.pop(key, None)
            else:
                definition = _read(self._http, _Definition, body, "meter definition")
                if definition.key == key or meter_id == key:
                    return self._remember(key, definition)
                self._ids.pop(key, None)  # the id now names another meter: look the key up again
        return self._remember(key, await self._find(key))

    async def _find(self, key: str) -> _Definition:
        try:
            body = await self._http.get_json("/openmeter/meters", {"filter[key][eq]": key}, meter=None)
        except OpenMeterError as exc:  # the list itself is not there: this is no v3 server (or not its base URL)
            if exc.status == 404:
                logger.warning("OPENMETER_URL has no v3 meter list: check OPENMETER_URL and OPENMETER_API")
                raise OpenMeterError(NOT_V3) from None
            raise
        found = [meter for meter in _read(self._http, _MeterPage, body, "meter list").data if meter.key == key]
        if not found:
            raise OpenMeterError(f"OpenMeter has no meter '{key}'; ask the operator to check OPENMETER_METER.")
        return found[0]

    def _remember(self, key: str, definition: _Definition) -> Meter:
        if not ULID.match(definition.id):
            raise self._http.unreadable("meter definition", "its id is not a ULID")  # not quoted: upstream text
        self._ids[key] = definition.id
        return Meter.build(
            key=definition.key,
            aggregation=definition.aggregation,
            event_type=definition.event_type,
            value_property=definition.value_property,
            dimensions=definition.dimensions,
            id=definition.id,
            events_from=definition.events_from,
        )

    async def query(self, meter: Meter, query: AggregateQuery) -> list[UsageRow]:
        """One row per group over the whole window, or per group and calendar day or month in the query's time zone
        (`P1D`/`P1M`; weeks are folded from days by the caller). Only windows with usage come back."""
        try:
            body = await self._http.post_json(
                f"/openmeter/meters/{meter.id}/query",
                _query_body(query),
                meter=meter.slug,
                template="/openmeter/meters/{meterId}/query",
            )
        except OpenMeterError as exc:
            if exc.status == 404:
                self._ids.pop(meter.slug, None)  # deleted or re-created: the next call looks the key up again
            raise
        rows = _read(self._http, _QueryResult, body, "meter query").data
        grouped_by_subject = "subject" in query.group_by
        out = []
        for row in rows:
            dimensions: dict[str, str | None] = dict(row.dimensions)
            subject = dimensions.pop("subject", None) if grouped_by_subject else None
            out.append(UsageRow(row.value, dimensions, subject, row.from_ if query.unit is not None else None))
        return out

    async def event_page(
        self, meter: Meter, window: Window, subjects: Sequence[str] | None, cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        """One page (at most 100 events, newest first) and the cursor of the next, if OpenMeter gave one.

        Konnect's spec takes one operator in `filter[time]`, so the request asks only for events before the window's
        end; the cut at its start happens here: the first event older than the start ends the page and the walk
        (they come newest first), so every caller still gets exactly the window's events."""
        if subjects is not None and not subjects:  # no subject has no events (an empty `oeq` would be a 400)
            return [], None
        params = _events_params(window, meter.event_type, subjects, cursor)
        body = await self._http.get_json("/openmeter/events", params, meter=None)
        page = _read(self._http, _EventsPage, body, "events page")
        events = [item.event for item in page.data]
        start = window.start.replace(microsecond=0)  # whole seconds, as the bound was sent (format_utc)
        for index, event in enumerate(events):
            if event.time is not None and event.time < start:
                return events[:index], None
        # `next` is set only when the page came back full; a last full page is followed by an empty one.
        return events, page.meta.page.next or None

    def subject_chunks(
        self, meter: Meter, window: Window, subjects: Sequence[str], *, max_count: int = SUBJECTS_PER_FILTER
    ) -> list[list[str]]:
        """`subjects` in order, cut into `oeq` lists of at most `max_count` (one value of at most 1024 bytes, its
        query under MAX_QUERY_BYTES). A subject a comma list cannot carry (a comma, blanks at an end) is a chunk of
        its own, asked for with `eq`; one too long for any query is an error the user can relay."""
        base = len(_encoded_query(_events_params(window, meter.event_type, ["s", "t"], "c" * CURSOR_ROOM)))
        chunks: list[list[str]] = []
        listed = False  # whether the last chunk is an `oeq` list that may take more
        for subject in subjects:
            cost = _encoded_length(subject)
            if len(subject.encode()) > MAX_VALUE_BYTES or base + cost > MAX_QUERY_BYTES:
                logger.warning("subject of %d characters is too long for an events query", len(subject))
                raise OpenMeterError(
                    f"One of the names OpenMeter files your tenant's usage under (its subject) is {len(subject):,} "
                    "characters long, too long to ask OpenMeter for its events; the credit totals and the summary "
                    "still work, and the operator should check how usage is reported to OpenMeter."
                )
            if not _listable(subject):
                chunks.append([subject])
                listed = False
                continue
            if listed and len(chunks[-1]) < max_count:
                joined = ",".join([*chunks[-1], subject])
                if len(joined.encode()) <= MAX_VALUE_BYTES and base + _encoded_length(joined) <= MAX_QUERY_BYTES:
                    chunks[-1].append(subject)
                    continue
            chunks.append([subject])
            listed = True
        return chunks

    def describe_query(self, meter: Meter, query: AggregateQuery) -> str:
        calendar = " without granularity"
        if query.unit is not None:
            calendar = f", granularity {_GRANULARITY[query.unit]}, time_zone {query.time_zone}"
        return (
            f"POST /openmeter/meters/{meter.id}/query (meter {meter.slug}){calendar}, group_by_dimensions "
            f"{', '.join(query.group_by)}; filters.dimensions {_described_filters(query)}; from and to = the window"
        )

    def describe_events(self, meter: Meter) -> str:
        return (
            f"GET /openmeter/events, type {meter.event_type}, time before the window's end, newest first, read down "
            "to the window's start"
        )


def _query_body(query: AggregateQuery) -> dict[str, Any]:
    """MeterQueryRequest: only its own fields (the schema has additionalProperties: false); the tenant filter is
    data, one operator, so no tenant name can add operators or keys to it."""
    body: dict[str, Any] = {"from": format_utc(query.window.start), "to": format_utc(query.window.end)}
    if query.unit is not None:
        body["granularity"] = _GRANULARITY[query.unit]
        body["time_zone"] = query.time_zone
    body["group_by_dimensions"] = list(dict.fromkeys(query.group_by))
    dimensions = {"tenant": {"eq": query.tenant}}
    for dimension, value in query.filters:
        if dimension != "tenant":  # nothing may replace the tenant's own filter
            dimensions[dimension] = {"eq": value}  # `eq`, never `oeq`: a value with a comma stays one value
    body["filters"] = {"dimensions": dimensions}
    return body


def _described_filters(query: AggregateQuery) -> str:
    return ", ".join(f"{name} eq {value!r}" for name, value in [("tenant", query.tenant), *query.filters])


def _listable(subject: str) -> bool:
    """Whether `oeq`'s comma list can carry the subject as it is (the list is split on commas and trimmed)."""
    return "," not in subject and subject == subject.strip() and subject != ""


def _events_params(
    window: Window, event_type: str, subjects: Sequence[str] | None, cursor: str | None
) -> list[tuple[str, str]]:
    """Each key once (a repeated key is a 400), and one operator per filter: upstream ANDs several on `time`, but
    Konnect's published schema for it is a `oneOf` of single-operator objects, so `gte` + `lt` would be refused
    there. Only the window's end is sent; `event_page` cuts at its start."""
    params = [
        ("filter[type][eq]", event_type),
        ("filter[time][lt]", format_utc(window.end)),
    ]
    if subjects is not None:
        if len(subjects) == 1:
            params.append(("filter[subject][eq]", subjects[0]))
        else:
            params.append(("filter[subject][oeq]", ",".join(subjects)))
    params.append(("page[size]", str(EVENTS_PAGE_SIZE)))
    if cursor is not None:
        params.append(("page[after]", cursor))
    return params


def _read(http: OpenMeterHttp, model: type[_M], body: Any, what: str) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise http.unreadable(what, exc) from None


def _encoded_query(params: list[tuple[str, str]]) -> str:
    return str(httpx2.QueryParams(list(params)))


def _encoded_length(text: str) -> int:
    return len(_encoded_query([("v", text)])) - len("v=")
