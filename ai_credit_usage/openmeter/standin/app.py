"""The stand-in's app and its test-side API: an in-memory event store behind the routes of one OpenMeter API.

Which paths it answers is up to its routers (``v1.route`` today); everything they share (the store, the request
log, faults, auth) lives here. The app may run in a server thread while tests read and mutate it from the main
thread, so state sits behind a lock and routers are called with it held.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ai_credit_usage.openmeter.standin.credits_v3 import CreditsV3StandIn
from ai_credit_usage.openmeter.standin.entitlements import EntitlementsStandIn
from ai_credit_usage.openmeter.standin.problems import ApiError, Problem, api_error_response, problem_response
from ai_credit_usage.openmeter.standin.store import (
    AGGREGATIONS,
    CROCKFORD,
    Row,
    compile_json_path,
    descending,
    format_time,
    parse_rfc3339,
    row_key,
    unix,
)
from ai_credit_usage.openmeter.standin.v1 import route as v1_route
from ai_credit_usage.openmeter.standin.v3 import V3_BASES
from ai_credit_usage.openmeter.standin.v3 import route as v3_route
from ai_credit_usage.openmeter.standin.wire import (
    CutResponse,
    EventStore,
    Fault,
    Handler,
    RecordedRequest,
    StandInRequest,
)

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

# A router looks at a request and returns the handler that answers it (called with the lock held), or None.
Router = Callable[[EventStore, StandInRequest], Handler | None]
API_ROUTERS: dict[str, Router] = {"v1": v1_route, "v3": v3_route}


class OpenMeterStandIn:
    """OpenMeter's meter, meter-query and v2 event-list endpoints over an in-memory event store.

    ``api_key=None`` disables auth. The ``ai_credits`` meter is present unless ``meters`` says otherwise.
    ``record_requests=False`` keeps no request log (``requests`` stays empty), so a long-running demo does not grow.
    ``api="v3"`` serves OpenMeter's v3 API (as Kong Konnect does: only v3, so the v1 paths answer 404) under
    ``/api/v3`` (self-hosted OpenMeter's base) and ``/v3`` (Konnect's); ``base_path`` is where its clients point.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-openmeter-key",
        meters: Iterable[Mapping[str, Any]] = (AI_CREDITS_METER,),
        record_requests: bool = True,
        routers: Sequence[Router] | None = None,
        api: str = "v1",
    ) -> None:
        if api not in API_ROUTERS:
            raise ValueError(f"the stand-in serves {sorted(API_ROUTERS)}, not {api!r}")
        self.api = api
        self.base_path = "/" + "/".join(V3_BASES[0]) if api == "v3" else ""
        self.api_key = api_key
        self.record_requests = record_requests
        self.meters: dict[str, dict[str, Any]] = {}
        self.rows: list[Row] = []  # in ingestion order
        self._by_time: list[Row] | None = None  # the rows sorted by (time, row id), rebuilt after a change
        self._by_subject: dict[str, list[Row]] | None = None  # the same, per subject
        self._seen: set[tuple[str, str]] = set()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        # Customers, entitlements and grants (`/api/v2/customers/…/entitlements…`), over the same events: served
        # beside the v1 paths only (v3 has no v2 paths; its credits are `self.credits`).
        self.entitlements = EntitlementsStandIn(self._lock)
        # v3's customers, credits ledger and entitlement value, over the same customers and events: beside the v3
        # paths only (before them: the v3 router answers every other path under its base).
        self.credits = CreditsV3StandIn(self._lock, self.entitlements)
        default: list[Router] = (
            [API_ROUTERS[api], self.entitlements] if api == "v1" else [self.credits, API_ROUTERS[api]]
        )
        self.routers: list[Router] = list(routers or default)
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
        if m.get("aggregation") not in AGGREGATIONS:
            raise NotImplementedError(
                f"the stand-in supports aggregations {AGGREGATIONS}, not {m.get('aggregation')!r}"
            )
        if not m.get("slug") or not m.get("eventType") or (m["aggregation"] != "COUNT" and not m.get("valueProperty")):
            raise ValueError(f"a meter needs slug, eventType and (unless COUNT) valueProperty: {m}")
        for path in [*m.setdefault("groupBy", {}).values(), m.get("valueProperty") or "$"]:
            compile_json_path(path)
        m.setdefault("id", "01J" + "".join(secrets.choice(CROCKFORD) for _ in range(23)))
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
                event = dict(raw)
                if event.get("data") is not None:  # stored as the server stores it: JSON (and 5x faster than deepcopy)
                    event["data"] = json.loads(json.dumps(event["data"]))
                missing = [key for key in ("id", "source", "type", "subject") if not event.get(key)]
                if missing:
                    raise ValueError(f"CloudEvent lacks required {missing}: {event}")
                event.setdefault("specversion", "1.0")
                if isinstance(event.get("time"), datetime):
                    event["time"] = format_time(event["time"])
                event["time"] = event.get("time") or format_time(now)
                when = unix(parse_rfc3339(event["time"]))
                if (event["source"], event["id"]) in self._seen:
                    continue
                self._seen.add((event["source"], event["id"]))
                self._row_seq += 1
                self.rows.append(Row(event, f"01J{self._row_seq:023d}", when, unix(now), unix(now)))
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
        fault = Fault(
            status, times, path_prefix, body, content_type, dict(headers or {}), delay, after, cut,
            tuple((query or {}).items()),
        )  # fmt: skip
        with self._lock:
            self._faults.append(fault)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored CloudEvents (copies) in ingestion order, `time` filled in."""
        with self._lock:
            return [copy.deepcopy(row.event) for row in self.rows]

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
            self.rows.clear()
            self._by_time = None
            self._seen.clear()
            self._requests.clear()
            self._faults.clear()

    # ---- HTTP side -----------------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        with self._lock:
            self._request_seq += 1
            instance = f"urn:request:standin/{self._request_seq:06d}"
            query = list(request.query_params.multi_items())
            if self.record_requests:
                self._requests.append(RecordedRequest(request.method, path, query, dict(request.headers), body))
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
            return await self._answer(request, path, body, instance, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: Request, path: str, body: bytes, instance: str, fault: Fault | None) -> Response:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.cut:
                return CutResponse()
            if fault.body is not None:
                return Response(fault.body, fault.status, fault.headers, media_type=fault.content_type)
            if fault.status >= 300:
                return problem_response(fault.status, "injected fault", instance, fault.headers)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            if self.api == "v3":  # the gateway's answer (the spec's example body)
                return api_error_response(401, "Unauthorized", instance)
            return problem_response(401, "missing or invalid API token", instance)
        seen = StandInRequest(request.method, path, request.query_params, body)
        try:
            with self._lock:
                return JSONResponse(self._route(seen))
        except Problem as problem:
            return problem.response(instance)

    def _route(self, request: StandInRequest) -> Any:
        for router in self.routers:
            handler = router(self, request)
            if handler is not None:
                return handler()
        detail = f"no such endpoint in the OpenMeter stand-in: {request.method} {request.path}"
        if self.api == "v3":  # Konnect serves only v3: a v1 path is an unknown route, in v3's words
            raise ApiError(404, "The requested route was not found")
        raise Problem(404, detail)

    def meter(self, id_or_slug: str) -> dict[str, Any]:
        """The meter with this slug or id; a 404 problem otherwise."""
        meter = self.meters.get(id_or_slug) or next((m for m in self.meters.values() if m["id"] == id_or_slug), None)
        if meter is None:
            raise Problem(404, f"meter not found: {id_or_slug}")
        return meter

    def rows_by_time(self) -> list[Row]:
        """The rows in ascending (time, row id) order; called with the lock held."""
        if self._by_time is None:
            self._by_time = sorted(self.rows, key=row_key)
            self._by_subject = None
        return self._by_time

    def rows_by_subject(self) -> dict[str, list[Row]]:
        """Per subject, the rows in ascending (time, row id) order; called with the lock held."""
        by_time = self.rows_by_time()
        if self._by_subject is None:
            self._by_subject = {}
            for row in by_time:
                self._by_subject.setdefault(row.event["subject"], []).append(row)
        return self._by_subject

    def rows_newest_first(
        self, cursor: tuple[int, str] | None, time_below: int | None, subjects: Sequence[str] | None
    ) -> Iterator[Row]:
        """Rows newest first by (time, store row), strictly below the cursor and the exclusive time bound, of
        `subjects` if given; called with the lock held. Walking time-sorted indexes (all rows, or per subject, like
        ClickHouse's sort key) keeps paging a large store fast."""
        below = cursor
        if time_below is not None and (below is None or (time_below, "") < below):
            below = (time_below, "")
        if subjects is None:
            return descending(self.rows_by_time(), below)
        by_subject = self.rows_by_subject()
        walks = [descending(by_subject.get(subject, []), below) for subject in dict.fromkeys(subjects)]
        return heapq.merge(*walks, key=row_key, reverse=True)
