"""OpenMeter's v3 API in the stand-in (Kong Konnect Metering & Billing): `/openmeter/meters[/{meterId}[/query]]`
and `/openmeter/events`, under `/api/v3` (self-hosted) or `/v3` (Konnect).

It follows `api/v3/openapi.yaml` and the Go handlers (see `openmeter-v3.md` in the project's shared docs): meters
are addressed by upper-case ULID only (anything else in the path is a 404), the query is a POST whose body rejects
unknown fields, values are decimal strings, a filter object holds one operator, the events cursor comes only on full
pages, `oeq` takes at most 50 comma-separated values, a repeated query key is a 400, a time filter takes one operator
(Konnect's spec, stricter than upstream's parser), and errors come in two shapes:
`BaseAPIError` for validation and binding, the v1 problem for the handlers' domain errors. The store is the same
as the v1 routes', so the same events give the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ai_credit_usage.openmeter.standin.problems import ApiError, InvalidParameter, Problem
from ai_credit_usage.openmeter.standin.store import (
    Row,
    decode_cursor,
    encode_cursor,
    format_time,
    group_events,
    group_value,
    parse_rfc3339,
    row_key,
    unix,
)
from ai_credit_usage.openmeter.standin.wire import EventStore, Handler, StandInRequest

V3_BASES = (["api", "v3"], ["v3"])  # self-hosted OpenMeter mounts v3 at /api/v3; Konnect's base URL ends in /v3
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")  # upper case only (spec: ULID)
GRANULARITIES = {"PT1M": "MINUTE", "PT1H": "HOUR", "P1D": "DAY", "P1M": "MONTH"}
QUERY_FIELDS = frozenset({"from", "to", "granularity", "time_zone", "group_by_dimensions", "filters"})
DIMENSION_OPS = frozenset({"exists", "eq", "neq", "in", "nin", "contains", "ncontains", "and", "or"})
STRING_FIELD_OPS = frozenset({"eq", "neq", "contains", "oeq", "ocontains", "gt", "gte", "lt", "lte", "exists"})
TIME_FIELD_OPS = frozenset({"eq", "gt", "gte", "lt", "lte"})
EVENT_FILTERS = {
    "id": STRING_FIELD_OPS,
    "source": STRING_FIELD_OPS,
    "subject": STRING_FIELD_OPS,
    "type": STRING_FIELD_OPS,
    "customer_id": frozenset({"eq", "oeq"}),
    "time": TIME_FIELD_OPS,
    "ingested_at": TIME_FIELD_OPS,
    "stored_at": TIME_FIELD_OPS,
}
METER_FILTERS = {"key": STRING_FIELD_OPS, "name": STRING_FIELD_OPS}
MAX_LIST_VALUES = 50  # oeq / ocontains
MAX_VALUE_BYTES = 1024
_DEEP_KEY = re.compile(r"^(filter|page)\[([^\[\]]*)\](?:\[([^\[\]]*)\])?$")
_EVENT_SORTS = {"time": "time", "ingested_at": "ingested_at", "stored_at": "stored_at"}


def route(standin: EventStore, request: StandInRequest) -> Handler | None:
    rest = under_base(request.parts)
    if rest is None:
        return None
    handler: Handler
    method = "GET"
    if rest == ["meters"]:
        handler = lambda: list_meters(standin, request)  # noqa: E731
    elif len(rest) == 2 and rest[0] == "meters":
        handler = lambda: get_meter(standin, rest[1])  # noqa: E731
    elif len(rest) == 3 and rest[0] == "meters" and rest[2] == "query":
        method = "POST"
        handler = lambda: query_meter(standin, rest[1], request.body)  # noqa: E731
    elif rest == ["events"]:
        handler = lambda: list_events(standin, request)  # noqa: E731
    else:
        raise ApiError(404, "The requested route was not found")
    if request.method != method:
        raise ApiError(405, "The requested method is not allowed")
    return handler


def under_base(parts: list[str]) -> list[str] | None:
    for base in V3_BASES:
        if parts[: len(base)] == base and parts[len(base) : len(base) + 1] == ["openmeter"]:
            return parts[len(base) + 1 :]
    return None


# ---- meters ---------------------------------------------------------------------------------------------------------


def meter_v3(meter: dict[str, Any]) -> dict[str, Any]:
    """A stored meter (v1 spelling) as v3's `Meter`: snake_case, lower-case aggregation, `dimensions`."""
    out: dict[str, Any] = {
        "id": meter["id"],
        "name": meter.get("name") or meter["slug"],
        "created_at": meter["createdAt"],
        "updated_at": meter["updatedAt"],
        "key": meter["slug"],
        "aggregation": str(meter["aggregation"]).lower(),
        "event_type": meter["eventType"],
        "labels": {},
    }
    if meter.get("description"):
        out["description"] = meter["description"]
    if meter.get("eventFrom"):
        out["events_from"] = meter["eventFrom"]
    if meter.get("valueProperty"):
        out["value_property"] = meter["valueProperty"]
    out["dimensions"] = meter.get("groupBy") or None  # `&source.GroupBy`: a meter without any serializes as null
    return out


def list_meters(standin: EventStore, request: StandInRequest) -> dict[str, Any]:
    filters, page = deep_params(request, METER_FILTERS, {"size", "number"}, depth=2)
    size = int_param(page, "size", 20, minimum=0)
    number = int_param(page, "number", 1, minimum=1)
    meters = [meter_v3(m) for m in standin.meters.values()]
    for field, ops in filters.items():
        meters = [m for m in meters if all(string_matches(op, value, str(m.get(field, ""))) for op, value in ops)]
    total = len(meters)
    chosen = meters[(number - 1) * size : number * size]
    return {"data": chosen, "meta": {"page": {"size": size, "number": number, "total": total}}}


def find_meter(standin: EventStore, meter_id: str) -> dict[str, Any]:
    """The meter with this ULID. A path that is not an upper-case ULID fails path validation: 404, in
    BaseAPIError's words (`oasmiddleware/hook.go`), not 400; an unknown ULID is the handler's 404 problem."""
    if not ULID.match(meter_id):
        raise ApiError(404, "The requested entity was not found")
    meter = next((m for m in standin.meters.values() if m["id"] == meter_id), None)
    if meter is None:
        raise Problem(404, f"meter not found: {meter_id}")
    return meter


def get_meter(standin: EventStore, meter_id: str) -> dict[str, Any]:
    return meter_v3(find_meter(standin, meter_id))


# ---- the meter query --------------------------------------------------------------------------------------------


def query_meter(standin: EventStore, meter_id: str, raw_body: bytes) -> dict[str, Any]:
    # The request validator checks the path, then the body; only then does the handler look the meter up.
    if not ULID.match(meter_id):
        raise ApiError(404, "The requested entity was not found")
    body = _query_body(raw_body)
    meter = find_meter(standin, meter_id)
    start, end = _body_time(body, "from"), _body_time(body, "to")
    granularity = body.get("granularity")
    tz_name = body.get("time_zone", "UTC")
    group_by = list(dict.fromkeys(body.get("group_by_dimensions") or []))
    dimension_filters: dict[str, Any] = (body.get("filters") or {}).get("dimensions") or {}
    # The handler's checks (api/v3/handlers/meters/query/params.go), domain errors in the v1 problem shape.
    try:
        tz = ZoneInfo(tz_name)
    except (KeyError, ValueError, OSError):
        raise _invalid(400, "invalid_time_zone", f"invalid time zone: {tz_name}", "time_zone") from None
    dims = meter.get("groupBy") or {}
    for key in group_by:
        if key not in ("subject", "customer_id") and key not in dims:
            raise _invalid(400, "invalid_group_by", f"invalid group by dimension: {key}", "group_by_dimensions")
    filters: dict[str, Callable[[str], bool]] = {}
    subjects: list[str] = []
    for key, item in dimension_filters.items():
        ops = _one_operator(key, item)
        if key == "customer_id":
            if set(ops) - {"eq", "in"}:
                raise _invalid(400, "unsupported_filter_operator", "customer_id supports only eq and in", key)
            raise _invalid(404, "customer_not_found", "customer not found (the stand-in has no customers)", key)
        if key == "subject":
            if set(ops) - {"eq", "in"}:
                raise _invalid(400, "unsupported_filter_operator", "subject supports only eq and in", key)
            subjects = [ops["eq"]] if "eq" in ops else list(ops["in"])
            if "subject" not in group_by:
                group_by.append("subject")
            continue
        if key not in dims:
            raise _invalid(400, "invalid_dimension_filter", f"invalid dimension filter: {key}", key)
        filters[key] = _dimension_predicate(ops)
    if "customer_id" in group_by:
        raise Problem(400, "customer filter is required with customer_id group by")
    if start and end and start == end:
        raise Problem(400, "from and to cannot be equal")
    if start and end and start > end:
        raise Problem(400, "from must be before to")
    window_size = GRANULARITIES.get(granularity or "")
    data = _aggregate(standin.rows, meter, start, end, window_size, tz, group_by, subjects, filters)
    result: dict[str, Any] = {}
    if "from" in body:
        result["from"] = body["from"]
    if "to" in body:
        result["to"] = body["to"]
    if granularity is None:  # each group's from/to are the request's, when it gave them (clickhouse/connector.go)
        for row in data:
            row["from"] = body.get("from", row["from"])
            row["to"] = body.get("to", row["to"])
    result["data"] = data
    return result


def _query_body(raw: bytes) -> dict[str, Any]:
    """The body as kin-openapi validates it against MeterQueryRequest (additionalProperties: false throughout)."""
    try:
        body = json.loads(raw or b"null")
    except json.JSONDecodeError:
        raise ApiError.bad_request(InvalidParameter("body", "request body is not valid JSON", "body")) from None
    if not isinstance(body, dict):
        raise ApiError.bad_request(_body("body", "must be an object", "type"))
    invalid = [
        _body(key, f"property {key!r} is unsupported", "additionalProperties")
        for key in sorted(set(body) - QUERY_FIELDS)
    ]
    if "granularity" in body and body["granularity"] not in GRANULARITIES:
        choices = ", ".join(GRANULARITIES)
        invalid.append(_body("granularity", f"value is not one of the allowed values [{choices}]", "enum"))
    if "time_zone" in body and not isinstance(body["time_zone"], str):
        invalid.append(_body("time_zone", "value must be a string", "type"))
    group_by = body.get("group_by_dimensions", [])
    if not isinstance(group_by, list) or not all(isinstance(item, str) for item in group_by):
        invalid.append(_body("group_by_dimensions", "value must be an array of strings", "type"))
    elif len(group_by) > 100:
        invalid.append(_body("group_by_dimensions", "maximum number of items is 100", "maxItems"))
    filters = body.get("filters", {})
    if not isinstance(filters, dict):
        invalid.append(_body("filters", "value must be an object", "type"))
    else:
        for key in sorted(set(filters) - {"dimensions"}):
            invalid.append(_body(f"filters.{key}", f"property {key!r} is unsupported", "additionalProperties"))
        dimensions = filters.get("dimensions", {})
        if not isinstance(dimensions, dict):
            invalid.append(_body("filters.dimensions", "value must be an object", "type"))
        elif len(dimensions) > 10:
            invalid.append(_body("filters.dimensions", "maximum number of properties is 10", "maxProperties"))
        else:
            for name, item in dimensions.items():
                invalid += _filter_item_problems(f"filters.dimensions.{name}", item, nested=False)
    for name in ("from", "to"):
        if name in body:
            try:
                _rfc3339(body[name])
            except ValueError:
                invalid.append(_body(name, 'string doesn\'t match the format "date-time"', "format"))
    if invalid:
        raise ApiError.bad_request(*invalid)
    return body


def _filter_item_problems(where: str, item: Any, *, nested: bool) -> list[InvalidParameter]:
    """QueryFilterStringMapItem (or QueryFilterString inside and/or: no `exists`), as the schema checks it."""
    if not isinstance(item, dict):
        return [_body(where, "value must be an object", "type")]
    allowed = DIMENSION_OPS - ({"exists"} if nested else set())
    problems = [
        _body(f"{where}.{op}", f"property {op!r} is unsupported", "additionalProperties")
        for op in sorted(set(item) - allowed)
    ]
    for op, operand in item.items():
        if op in ("eq", "neq", "contains", "ncontains") and not isinstance(operand, str):
            problems.append(_body(f"{where}.{op}", "value must be a string", "type"))
        elif op == "exists" and not isinstance(operand, bool):
            problems.append(_body(f"{where}.{op}", "value must be a boolean", "type"))
        elif op in ("in", "nin"):
            if not isinstance(operand, list) or not all(isinstance(v, str) for v in operand):
                problems.append(_body(f"{where}.{op}", "value must be an array of strings", "type"))
            elif not 1 <= len(operand) <= 100:
                problems.append(_body(f"{where}.{op}", "between 1 and 100 items", "minItems"))
        elif op in ("and", "or"):
            if not isinstance(operand, list) or not 1 <= len(operand) <= 10:
                problems.append(_body(f"{where}.{op}", "an array of 1 to 10 filters", "type"))
            else:
                for index, child in enumerate(operand):
                    problems += _filter_item_problems(f"{where}.{op}[{index}]", child, nested=True)
    return problems


def _body(field: str, reason: str, rule: str) -> InvalidParameter:
    return InvalidParameter(field, reason, "body", rule)


def _one_operator(key: str, item: dict[str, Any], depth: int = 2) -> dict[str, Any]:
    """pkg/filter Validate: exactly one operator, no empty string, and/or nested at most `depth` deep."""
    if len(item) != 1:
        reason = "multiple operators are set" if item else "no operator is set"
        raise Problem(400, f'dimension filter "{key}": filter is invalid: {reason}')
    ((op, operand),) = item.items()
    values = operand if isinstance(operand, list) and op in ("in", "nin") else [operand]
    if any(value == "" for value in values):
        raise Problem(400, f'dimension filter "{key}": filter is invalid: format mismatch')
    if op in ("and", "or"):
        if depth <= 0:
            raise Problem(400, f'dimension filter "{key}": filter complexity exceeds maximum allowed depth')
        for child in operand:
            _one_operator(key, child, depth - 1)
    return item


def _dimension_predicate(item: dict[str, Any]) -> Callable[[str], bool]:
    ((op, operand),) = item.items()
    if op == "eq":
        return lambda value: value == operand
    if op == "neq":
        return lambda value: value != operand
    if op == "in":
        return lambda value: value in operand
    if op == "nin":
        return lambda value: value not in operand
    if op == "contains":  # LIKE %v% (api/v3/request/filter.go)
        return lambda value: operand in value
    if op == "ncontains":
        return lambda value: operand not in value
    if op == "exists":
        return lambda value: (value != "") == operand
    children = [_dimension_predicate(child) for child in operand]
    if op == "and":
        return lambda value: all(child(value) for child in children)
    return lambda value: any(child(value) for child in children)


def _invalid(status: int, code: str, message: str, field: str) -> Problem:
    issue = {"code": code, "message": message, "field": field, "severity": "error"}
    return Problem(status, message, validation_errors=[issue])


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return parse_rfc3339(value)  # the offset is required; a date alone is refused


def _body_time(body: dict[str, Any], name: str) -> datetime | None:
    return _rfc3339(body[name]) if name in body else None


def _aggregate(
    rows: list[Row],
    meter: dict[str, Any],
    start: datetime | None,
    end: datetime | None,
    window_size: str | None,
    tz: ZoneInfo,
    group_by: list[str],
    subjects: list[str],
    filters: dict[str, Callable[[str], bool]],
) -> list[dict[str, Any]]:
    """The same ClickHouse semantics as the v1 query (events_from clamps `from`, `to` exclusive, the dimension
    filters on each event, NULL aggregates dropped); rows in v3's shape."""
    grouped = group_events(rows, meter, start, end, window_size, tz, group_by, subjects, filters)
    dims = [key for key in group_by if key != "subject"]
    out = []
    # With a granularity the SQL orders by window start only; without one it has no ORDER BY. The stand-in sorts
    # the groups the other way round inside that, so a client that relies on an order it was not promised fails.
    ordered = sorted(grouped.items(), key=lambda item: item[0][1:], reverse=True)
    ordered.sort(key=lambda item: item[0][0])
    for (window, subject, values), members in ordered:
        value = group_value(meter, members)
        if value is None:
            continue
        if window_size:
            bounds = (_local_time(window[0], tz), _local_time(window[1], tz))
        else:
            first, last = min(r.time for r in members), max(r.time for r in members)
            bounds = (format_time(first - first % 60), format_time(last - last % 60 + 60))
        dimensions = {"subject": subject} if "subject" in group_by else {}
        dimensions.update(zip(dims, values, strict=True))  # a dimension missing in the event is "", not absent
        out.append({"value": numeric(value), "from": bounds[0], "to": bounds[1], "dimensions": dimensions})
    return out


def _local_time(seconds: int, tz: ZoneInfo) -> str:
    """A window bound as Go writes a time in the query's zone: RFC 3339 with that zone's offset (`Z` for UTC)."""
    local = datetime.fromtimestamp(seconds, tz)
    text = local.isoformat()
    return text.replace("+00:00", "Z") if tz.key == "UTC" else text


def numeric(value: float) -> str:
    """v3's `Numeric`: alpacadecimal.NewFromFloat(v).String(), the shortest decimal that reads back as `v`, never in
    exponent form (`^-?[0-9]+(\\.[0-9]+)?$`)."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# ---- events -------------------------------------------------------------------------------------------------------


def list_events(standin: EventStore, request: StandInRequest) -> dict[str, Any]:
    filters, page = deep_params(request, EVENT_FILTERS, {"size", "after", "before"}, depth=1)
    for field in ("time", "ingested_at", "stored_at"):
        # Upstream's parser ANDs several operators, but Konnect's published schema for these filters is a `oneOf` of
        # single-operator objects, so its gateway refuses `filter[time][gte]=…&filter[time][lt]=…`: so do we.
        if len(filters.get(field, [])) > 1:
            reason = "doesn't match any schema: one operator only (eq, gt, gte, lt or lte)"
            raise ApiError.bad_request(InvalidParameter(f"filter[{field}]", reason, "query"))
    if "before" in page:
        raise ApiError.bad_request(InvalidParameter("page[before]", "backward pagination is not supported", "query"))
    size = int_param(page, "size", 20, minimum=1, maximum=100)
    cursor = _cursor(page.get("after"))
    sort_field, ascending = _sort(request)
    if "customer_id" in filters:
        raise Problem(400, "customers not found in namespace (the stand-in has no customers)")
    checks: list[Callable[[Row], bool]] = []
    subjects: list[str] | None = None
    time_below: int | None = None
    for field, ops in filters.items():
        if field in ("time", "ingested_at", "stored_at"):
            for op, raw in ops:
                try:
                    bound = unix(parse_rfc3339(raw))
                except ValueError:
                    raise ApiError.bad_request(
                        InvalidParameter(f"filter[{field}][{op}]", "must be an RFC 3339 date-time", "query")
                    ) from None
                checks.append(_time_check(field, op, bound))
                if field == "time" and op in ("lt", "lte"):
                    limit = bound if op == "lt" else bound + 1
                    time_below = limit if time_below is None else min(time_below, limit)
            continue
        for op, value in ops:
            checks.append(_string_check(field, op, value))
            if field == "subject" and op in ("eq", "oeq"):
                named = [value] if op == "eq" else _comma_list(value)
                subjects = named if subjects is None else [s for s in subjects if s in named]
    if sort_field != "time" or ascending:  # the rarely used orders: a plain sort over every match

        def key(row: Row) -> tuple[int, str]:
            return getattr(row, sort_field), row.row_id

        matching = sorted((row for row in standin.rows if all(check(row) for check in checks)), key=key)
        if not ascending:
            matching.reverse()
        if cursor is not None:
            matching = [r for r in matching if (key(r) > cursor if ascending else key(r) < cursor)]
        chosen = matching[:size]
        sort_key = key
    else:  # newest first by (time, store row), like ClickHouse's sort key: walk the time-sorted indexes
        candidates = standin.rows_newest_first(cursor, time_below, subjects)
        chosen = []
        for row in candidates:
            if all(check(row) for check in checks):
                chosen.append(row)
                if len(chosen) == size:
                    break
        sort_key = row_key
    meta: dict[str, Any] = {"size": size, "next": None, "previous": None}
    if chosen:
        meta["first"], meta["last"] = encode_cursor(*sort_key(chosen[0])), encode_cursor(*sort_key(chosen[-1]))
        if len(chosen) == size:  # the cursor only on a full page (api/v3/response/cursorpagination.go)
            meta["next"] = meta["last"]
    return {"data": [_ingested_event(row) for row in chosen], "meta": {"page": meta}}


def _ingested_event(row: Row) -> dict[str, Any]:
    event = row.event
    out: dict[str, Any] = {k: event[k] for k in ("id", "source", "type", "subject")}
    out["specversion"] = "1.0"
    out["time"] = format_time(row.time)
    if event.get("data") is not None:
        out["datacontenttype"] = "application/json"
        out["data"] = event["data"]
    return {"event": out, "ingested_at": format_time(row.ingested_at), "stored_at": format_time(row.stored_at)}


def _string_check(field: str, op: str, value: str) -> Callable[[Row], bool]:
    return lambda row: string_matches(op, value, row.event[field])


def _time_check(field: str, op: str, bound: int) -> Callable[[Row], bool]:
    compare: dict[str, Callable[[int], bool]] = {
        "eq": lambda t: t == bound,
        "gt": lambda t: t > bound,
        "gte": lambda t: t >= bound,
        "lt": lambda t: t < bound,
        "lte": lambda t: t <= bound,
    }
    test = compare[op]
    return lambda row: test(getattr(row, field))


def _cursor(raw: str | None) -> tuple[int, str] | None:
    try:
        return None if raw is None else decode_cursor(raw)
    except ValueError:
        raise ApiError.bad_request(InvalidParameter("page[after]", "invalid cursor", "query")) from None


def _sort(request: StandInRequest) -> tuple[str, bool]:
    raw = request.query.get("sort")
    if raw is None:
        return "time", False
    field, _, direction = raw.strip().partition(" ")
    if field not in _EVENT_SORTS or direction.strip() not in ("", "asc", "desc"):
        supported = ", ".join(_EVENT_SORTS)
        raise ApiError.bad_request(InvalidParameter("sort", f"unsupported sort field, supported: {supported}", "query"))
    return _EVENT_SORTS[field], direction.strip() == "asc"  # events sort descending unless told `asc`


# ---- the deepObject query conventions (api/v3/filters.Parse, page params) ---------------------------------------


def deep_params(
    request: StandInRequest, fields: dict[str, frozenset[str]], page_keys: set[str], *, depth: int
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """`filter[f]=v` (eq) and `filter[f][op]=v` per field, and `page[x]`; a repeated key, an unknown field, page
    key or operator, a value over 1024 bytes is a 400. Several operators on one field are ANDed; `depth` is the
    filter complexity the service allows (events: 1, meters: 2)."""
    items = request.query.multi_items()
    keys = [key for key, _ in items]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ApiError.bad_request(
            *(InvalidParameter(key, "repeated query parameter not allowed", "query") for key in repeated)
        )
    filters: dict[str, list[tuple[str, str]]] = {}
    page: dict[str, str] = {}
    for key, value in items:
        match = _DEEP_KEY.match(key)
        if match is None:
            continue  # other query parameters (e.g. `sort`) are the endpoint's own
        kind, name, op = match.groups()
        if kind == "page":
            if op is not None or name not in page_keys:
                raise ApiError.bad_request(InvalidParameter(key, "unknown page parameter", "query"))
            page[name] = value
            continue
        if name not in fields:
            raise ApiError.bad_request(InvalidParameter("filter", f"unknown filter field(s): {name}", "query"))
        operator = op if op is not None else ("exists" if value == "" and "exists" in fields[name] else "eq")
        if operator not in fields[name]:
            raise ApiError.bad_request(InvalidParameter(key, f"unsupported filter operator: {operator}", "query"))
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise ApiError.bad_request(InvalidParameter(key, "value is longer than 1024 bytes", "query"))
        if value == "" and operator != "exists":
            raise Problem(400, f"filter[{name}]: filter is invalid: format mismatch")
        if operator in ("oeq", "ocontains") and len(_comma_list(value)) > MAX_LIST_VALUES:
            raise ApiError.bad_request(InvalidParameter(key, f"at most {MAX_LIST_VALUES} values", "query"))
        filters.setdefault(name, []).append((operator, value))
    for name, ops in filters.items():  # an `ocontains` (an $or) inside the $and of several operators: depth 2
        if depth < 2 and len(ops) > 1 and any(op == "ocontains" for op, _ in ops):
            raise Problem(400, f"filter[{name}]: filter complexity exceeds maximum allowed depth")
    return filters, page


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def string_matches(op: str, value: str, actual: str) -> bool:
    if op == "eq":
        return actual == value
    if op == "neq":
        return actual != value
    if op == "oeq":
        return actual in _comma_list(value)
    if op == "contains":  # case-insensitive
        return value.lower() in actual.lower()
    if op == "ocontains":
        return any(part.lower() in actual.lower() for part in _comma_list(value))
    if op == "exists":
        return value.lower() not in ("false", "0") and actual != ""
    return {"gt": actual > value, "gte": actual >= value, "lt": actual < value, "lte": actual <= value}[op]


def int_param(page: dict[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = page.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[+-]?\d+", raw):
        raise ApiError.bad_request(InvalidParameter(f"page[{name}]", "must be an integer", "query"))
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError.bad_request(InvalidParameter(f"page[{name}]", f"must be {bounds}", "query"))
    return value
