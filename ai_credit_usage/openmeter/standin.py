"""An in-process OpenMeter: the meter, meter-query and v2 event-list endpoints over an in-memory event store.

It follows the real Go server (see `openmeter-api.md` in the project's shared docs), not the OpenAPI spec where the two
differ: `to` is exclusive, times have second resolution, a filter object holds exactly one operator, `nextCursor` is
sent only on full pages, and so on. Two users, so the demo cannot drift from what the tests check:
- the tests serve ``OpenMeterStandIn().app`` over real HTTP (``tests.servers.serve_in_thread``), replacing OpenMeter
  only at the network boundary, and inject faults with ``fail()``;
- ``--demo`` (``ai_credit_usage.demo``) loads generated events into one and hands the production OpenMeter client an
  ``httpx2.ASGITransport`` to its app, so demo answers go through exactly the production code path.
The app may run in a server thread while tests read and mutate it from the main thread, so state sits behind a lock.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import heapq
import json
import math
import operator
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from http import HTTPStatus
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["AI_CREDITS_METER", "OpenMeterStandIn", "RecordedRequest", "format_time", "make_event", "parse_rfc3339"]

AI_CREDITS_METER: dict[str, Any] = {
    "id": "01J9ZKQX8M0000000000000000",
    "slug": "ai_credits",
    "name": "AI credits",
    "eventType": "ai_credits",
    "aggregation": "SUM",
    "valueProperty": "$.credits",
    "groupBy": {
        "tenant": "$.tenant",
        "user": "$.user",
        "module": "$.module",
        "product": "$.product",
        "skill": "$.skill",
    },
    "createdAt": "2025-01-01T00:00:00Z",
    "updatedAt": "2025-01-01T00:00:00Z",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PATH_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_STRING_OPS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$like", "$nlike", "$ilike", "$nilike", "$gt", "$gte", "$lt", "$lte"}
)
_TIME_OPS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte"})
_COMPARE = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
_AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX")
_EVENT_FILTER_KEYS = ("id", "source", "subject", "type", "customerId", "time", "ingestedAt")


def parse_rfc3339(value: str, *, allow_date_only: bool = False) -> datetime:
    """Parse like Go's RFC3339Nano: the offset is mandatory, so a naive timestamp is an error."""
    match = _RFC3339.fullmatch(value)
    try:
        if match:
            date, clock, frac, offset = match.groups()
            micros = (frac or "")[:6].ljust(6, "0")
            return datetime.fromisoformat(f"{date}T{clock}.{micros}{'+00:00' if offset == 'Z' else offset}")
        if allow_date_only and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # the oapi-codegen binder's fallback
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        pass
    raise ValueError(f"not an RFC 3339 date-time: {value!r}")


def format_time(value: datetime | int) -> str:
    """RFC 3339 in UTC with `Z`; a fraction only when non-zero (like Go's RFC3339Nano). Ints are Unix seconds."""
    dt = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else value.astimezone(UTC)
    frac = f".{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _unix(dt: datetime) -> int:
    """Whole Unix seconds, like Go's Time.Unix() and ClickHouse DateTime columns."""
    return (dt - _EPOCH) // timedelta(seconds=1)


def make_event(
    *,
    tenant: str | None,
    credits: float | str | None,
    time: datetime | str,
    user: str | None = "u1",
    module: str | None = "chat",
    product: str | None = "p1",
    skill: str | None = "s1",
    subject: str | None = None,
    type: str = "ai_credits",
    id: str | None = None,
    extra_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an AI-credit CloudEvent. A data field passed as None is left out (to test missing dimensions).

    The subject defaults to ``user-<user>``, deliberately not the tenant, so tests never rely on subject == tenant.
    """
    if isinstance(time, datetime):
        if time.tzinfo is None:
            raise ValueError("make_event(time=...) needs a timezone-aware datetime")
        time = format_time(time)
    fields = {"credits": credits, "tenant": tenant, "user": user, "module": module, "product": product, "skill": skill}
    data = {key: value for key, value in fields.items() if value is not None}
    data.update(extra_data or {})
    return {
        "specversion": "1.0",
        "id": id or f"evt-{uuid.uuid4().hex}",
        "source": "tais",
        "type": type,
        "subject": subject if subject is not None else f"user-{user}",
        "time": time,
        "data": data,
    }


def _compile_json_path(path: str) -> list[str | int]:
    """Compile the JSONPath subset ClickHouse JSON_VALUE needs here: $.a, $.a.b, $['a'], $["a"], $.a[0]."""
    if not path.startswith("$"):
        raise ValueError(f"unsupported JSONPath: {path!r}")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        match = _PATH_STEP.match(path, pos)
        if not match:
            raise ValueError(f"unsupported JSONPath: {path!r}")
        name, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, single, double) if s is not None))
        pos = match.end()
    return steps


def _json_value(data: Any, steps: list[str | int]) -> str:
    """What ClickHouse JSON_VALUE returns: a scalar as text (numbers as JSON text), '' if missing or not a scalar."""
    node = data
    for step in steps:
        if not isinstance(node, list | dict) or isinstance(step, int) != isinstance(node, list):
            return ""
        if isinstance(node, dict):
            if step not in node:
                return ""
            node = node[step]
        elif isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return ""
    if isinstance(node, str):
        return node
    return "" if isinstance(node, dict | list) else json.dumps(node)


def _to_number(text: str) -> float | None:
    """toFloat64OrNull + ifNotFinite: a number or NULL (ignored by the aggregate)."""
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    return value if math.isfinite(value) else None


def _aggregate(aggregation: str, values: list[float | None]) -> float | None:
    if aggregation == "COUNT":
        return float(len(values))
    present = [v for v in values if v is not None]
    if not present:
        return None  # a NULL aggregate: the real server skips the row
    if aggregation == "SUM":
        return sum(present)
    if aggregation == "MIN":
        return min(present)
    if aggregation == "MAX":
        return max(present)
    return sum(present) / len(present)  # AVG


def _window(t: int, size: str, tz: ZoneInfo) -> tuple[int, int]:
    """ClickHouse tumbleStart/tumbleEnd: calendar-aligned in the window time zone, not aligned to `from`."""
    local = datetime.fromtimestamp(t, tz)
    if size in ("MINUTE", "HOUR"):
        start = local.replace(second=0) if size == "MINUTE" else local.replace(minute=0, second=0)
        return _unix(start), _unix(start) + (60 if size == "MINUTE" else 3600)
    if size == "DAY":
        day = local.date()
        start, end = datetime.combine(day, dtime(), tz), datetime.combine(day + timedelta(days=1), dtime(), tz)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
    return _unix(start), _unix(end)


def _like(pattern: str, value: str) -> bool:
    """SQL LIKE: % is any run, _ is one character, a backslash escapes."""
    parts, escaped = [], False
    for ch in pattern:
        if escaped or ch not in "\\%_":
            parts.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            parts.append(".*" if ch == "%" else ".")
    return re.fullmatch("".join(parts), value, re.DOTALL) is not None


class _Problem(Exception):
    """Raised inside a handler; becomes an RFC 7807 response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _check_filter(
    f: Any, ops: frozenset[str], depth: int, where: str, parse: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Validate like pkg/filter Validate (one operator, no '' operand, $and/$or depth); return a normalized copy."""
    if not isinstance(f, dict):
        raise _Problem(400, f"{where}: a filter must be a JSON object")
    checked: dict[str, Any] = {op: operand for op, operand in f.items() if operand is not None}  # Go: null is unset
    unknown = sorted(set(checked) - ops - {"$and", "$or"})
    if unknown:  # stricter than the server (it ignores unknown JSON keys), to catch client typos
        raise _Problem(400, f"{where}: unsupported filter operator {', '.join(unknown)}")
    if len(checked) > 1:
        raise _Problem(400, f"{where}: filter is invalid: multiple operators are set")
    for op, operand in checked.items():
        if op in ("$and", "$or"):
            if depth <= 0:
                raise _Problem(400, f"{where}: filter complexity exceeds maximum allowed depth")
            if not isinstance(operand, list):
                raise _Problem(400, f"{where}: {op} must be an array")
            checked[op] = [_check_filter(child, ops, depth - 1, where, parse) for child in operand]
            continue
        items = operand if op in ("$in", "$nin") else [operand]
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise _Problem(400, f"{where}: bad operand for {op}")
        if "" in items:
            raise _Problem(400, f"{where}: filter is invalid: format mismatch")
        if parse is not None:
            try:
                checked[op] = parse(operand)
            except ValueError as exc:
                raise _Problem(400, f"{where}: {exc}") from None
    return checked


def _matches(f: dict[str, Any], value: Any) -> bool:
    """Evaluate a validated filter; an empty filter (or an empty $and/$or) matches everything, like the SQL."""
    if not f:
        return True
    ((op, operand),) = f.items()
    if op in _COMPARE:
        return bool(_COMPARE[op](value, operand))
    if op in ("$in", "$nin"):
        return (value in operand) == (op == "$in")
    if op in ("$like", "$nlike"):
        return _like(operand, value) == (op == "$like")
    if op in ("$ilike", "$nilike"):
        return _like(operand.lower(), value.lower()) == (op == "$ilike")
    children = [child for child in operand if child]
    if not children:
        return True
    return (all if op == "$and" else any)(_matches(child, value) for child in children)


def _single(q: QueryParams, name: str) -> str | None:
    values = q.getlist(name)
    if len(values) > 1:
        raise _Problem(400, f"multiple values for single value parameter '{name}'")
    return values[0] if values else None


def _time_param(q: QueryParams, name: str) -> datetime | None:
    raw = _single(q, name)
    try:
        return None if raw is None else parse_rfc3339(raw, allow_date_only=True)
    except ValueError:
        raise _Problem(400, f"Invalid format for parameter {name}: {raw!r} is not an RFC 3339 date-time") from None


def _json_param(q: QueryParams, name: str) -> Any:
    values = q.getlist(name)
    raw = values[0] if values else None  # Go reads Query().Get: the first value
    try:
        return None if raw is None else json.loads(raw)
    except json.JSONDecodeError:
        raise _Problem(400, f"Error unmarshaling parameter '{name}' as JSON") from None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it; `query` keeps repeated keys in order."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    def param(self, name: str) -> str | None:
        values = self.params(name)
        return values[0] if values else None


@dataclass
class _Fault:
    status: int
    remaining: int
    path_prefix: str
    body: bytes | None
    content_type: str
    headers: dict[str, str]
    delay: float
    skip: int = 0
    cut: bool = False
    query: tuple[tuple[str, str], ...] = ()  # only requests carrying every one of these query parameters


class _CutResponse(Response):
    """Promises a body it never finishes: the connection drops mid-response, as when a proxy or pod dies."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"items": [', "more_body": False})


@dataclass
class _Row:
    """A stored event: ClickHouse keeps time/ingested_at/stored_at as whole seconds, plus a per-row ULID."""

    event: dict[str, Any]
    row_id: str
    time: int
    ingested_at: int
    stored_at: int


class OpenMeterStandIn:
    """OpenMeter's meter, meter-query and v2 event-list endpoints over an in-memory event store.

    ``api_key=None`` disables auth. The ``ai_credits`` meter is present unless ``meters`` says otherwise.
    ``record_requests=False`` keeps no request log (``requests`` stays empty), so a long-running demo does not grow.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-openmeter-key",
        meters: Iterable[Mapping[str, Any]] = (AI_CREDITS_METER,),
        record_requests: bool = True,
    ) -> None:
        self.api_key = api_key
        self.record_requests = record_requests
        self.meters: dict[str, dict[str, Any]] = {}
        self._rows: list[_Row] = []
        self._by_time: list[_Row] | None = None  # the rows sorted by (time, row id), rebuilt after a change
        self._by_subject: dict[str, list[_Row]] | None = None  # the same, per subject
        self._seen: set[tuple[str, str]] = set()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._request_seq = 0
        self._row_seq = 0
        self.latency = 0.0  # seconds every answer takes, to stand in for a remote server (soak, benchmarks)
        self.in_flight = 0  # requests being answered right now, and the most there ever were at once
        self.max_in_flight = 0
        for meter in meters:
            self.add_meter(meter)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    # ---- test-side API -------------------------------------------------------------------------------------------

    def add_meter(self, meter: Mapping[str, Any]) -> None:
        """Register a meter (keyed by slug, also found by id); fills id/name/timestamps when absent."""
        m = copy.deepcopy(dict(meter))
        if m.get("aggregation") not in _AGGREGATIONS:
            raise NotImplementedError(
                f"the stand-in supports aggregations {_AGGREGATIONS}, not {m.get('aggregation')!r}"
            )
        if not m.get("slug") or not m.get("eventType") or (m["aggregation"] != "COUNT" and not m.get("valueProperty")):
            raise ValueError(f"a meter needs slug, eventType and (unless COUNT) valueProperty: {m}")
        for path in [*m.setdefault("groupBy", {}).values(), m.get("valueProperty") or "$"]:
            _compile_json_path(path)
        m.setdefault("id", "01J" + "".join(secrets.choice(_CROCKFORD) for _ in range(23)))
        m.setdefault("name", m["slug"])
        m.setdefault("createdAt", format_time(datetime.now(UTC).replace(microsecond=0)))
        m.setdefault("updatedAt", m["createdAt"])
        with self._lock:
            self.meters[m["slug"]] = m

    def ingest(self, *events: Mapping[str, Any], ingested_at: datetime | None = None) -> int:
        """Store CloudEvents as if ingested and processed (synchronously). Returns how many were stored.

        Like the server, a missing `time` becomes now and a repeated (source, id) pair is dropped as a duplicate.
        """
        now = ingested_at or datetime.now(UTC)
        stored = 0
        with self._lock:
            for raw in events:
                event = copy.deepcopy(dict(raw))
                missing = [key for key in ("id", "source", "type", "subject") if not event.get(key)]
                if missing:
                    raise ValueError(f"CloudEvent lacks required {missing}: {event}")
                event.setdefault("specversion", "1.0")
                if isinstance(event.get("time"), datetime):
                    event["time"] = format_time(event["time"])
                event["time"] = event.get("time") or format_time(now)
                when = _unix(parse_rfc3339(event["time"]))
                if (event["source"], event["id"]) in self._seen:
                    continue
                self._seen.add((event["source"], event["id"]))
                self._row_seq += 1
                self._rows.append(_Row(event, f"01J{self._row_seq:023d}", when, _unix(now), _unix(now)))
                self._by_time = None
                stored += 1
        return stored

    def fail(
        self,
        *,
        status: int = 500,
        times: int = 1,
        path_prefix: str = "/",
        body: bytes | None = None,
        content_type: str = "application/problem+json",
        headers: dict[str, str] | None = None,
        delay: float = 0,
        after: int = 0,
        cut: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a fault: the next `times` requests under `path_prefix` get this answer instead of the real one.

        Without `body` the answer is a problem+json for `status`, except that a 2xx status with no body means
        "answer normally", so ``fail(status=200, delay=2)`` is just a slow server. Faults apply before auth.
        `after` lets that many matching requests through first (e.g. fail the third page of a walk); `cut` drops
        the connection part-way through the response body instead of answering. `query` narrows the fault to
        requests with those query parameters (e.g. only the meter query whose `from` is a given time).
        """
        fault = _Fault(
            status, times, path_prefix, body, content_type, dict(headers or {}), delay, after, cut,
            tuple((query or {}).items()),
        )  # fmt: skip
        with self._lock:
            self._faults.append(fault)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored CloudEvents (copies) in ingestion order, `time` filled in."""
        with self._lock:
            return [copy.deepcopy(row.event) for row in self._rows]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Requests whose path starts or ends with `path`."""
        return [r for r in self.requests if r.path.startswith(path) or r.path.endswith(path)]

    def reset(self) -> None:
        """Forget events, recorded requests and pending faults (meters stay), for a server shared across tests."""
        with self._lock:
            self._rows.clear()
            self._by_time = None
            self._seen.clear()
            self._requests.clear()
            self._faults.clear()

    # ---- HTTP side -----------------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        with self._lock:
            self._request_seq += 1
            instance = f"urn:request:standin/{self._request_seq:06d}"
            query = list(request.query_params.multi_items())
            if self.record_requests:
                self._requests.append(RecordedRequest(request.method, path, query, dict(request.headers)))
            fault = next(
                (f for f in self._faults if path.startswith(f.path_prefix) and all(p in query for p in f.query)), None
            )
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, path, instance, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: Request, path: str, instance: str, fault: _Fault | None) -> Response:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.cut:
                return _CutResponse()
            if fault.body is not None:
                return Response(fault.body, fault.status, fault.headers, media_type=fault.content_type)
            if fault.status >= 300:
                return _problem(fault.status, "injected fault", instance, fault.headers)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _problem(401, "missing or invalid API token", instance)
        try:
            with self._lock:
                return JSONResponse(self._route(request.method, path, request.query_params))
        except _Problem as problem:
            return _problem(problem.status, problem.detail, instance)

    def _route(self, method: str, path: str, q: QueryParams) -> Any:
        parts = path.strip("/").split("/")
        handler: Callable[..., Any]
        if parts[:3] == ["api", "v1", "meters"] and len(parts) <= 5 and parts[4:] in ([], ["query"]):
            by_depth: dict[int, Callable[..., Any]] = {3: self._list_meters, 4: self._get_meter, 5: self._query_meter}
            handler = by_depth[len(parts)]
        elif parts == ["api", "v2", "events"]:
            handler = self._list_events
        else:
            raise _Problem(404, f"no such endpoint in the OpenMeter stand-in: {method} {path}")
        if method != "GET":
            raise _Problem(405, f"the OpenMeter stand-in only models GET on {path}")
        return handler(q, *parts[3:4])

    def _meter(self, id_or_slug: str) -> dict[str, Any]:
        meter = self.meters.get(id_or_slug) or next((m for m in self.meters.values() if m["id"] == id_or_slug), None)
        if meter is None:
            raise _Problem(404, f"meter not found: {id_or_slug}")
        return meter

    def _list_meters(self, q: QueryParams) -> list[dict[str, Any]]:
        return [self.meters[slug] for slug in sorted(self.meters)]  # the server ignores paging, orders by key

    def _get_meter(self, q: QueryParams, id_or_slug: str) -> dict[str, Any]:
        return self._meter(id_or_slug)

    def _query_meter(self, q: QueryParams, id_or_slug: str) -> dict[str, Any]:
        # 1. Parameter binding (format errors come before the meter lookup).
        start, end = _time_param(q, "from"), _time_param(q, "to")
        window_size, tz_name = _single(q, "windowSize"), _single(q, "windowTimeZone")
        if window_size is not None and window_size not in _WINDOW_SIZES:
            raise _Problem(
                400, f"Invalid format for parameter windowSize: {window_size!r} is not one of {_WINDOW_SIZES}"
            )
        group_by, subjects = list(dict.fromkeys(q.getlist("groupBy"))), q.getlist("subject")
        simple: dict[str, str] = {}
        for key, value in q.multi_items():
            if key.startswith("filterGroupBy[") and key.endswith("]"):
                simple.setdefault(key[len("filterGroupBy[") : -1], value)
        advanced = _json_param(q, "advancedMeterGroupByFilters") or {}
        if not isinstance(advanced, dict):
            raise _Problem(400, "advancedMeterGroupByFilters must be a JSON object")
        # 2. Request mapping (openmeter/meter/httphandler/mapping.go).
        meter = self._meter(id_or_slug)
        dims = meter["groupBy"]
        for key in group_by:
            if key not in ("subject", "customer_id") and key not in dims:
                raise _Problem(400, f"invalid group by: {key}")
        if subjects and "subject" not in group_by:
            group_by.append("subject")
        if q.getlist("filterCustomerId"):  # the stand-in has no customers, so every id is unknown
            raise _Problem(404, f"customer with id {q.getlist('filterCustomerId')[0]} not found")
        try:
            tz = ZoneInfo(tz_name or "UTC")
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise _Problem(400, f"invalid time zone: unknown time zone {tz_name}") from None
        if advanced and simple:
            raise _Problem(400, "advanced meter group by filters and filter group by cannot be used together")
        filters: dict[str, Any] = dict(advanced)
        for key, value in simple.items():
            if key not in dims:
                raise _Problem(400, f"invalid group by filter: {key}")
            filters[key] = {"$in": [value]}
        # 3. QueryParams.Validate and the SQL builder.
        if start and end and start == end:
            raise _Problem(400, "from and to cannot be equal")
        if start and end and start > end:
            raise _Problem(400, "from must be before to")
        if "customer_id" in group_by:
            raise _Problem(400, "customer filter is required with customer_id group by")
        depth = 1_000  # Validate() here has no depth limit (the v2 event list allows 1)
        checked = {k: _check_filter(f, _STRING_OPS, depth, f"invalid filter for {k}") for k, f in filters.items()}
        for key in sorted(checked):
            if key not in dims:
                raise _Problem(400, f"meter does not have group by: {key}")
        return self._run_query(meter, start, end, window_size, tz, group_by, subjects, checked)

    def _run_query(
        self,
        meter: dict[str, Any],
        start: datetime | None,
        end: datetime | None,
        window_size: str | None,
        tz: ZoneInfo,
        group_by: list[str],
        subjects: list[str],
        filters: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        low = _unix(start) if start else None
        if meter.get("eventFrom"):
            event_from = _unix(parse_rfc3339(meter["eventFrom"]))
            low = event_from if low is None else max(low, event_from)
        high = _unix(end) if end else None
        paths = {key: _compile_json_path(path) for key, path in meter["groupBy"].items()}
        value_path = _compile_json_path(meter.get("valueProperty") or "$")
        dims = [key for key in group_by if key != "subject"]
        groups: dict[tuple[Any, ...], list[_Row]] = {}
        for row in self._rows:
            event, data = row.event, row.event.get("data")
            if event["type"] != meter["eventType"] or (subjects and event["subject"] not in subjects):
                continue
            if (low is not None and row.time < low) or (high is not None and row.time >= high):
                continue
            if not all(_matches(f, _json_value(data, paths[key])) for key, f in filters.items()):
                continue
            window = _window(row.time, window_size, tz) if window_size else (0, 0)
            subject = event["subject"] if "subject" in group_by else ""
            key = (window, subject, tuple(_json_value(data, paths[dim]) for dim in dims))
            groups.setdefault(key, []).append(row)
        data_rows = []
        for (window, subject, values), rows in sorted(groups.items(), key=lambda item: item[0]):
            value = _aggregate(
                meter["aggregation"], [_to_number(_json_value(r.event.get("data"), value_path)) for r in rows]
            )
            if value is None:
                continue
            if window_size:
                window_start, window_end = format_time(window[0]), format_time(window[1])
            else:  # min/max event time rounded to the minute, replaced by the request's from/to when given
                first, last = min(r.time for r in rows), max(r.time for r in rows)
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

    def _list_events(self, q: QueryParams) -> dict[str, Any]:
        limit_raw = _single(q, "limit")
        if limit_raw is not None and not re.fullmatch(r"[+-]?\d+", limit_raw):
            raise _Problem(400, f"Invalid format for parameter limit: {limit_raw!r}")
        limit = 100 if limit_raw is None else int(limit_raw)
        if not 1 <= limit <= 100:
            raise _Problem(400, "limit must be between 1 and 100")
        cursor = _decode_cursor(_single(q, "cursor"))
        raw_filter = _json_param(q, "filter") or {}
        if not isinstance(raw_filter, dict):
            raise _Problem(400, "filter must be a JSON object")
        unknown = sorted(set(raw_filter) - set(_EVENT_FILTER_KEYS))
        if unknown:  # stricter than the server (it ignores unknown keys): event data cannot be filtered on
            raise _Problem(400, f"unsupported filter field(s): {', '.join(unknown)}")
        if raw_filter.get("customerId"):
            raise _Problem(400, "customers not found in namespace (the stand-in has no customers)")
        filters: list[tuple[Any, dict[str, Any]]] = []
        subjects: list[str] | None = None  # when the filter names the subjects outright, walk only theirs
        for key in ("id", "source", "subject", "type"):
            if raw_filter.get(key) is not None:
                f = _check_filter(raw_filter[key], _STRING_OPS, 1, f"filter.{key}")
                filters.append((lambda row, key=key: row.event[key], f))
                if key == "subject" and ("$eq" in f or "$in" in f):
                    subjects = [f["$eq"]] if "$eq" in f else list(f["$in"])
        time_below: int | None = None  # an exclusive upper bound on `time`, when the filter implies one
        for key, attr in (("time", "time"), ("ingestedAt", "ingested_at")):
            if raw_filter.get(key) is not None:
                f = _check_filter(raw_filter[key], _TIME_OPS, 1, f"filter.{key}", lambda s: _unix(parse_rfc3339(s)))
                filters.append((lambda row, attr=attr: getattr(row, attr), f))
                if key == "time":
                    time_below = _upper_bound(f)
        # Newest first by (time, store row), resumed strictly below the cursor, the first `limit` matches. Walking
        # time-sorted indexes (all rows, or per subject like ClickHouse's sort key) keeps paging a large store fast.
        below = cursor
        if time_below is not None and (below is None or (time_below, "") < below):
            below = (time_below, "")
        if subjects is None:
            candidates = _descending(self._rows_by_time(), below)
        else:
            by_subject = self._rows_by_subject()
            walks = [_descending(by_subject.get(subject, []), below) for subject in dict.fromkeys(subjects)]
            candidates = heapq.merge(*walks, key=_row_key, reverse=True)
        page: list[_Row] = []
        for row in candidates:
            if all(_matches(f, get(row)) for get, f in filters):
                page.append(row)
                if len(page) == limit:
                    break
        body: dict[str, Any] = {"items": [_ingested_event(row) for row in page]}
        if page and len(page) == limit:  # only a full page gets a cursor, so a last full page is followed by []
            last = page[-1]
            body["nextCursor"] = base64.b64encode(f"{format_time(last.time)},{last.row_id}".encode()).decode()
        return body

    def _rows_by_time(self) -> list[_Row]:
        """The rows in ascending (time, row id) order; called with the lock held."""
        if self._by_time is None:
            self._by_time = sorted(self._rows, key=_row_key)
            self._by_subject = None
        return self._by_time

    def _rows_by_subject(self) -> dict[str, list[_Row]]:
        """Per subject, the rows in ascending (time, row id) order; called with the lock held."""
        by_time = self._rows_by_time()
        if self._by_subject is None:
            self._by_subject = {}
            for row in by_time:
                self._by_subject.setdefault(row.event["subject"], []).append(row)
        return self._by_subject


def _descending(rows: list[_Row], below: tuple[int, str] | None) -> Iterator[_Row]:
    """`rows` (ascending by key) from just below `below` (exclusive) down to the oldest."""
    start = len(rows) if below is None else bisect.bisect_left(rows, below, key=_row_key)
    for index in range(start - 1, -1, -1):
        yield rows[index]


def _upper_bound(f: dict[str, Any]) -> int | None:
    """The exclusive upper time bound a validated time filter implies ($lt, $lte, or either inside $and)."""
    if "$lt" in f:
        return int(f["$lt"])
    if "$lte" in f:
        return int(f["$lte"]) + 1
    if "$and" in f:
        bounds = [bound for child in f["$and"] if (bound := _upper_bound(child)) is not None]
        return min(bounds, default=None)
    return None


def _row_key(row: _Row) -> tuple[int, str]:
    return row.time, row.row_id


def _decode_cursor(raw: str | None) -> tuple[int, str] | None:
    """Decode the opaque base64 "<RFC 3339 time>,<store row id>" cursor."""
    if raw is None:
        return None
    try:
        when, _, row_id = base64.b64decode(raw, validate=True).decode().partition(",")
        if not row_id:
            raise ValueError("no delimiter")
        return _unix(parse_rfc3339(when)), row_id
    except ValueError:  # includes binascii.Error and UnicodeDecodeError
        raise _Problem(400, f"invalid cursor: {raw!r}") from None


def _ingested_event(row: _Row) -> dict[str, Any]:
    """An IngestedEvent as the server rebuilds it from ClickHouse (time at second resolution, in UTC)."""
    event = row.event
    out = {k: event[k] for k in ("specversion", "id", "source", "type", "subject")}
    out["time"] = format_time(row.time)
    if event.get("data") is not None:
        out["datacontenttype"] = "application/json"
        out["data"] = event["data"]
    return {"event": out, "ingestedAt": format_time(row.ingested_at), "storedAt": format_time(row.stored_at)}


def _problem(status: int, detail: str, instance: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 7807 body like Go's StatusProblem (which omits `detail` on 500)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = ""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail and status != 500:
        body["detail"] = detail
    body["instance"] = instance
    return JSONResponse(body, status, headers, media_type="application/problem+json")
