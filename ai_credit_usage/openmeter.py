"""A small read-only OpenMeter client on httpx2: the meter definition, the meter query and raw event pages.

Every way OpenMeter can fail (unreachable, slow, key refused, unknown meter, rate limit, 5xx, unreadable JSON)
becomes an `OpenMeterError` with one sentence for the chat user; the log gets the status and OpenMeter's request
id. The API key lives only in the client's default headers: no message or log line carries it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx2
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.telemetry import note_openmeter_status, openmeter_request
from ai_credit_usage.window import Window, format_utc

logger = logging.getLogger(__name__)

EVENTS_PAGE_SIZE = 100  # the most /api/v2/events hands out per page
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_CONCURRENCY = 8
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class OpenMeterError(UserFacingError):
    """OpenMeter could not answer; the message says so in one sentence the model can relay.

    `retryable` marks trouble that may pass (connection errors, timeouts, 429, 502/503/504); `retry_after` is
    OpenMeter's `Retry-After` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one OpenMeter request is retried before its error reaches the user.

    Waits grow exponentially with jitter (`first_wait` doubling up to `max_wait`); a 429's `Retry-After` is
    honoured up to `max_retry_after`. No retry starts a wait that would end later than `give_up_after` seconds
    after the first attempt. The tool call as a whole has its own deadline on top (report.py).
    """

    attempts: int = 4
    first_wait: float = 0.5
    max_wait: float = 5.0
    max_retry_after: float = 10.0
    give_up_after: float = 20.0


class QueryRow(BaseModel):
    value: float
    subject: str | None = None
    groupBy: dict[str, str | None] = {}
    windowStart: datetime | None = None  # the calendar window's start when the query has a windowSize


class _QueryResult(BaseModel):
    data: list[QueryRow]


class CloudEvent(BaseModel):
    id: str
    type: str
    subject: str
    time: datetime | None = None
    data: Any = None


class _IngestedEvent(BaseModel):
    event: CloudEvent


class _EventsPage(BaseModel):
    items: list[_IngestedEvent]
    nextCursor: str | None = None


class OpenMeterClient:
    """One shared `AsyncClient` for the process; `transport` is the seam tests and benchmarks may use.

    At most `max_concurrency` requests are in flight at once, whatever the number of tool calls, so a burst of
    admins cannot stampede OpenMeter.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx2.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx2.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            transport=transport,
            follow_redirects=False,
        )
        self._in_flight = asyncio.Semaphore(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._wait = _wait_for(self._retry)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_meter(self, meter: str) -> dict[str, Any]:
        body = await self._get_json(f"/api/v1/meters/{meter}", {}, meter=meter)
        if not isinstance(body, dict):
            raise _unreadable("/api/v1/meters/{meter}", "not an object")
        return body

    async def query_meter(
        self,
        meter: str,
        window: Window,
        group_by: Sequence[str],
        filters: Mapping[str, Any],
        *,
        window_size: str | None = None,
        window_time_zone: str | None = None,
    ) -> list[QueryRow]:
        """One aggregate row per group over the whole window, or per group and calendar window (`window_size` DAY
        or MONTH, in `window_time_zone`) when asked; only windows with usage come back. OpenMeter does not paginate.
        """
        params: list[tuple[str, str]] = [("from", format_utc(window.start)), ("to", format_utc(window.end))]
        if window_size is not None:
            params += [("windowSize", window_size), ("windowTimeZone", window_time_zone or "UTC")]
        params += [("groupBy", key) for key in group_by]
        # Built as data and JSON-encoded, so no tenant name can add operators or keys to the filter.
        params.append(("advancedMeterGroupByFilters", json.dumps(filters, ensure_ascii=False)))
        body = await self._get_json(f"/api/v1/meters/{meter}/query", params, meter=meter)
        try:
            return _QueryResult.model_validate(body).data
        except ValidationError as exc:
            raise _unreadable("meter query", exc) from None

    async def event_page(
        self, window: Window, event_type: str, subjects: Sequence[str] | None, cursor: str | None
    ) -> tuple[list[CloudEvent], str | None]:
        """One page (at most 100 events, newest first) and the cursor of the next, if OpenMeter gave one."""
        event_filter: dict[str, Any] = {"type": {"$eq": event_type}}
        if subjects is not None:
            event_filter["subject"] = {"$in": list(subjects)}
        # One operator per object: real OpenMeter answers 400 to {"$gte": a, "$lt": b}.
        event_filter["time"] = {"$and": [{"$gte": format_utc(window.start)}, {"$lt": format_utc(window.end)}]}
        params = {"limit": str(EVENTS_PAGE_SIZE), "filter": json.dumps(event_filter, ensure_ascii=False)}
        if cursor is not None:
            params["cursor"] = cursor
        body = await self._get_json("/api/v2/events", params, meter=None)
        try:
            page = _EventsPage.model_validate(body)
        except ValidationError as exc:
            raise _unreadable("events page", exc) from None
        # OpenMeter sets nextCursor only when the page is full; a last full page is followed by an empty one.
        return [item.event for item in page.items], page.nextCursor or None

    async def iter_event_pages(
        self,
        window: Window,
        event_type: str,
        subjects: Sequence[str] | None = None,
        *,
        first: tuple[list[CloudEvent], str | None] | None = None,
    ) -> AsyncIterator[list[CloudEvent]]:
        """Every event of `event_type` (of `subjects`, if given) in the window, newest first, a page at a time.

        `first` is a page already fetched for exactly this walk, so it is not asked for twice.
        """
        events, cursor = first if first is not None else await self.event_page(window, event_type, subjects, None)
        while True:
            yield events
            if cursor is None:
                return
            events, cursor = await self.event_page(window, event_type, subjects, cursor)

    async def _get_json(self, path: str, params: Any, *, meter: str | None) -> Any:
        policy = self._retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.give_up_after),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, OpenMeterError) and exc.retryable),
            before_sleep=lambda state: _log_retry(path, state),
            reraise=True,
        )
        with openmeter_request(path, meter) as traced:  # one span over every attempt
            async for attempt in retrying:
                with attempt:
                    async with self._in_flight:
                        with traced.attempt():
                            return await self._get_json_once(path, params, meter=meter)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _get_json_once(self, path: str, params: Any, *, meter: str | None) -> Any:
        started = time.perf_counter()
        try:
            response = await self._http.get(path, params=params)
        except httpx2.TimeoutException:
            logger.warning("OpenMeter GET %s timed out", path)
            raise OpenMeterError(
                "OpenMeter did not answer in time; try again in a minute, or ask for a shorter window.",
                retryable=True,
            ) from None
        except httpx2.TransportError as exc:
            logger.warning("OpenMeter GET %s failed: %s", path, type(exc).__name__)
            raise OpenMeterError(
                "OpenMeter cannot be reached right now; try again in a few minutes, "
                "and tell the operator if it persists.",
                retryable=True,
            ) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        note_openmeter_status(response.status_code)
        if response.status_code >= 400:
            _log_problem(path, response, elapsed_ms)
            raise _status_error(response, meter)
        logger.info("OpenMeter GET %s -> %d in %.0f ms", path, response.status_code, elapsed_ms)
        try:
            return response.json()
        except ValueError:
            raise _unreadable(path, "invalid JSON") from None


def _wait_for(policy: RetryPolicy):
    backoff = wait_exponential_jitter(multiplier=policy.first_wait, max=policy.max_wait, jitter=policy.first_wait)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, OpenMeterError) and error.retry_after is not None:
            return min(error.retry_after, policy.max_retry_after)
        return backoff(state)

    return wait


def _log_retry(path: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "OpenMeter GET %s: retrying in %.2f s after attempt %d (%s)", path, wait, state.attempt_number, error
    )


def _log_problem(path: str, response: httpx2.Response, elapsed_ms: float) -> None:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    logger.warning(
        "OpenMeter GET %s -> %d in %.0f ms: %s (request %s)",
        path,
        response.status_code,
        elapsed_ms,
        str(problem.get("detail") or problem.get("title") or "no detail")[:300],
        problem.get("instance", "unknown"),
    )


def _status_error(response: httpx2.Response, meter: str | None) -> OpenMeterError:
    status = response.status_code
    if status in (401, 403):
        return OpenMeterError("OpenMeter refused this server's API key; ask the operator to check OPENMETER_API_KEY.")
    if status == 404 and meter is not None:
        return OpenMeterError(f"OpenMeter has no meter '{meter}'; ask the operator to check OPENMETER_METER.")
    if status == 429:
        return OpenMeterError(
            "OpenMeter is rate-limiting requests right now; try again in a minute.",
            retryable=True,
            retry_after=_retry_after(response),
        )
    if status >= 500:
        return OpenMeterError(
            f"OpenMeter had an internal error (HTTP {status}); try again in a few minutes.",
            retryable=status in RETRYABLE_STATUSES,
        )
    return OpenMeterError(
        f"OpenMeter rejected the query (HTTP {status}); this is a fault in the credits server, "
        "please report it to the operator."
    )


def _retry_after(response: httpx2.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare for APIs and treated as absent."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _unreadable(what: str, reason: object) -> OpenMeterError:
    logger.warning("OpenMeter sent an unreadable %s: %s", what, str(reason)[:300])
    return OpenMeterError("OpenMeter sent an answer that could not be read; try again, and report it if it persists.")
