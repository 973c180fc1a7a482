"""How the real server stores events and reads them back: RFC 3339 times at second resolution, JSONPath values as
ClickHouse's JSON_VALUE returns them, tumbling windows, filters, cursors. Numbers are read as toFloat64OrNull reads
them by `openmeter/numbers.py`, the rule our own event reader uses too."""

from __future__ import annotations

import base64
import bisect
import json
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from ai_credit_usage.openmeter.numbers import to_float64_or_null
from ai_credit_usage.openmeter.standin.problems import Problem

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_PATH_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# The path's meter id or key, as the spec's request validation checks it (api/openapi.yaml `meterIdOrSlug`).
METER_ID_OR_KEY = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*|[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")
STRING_OPS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$like", "$nlike", "$ilike", "$nilike", "$gt", "$gte", "$lt", "$lte"}
)
TIME_OPS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte"})
_COMPARE = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX")
EVENT_FILTER_KEYS = ("id", "source", "subject", "type", "customerId", "time", "ingestedAt")


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


def unix(dt: datetime) -> int:
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


def compile_json_path(path: str) -> list[str | int]:
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


def json_value(data: Any, steps: list[str | int]) -> str:
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


def aggregate(aggregation: str, values: list[float | None]) -> float | None:
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


def tumble_window(t: int, size: str, tz: ZoneInfo) -> tuple[int, int]:
    """ClickHouse tumbleStart/tumbleEnd: calendar-aligned in the window time zone, not aligned to `from`."""
    local = datetime.fromtimestamp(t, tz)
    if size in ("MINUTE", "HOUR"):
        start = local.replace(second=0) if size == "MINUTE" else local.replace(minute=0, second=0)
        return unix(start), unix(start) + (60 if size == "MINUTE" else 3600)
    if size == "DAY":
        day = local.date()
        start, end = datetime.combine(day, dtime(), tz), datetime.combine(day + timedelta(days=1), dtime(), tz)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
    return unix(start), unix(end)


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


def check_filter(
    f: Any, ops: frozenset[str], depth: int, where: str, parse: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Validate like pkg/filter Validate (one operator, no '' operand, $and/$or depth); return a normalized copy."""
    if not isinstance(f, dict):
        raise Problem(400, f"{where}: a filter must be a JSON object")
    checked: dict[str, Any] = {op: operand for op, operand in f.items() if operand is not None}  # Go: null is unset
    unknown = sorted(set(checked) - ops - {"$and", "$or"})
    if unknown:  # stricter than the server (it ignores unknown JSON keys), to catch client typos
        raise Problem(400, f"{where}: unsupported filter operator {', '.join(unknown)}")
    if len(checked) > 1:
        raise Problem(400, f"{where}: filter is invalid: multiple operators are set")
    for op, operand in checked.items():
        if op in ("$and", "$or"):
            if depth <= 0:
                raise Problem(400, f"{where}: filter complexity exceeds maximum allowed depth")
            if not isinstance(operand, list):
                raise Problem(400, f"{where}: {op} must be an array")
            checked[op] = [check_filter(child, ops, depth - 1, where, parse) for child in operand]
            continue
        items = operand if op in ("$in", "$nin") else [operand]
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise Problem(400, f"{where}: bad operand for {op}")
        if "" in items:
            raise Problem(400, f"{where}: filter is invalid: format mismatch")
        if parse is not None:
            try:
                checked[op] = parse(operand)
            except ValueError as exc:
                raise Problem(400, f"{where}: {exc}") from None
    return checked


def matches(f: dict[str, Any], value: Any) -> bool:
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
    return (all if op == "$and" else any)(matches(child, value) for child in children)


@dataclass
class Row:
    """A stored event: ClickHouse keeps time/ingested_at/stored_at as whole seconds, plus a per-row ULID."""

    event: dict[str, Any]
    row_id: str
    time: int
    ingested_at: int
    stored_at: int


def descending(rows: list[Row], below: tuple[int, str] | None) -> Iterator[Row]:
    """`rows` (ascending by key) from just below `below` (exclusive) down to the oldest."""
    start = len(rows) if below is None else bisect.bisect_left(rows, below, key=row_key)
    for index in range(start - 1, -1, -1):
        yield rows[index]


def upper_bound(f: dict[str, Any]) -> int | None:
    """The exclusive upper time bound a validated time filter implies ($lt, $lte, or either inside $and)."""
    if "$lt" in f:
        return int(f["$lt"])
    if "$lte" in f:
        return int(f["$lte"]) + 1
    if "$and" in f:
        bounds = [bound for child in f["$and"] if (bound := upper_bound(child)) is not None]
        return min(bounds, default=None)
    return None


def row_key(row: Row) -> tuple[int, str]:
    return row.time, row.row_id


def encode_cursor(seconds: int, row_id: str) -> str:
    """The opaque cursor both APIs hand out: base64 of "<RFC 3339 time>,<store row id>"."""
    return base64.b64encode(f"{format_time(seconds)},{row_id}".encode()).decode()


def decode_cursor(raw: str) -> tuple[int, str]:
    """The (time, row id) a cursor names; ValueError when it is not one (each API words its own 400)."""
    when, _, row_id = base64.b64decode(raw, validate=True).decode().partition(",")  # binascii.Error is a ValueError
    if not row_id:
        raise ValueError("no delimiter")
    return unix(parse_rfc3339(when)), row_id


GroupKey = tuple[tuple[int, int], str, tuple[str, ...]]


def group_events(
    rows: list[Row],
    meter: Mapping[str, Any],
    start: datetime | None,
    end: datetime | None,
    window_size: str | None,
    tz: ZoneInfo,
    group_by: list[str],
    subjects: list[str],
    keep: Mapping[str, Callable[[str], bool]],
) -> dict[GroupKey, list[Row]]:
    """The meter query's SQL on the store, both APIs alike: the meter's events of its type (of `subjects`, if any)
    in [start, end) with the meter's eventFrom clamping `start`, each dimension's value passing its `keep` test,
    grouped by (tumbling window, subject when grouped by it, the other grouped dimensions' values)."""
    low = unix(start) if start else None
    if meter.get("eventFrom"):
        event_from = unix(parse_rfc3339(meter["eventFrom"]))
        low = event_from if low is None else max(low, event_from)
    high = unix(end) if end else None
    paths = {key: compile_json_path(path) for key, path in (meter.get("groupBy") or {}).items()}
    dims = [key for key in group_by if key != "subject"]
    groups: dict[GroupKey, list[Row]] = {}
    for row in rows:
        event, data = row.event, row.event.get("data")
        if event["type"] != meter["eventType"] or (subjects and event["subject"] not in subjects):
            continue
        if (low is not None and row.time < low) or (high is not None and row.time >= high):
            continue
        if not all(test(json_value(data, paths[key])) for key, test in keep.items()):
            continue
        window = tumble_window(row.time, window_size, tz) if window_size else (0, 0)
        subject = event["subject"] if "subject" in group_by else ""
        groups.setdefault((window, subject, tuple(json_value(data, paths[dim]) for dim in dims)), []).append(row)
    return groups


def group_value(meter: Mapping[str, Any], members: list[Row]) -> float | None:
    """The meter's aggregation over one group, values read as ClickHouse's toFloat64OrNull reads them."""
    value_path = compile_json_path(meter.get("valueProperty") or "$")
    values = [to_float64_or_null(json_value(row.event.get("data"), value_path)) for row in members]
    return aggregate(str(meter["aggregation"]).upper(), values)


def ingested_event(row: Row) -> dict[str, Any]:
    """An IngestedEvent as the server rebuilds it from ClickHouse (time at second resolution, in UTC)."""
    event = row.event
    out = {k: event[k] for k in ("specversion", "id", "source", "type", "subject")}
    out["time"] = format_time(row.time)
    if event.get("data") is not None:
        out["datacontenttype"] = "application/json"
        out["data"] = event["data"]
    return {"event": out, "ingestedAt": format_time(row.ingested_at), "storedAt": format_time(row.stored_at)}
