"""OpenMeter's v1/v2 API in the stand-in: `/api/v1/meters[/{idOrSlug}[/query]]` and `/api/v2/events`.

It follows the real Go server (see `openmeter-api.md` in the project's shared docs), not the OpenAPI spec where the
two differ: `to` is exclusive, times have second resolution, a filter object holds exactly one operator,
`nextCursor` is sent only on full pages, and so on.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.datastructures import QueryParams

from ai_credit_usage.openmeter.standin.problems import Problem
from ai_credit_usage.openmeter.standin.store import (
    EVENT_FILTER_KEYS,
    METER_ID_OR_KEY,
    STRING_OPS,
    TIME_OPS,
    WINDOW_SIZES,
    Row,
    check_filter,
    decode_cursor,
    encode_cursor,
    format_time,
    group_events,
    group_value,
    ingested_event,
    matches,
    parse_rfc3339,
    unix,
    upper_bound,
)
from ai_credit_usage.openmeter.standin.wire import (
    EventStore,
    Handler,
    StandInRequest,
    json_param,
    single_param,
    time_param,
)


def route(standin: EventStore, request: StandInRequest) -> Handler | None:
    parts, q = request.parts, request.query
    handler: Handler
    if parts[:3] == ["api", "v1", "meters"] and len(parts) <= 5 and parts[4:] in ([], ["query"]):
        if len(parts) > 3 and (len(parts[3]) > 64 or not METER_ID_OR_KEY.fullmatch(parts[3])):
            handler = lambda: _bad_meter_path(parts[3])  # noqa: E731
        elif len(parts) == 3:
            handler = lambda: list_meters(standin, q)  # noqa: E731
        elif len(parts) == 4:
            handler = lambda: get_meter(standin, q, parts[3])  # noqa: E731
        else:
            handler = lambda: query_meter(standin, q, parts[3])  # noqa: E731
    elif parts == ["api", "v2", "events"]:
        handler = lambda: list_events(standin, q)  # noqa: E731
    else:
        return None
    if request.method != "GET":
        raise Problem(405, f"the OpenMeter stand-in only models GET on {request.path}")
    return handler


def _bad_meter_path(segment: str) -> Any:
    """kin-openapi's request validation, before any handler: a key with a hyphen or capitals is a 400, not a 404."""
    raise Problem(
        400,
        f'parameter "meterIdOrSlug" in path has an error: string {segment!r} does not match the regular expression',
    )


def list_meters(standin: EventStore, q: QueryParams) -> list[dict[str, Any]]:
    return [standin.meters[slug] for slug in sorted(standin.meters)]  # the server ignores paging, orders by key


def get_meter(standin: EventStore, q: QueryParams, id_or_slug: str) -> dict[str, Any]:
    return standin.meter(id_or_slug)


def query_meter(standin: EventStore, q: QueryParams, id_or_slug: str) -> dict[str, Any]:
    # 1. Parameter binding (format errors come before the meter lookup).
    start, end = time_param(q, "from"), time_param(q, "to")
    window_size, tz_name = single_param(q, "windowSize"), single_param(q, "windowTimeZone")
    if window_size is not None and window_size not in WINDOW_SIZES:
        raise Problem(400, f"Invalid format for parameter windowSize: {window_size!r} is not one of {WINDOW_SIZES}")
    group_by, subjects = q.getlist("groupBy"), q.getlist("subject")
    simple: dict[str, str] = {}
    for key, value in q.multi_items():
        if key.startswith("filterGroupBy[") and key.endswith("]"):
            simple.setdefault(key[len("filterGroupBy[") : -1], value)
    advanced = json_param(q, "advancedMeterGroupByFilters") or {}
    if not isinstance(advanced, dict):
        raise Problem(400, "advancedMeterGroupByFilters must be a JSON object")
    # 2. Request mapping (openmeter/meter/httphandler/mapping.go).
    meter = standin.meter(id_or_slug)
    dims = meter["groupBy"]
    for key in group_by:
        if key not in ("subject", "customer_id") and key not in dims:
            raise Problem(400, f"invalid group by: {key}")
    if subjects and "subject" not in group_by:
        group_by.append("subject")
    repeated = sorted({key for key in group_by if group_by.count(key) > 1})
    if repeated:  # the server appends every groupBy to the SQL: `JSON_VALUE(...) AS user` twice fails in ClickHouse
        raise Problem(500, f"query meter: multiple expressions for alias {repeated[0]} (groupBy repeated)")
    if q.getlist("filterCustomerId"):  # the stand-in has no customers, so every id is unknown
        raise Problem(404, f"customer with id {q.getlist('filterCustomerId')[0]} not found")
    try:
        tz = ZoneInfo(tz_name or "UTC")
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise Problem(400, f"invalid time zone: unknown time zone {tz_name}") from None
    if advanced and simple:
        raise Problem(400, "advanced meter group by filters and filter group by cannot be used together")
    filters: dict[str, Any] = dict(advanced)
    for key, value in simple.items():
        if key not in dims:
            raise Problem(400, f"invalid group by filter: {key}")
        filters[key] = {"$in": [value]}
    # 3. QueryParams.Validate and the SQL builder.
    if start and end and start == end:
        raise Problem(400, "from and to cannot be equal")
    if start and end and start > end:
        raise Problem(400, "from must be before to")
    if "customer_id" in group_by:
        raise Problem(400, "customer filter is required with customer_id group by")
    depth = 1_000  # Validate() here has no depth limit (the v2 event list allows 1)
    checked = {k: check_filter(f, STRING_OPS, depth, f"invalid filter for {k}") for k, f in filters.items()}
    for key in sorted(checked):
        if key not in dims:
            raise Problem(400, f"meter does not have group by: {key}")
    return aggregate_rows(standin.rows, meter, start, end, window_size, tz, group_by, subjects, checked)


def aggregate_rows(
    rows: list[Row],
    meter: dict[str, Any],
    start: datetime | None,
    end: datetime | None,
    window_size: str | None,
    tz: ZoneInfo,
    group_by: list[str],
    subjects: list[str],
    filters: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    keep = {key: (lambda value, f=f: matches(f, value)) for key, f in filters.items()}
    groups = group_events(rows, meter, start, end, window_size, tz, group_by, subjects, keep)
    dims = [key for key in group_by if key != "subject"]
    data_rows = []
    for (window, subject, values), members in sorted(groups.items(), key=lambda item: item[0]):
        value = group_value(meter, members)
        if value is None:
            continue
        if window_size:
            window_start, window_end = format_time(window[0]), format_time(window[1])
        else:  # min/max event time rounded to the minute, replaced by the request's from/to when given
            first, last = min(r.time for r in members), max(r.time for r in members)
            window_start = format_time(start) if start else format_time(first - first % 60)
            window_end = format_time(end) if end else format_time(last - last % 60 + 60)
        data_rows.append(
            {
                "value": float(value),
                "windowStart": window_start,
                "windowEnd": window_end,
                "subject": subject if "subject" in group_by else None,
                "groupBy": dict(zip(dims, values, strict=True)),
            }
        )
    result: dict[str, Any] = {}
    if start:
        result["from"] = format_time(start)
    if end:
        result["to"] = format_time(end)
    if window_size:
        result["windowSize"] = window_size
    result["data"] = data_rows
    return result


def list_events(standin: EventStore, q: QueryParams) -> dict[str, Any]:
    limit_raw = single_param(q, "limit")
    if limit_raw is not None and not re.fullmatch(r"[+-]?\d+", limit_raw):
        raise Problem(400, f"Invalid format for parameter limit: {limit_raw!r}")
    limit = 100 if limit_raw is None else int(limit_raw)
    if not 1 <= limit <= 100:
        raise Problem(400, "limit must be between 1 and 100")
    cursor = _cursor(single_param(q, "cursor"))
    raw_filter = json_param(q, "filter") or {}
    if not isinstance(raw_filter, dict):
        raise Problem(400, "filter must be a JSON object")
    unknown = sorted(set(raw_filter) - set(EVENT_FILTER_KEYS))
    if unknown:  # stricter than the server (it ignores unknown keys): event data cannot be filtered on
        raise Problem(400, f"unsupported filter field(s): {', '.join(unknown)}")
    if raw_filter.get("customerId"):
        raise Problem(400, "customers not found in namespace (the stand-in has no customers)")
    filters: list[tuple[Any, dict[str, Any]]] = []
    subjects: list[str] | None = None  # when the filter names the subjects outright, walk only theirs
    for key in ("id", "source", "subject", "type"):
        if raw_filter.get(key) is not None:
            f = check_filter(raw_filter[key], STRING_OPS, 1, f"filter.{key}")
            filters.append((lambda row, key=key: row.event[key], f))
            if key == "subject" and ("$eq" in f or "$in" in f):
                subjects = [f["$eq"]] if "$eq" in f else list(f["$in"])
    time_below: int | None = None  # an exclusive upper bound on `time`, when the filter implies one
    for key, attr in (("time", "time"), ("ingestedAt", "ingested_at")):
        if raw_filter.get(key) is not None:
            f = check_filter(raw_filter[key], TIME_OPS, 1, f"filter.{key}", lambda s: unix(parse_rfc3339(s)))
            filters.append((lambda row, attr=attr: getattr(row, attr), f))
            if key == "time":
                time_below = upper_bound(f)
    # Newest first by (time, store row), resumed strictly below the cursor, the first `limit` matches.
    candidates = standin.rows_newest_first(cursor, time_below, subjects)
    page: list[Row] = []
    for row in candidates:
        if all(matches(f, get(row)) for get, f in filters):
            page.append(row)
            if len(page) == limit:
                break
    body: dict[str, Any] = {"items": [ingested_event(row) for row in page]}
    if page and len(page) == limit:  # only a full page gets a cursor, so a last full page is followed by []
        last = page[-1]
        body["nextCursor"] = encode_cursor(last.time, last.row_id)
    return body


def _cursor(raw: str | None) -> tuple[int, str] | None:
    try:
        return None if raw is None else decode_cursor(raw)
    except ValueError:  # includes binascii.Error and UnicodeDecodeError
        raise Problem(400, f"invalid cursor: {raw!r}") from None
