"""The HTTP side every OpenMeter API shares: one httpx2 client, bounded concurrency, retries, and errors in words.

Every way OpenMeter can fail (unreachable, slow, key refused, unknown meter, rate limit, 5xx, unreadable JSON)
becomes an `OpenMeterError` with one sentence for the chat user; the log gets the status and OpenMeter's request
id. The API key lives only in the client's default headers: no message carries it, and every upstream text that is
logged (a problem's detail and instance, a redirect's Location, an unreadable body) has it redacted first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.redaction import Redactor
from ai_credit_usage.runtime.settings import DEFAULT_OPENMETER_MAX_CONCURRENCY, DEFAULT_OPENMETER_TIMEOUT_SECONDS
from ai_credit_usage.runtime.telemetry import OpenMeterRequest, openmeter_request

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
# Real OpenMeter answers 408 when the request's context ends before the answer (a cancelled or timed-out query,
# pkg/models/problem.go): the same trouble as our own timeout, in the same words.
TIMED_OUT = "OpenMeter did not answer in time; try again in a minute, or ask for a shorter window."
UNREADABLE = "OpenMeter sent an answer that could not be read; try again, and report it if it persists."


class OpenMeterError(UserFacingError):
    """OpenMeter could not answer; the message says so in one sentence the model can relay.

    `retryable` marks trouble that may pass (connection errors, timeouts and 408, 429, 502/503/504); `retry_after` is
    OpenMeter's `Retry-After` in seconds, when it sent one.
    """

    status: int | None = None  # OpenMeter's HTTP status, when it answered with an error
    problem: ProblemInfo | None = None  # and what its problem+json body said

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class ProblemInfo:
    """The parts of an error body we read, whatever its shape: OpenMeter's RFC 7807 problem (v1, and v3's domain
    errors), v3's AIP `BaseAPIError` (`type` under https://kongapi.info/), or Kong's gateway `{"message": ...}`."""

    status: int | None = None
    title: str = ""
    detail: str = ""
    type: str = ""
    message: str = ""  # Kong's gateway answers with only this ("no Route matched with those values")

    @property
    def from_v3(self) -> bool:
        """The body is one only a v3 server (or Kong's gateway in front of Konnect) sends."""
        return self.type.startswith("https://kongapi.info/") or "no route matched" in self.message.lower()


def read_problem(response: httpx2.Response) -> ProblemInfo:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return ProblemInfo()
    if not isinstance(body, dict):
        return ProblemInfo()

    def text(name: str) -> str:
        value = body.get(name)
        return value if isinstance(value, str) else ""

    status = body.get("status")
    return ProblemInfo(
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        text("title"),
        text("detail"),
        text("type"),
        text("message"),
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one OpenMeter request is retried before its error reaches the user.

    Waits grow exponentially with jitter (`first_wait` doubling up to `max_wait`); a 429's `Retry-After` is
    honoured up to `max_retry_after`, and a longer one is reported at once rather than retried early. Only the
    waits count against `max_total_wait`: neither the wait for a free request slot nor the attempts themselves
    do, so a timed-out attempt is retried whatever OPENMETER_TIMEOUT_SECONDS is. What bounds the time in the end
    is the tool call's deadline (report.py): no retry starts unless its wait leaves `attempt_room` seconds for the
    attempt before it, so the user reads OpenMeter's own trouble rather than a bare "took too long".
    """

    attempts: int = 4
    first_wait: float = 0.5
    max_wait: float = 5.0
    max_retry_after: float = 10.0
    max_total_wait: float = 20.0
    attempt_room: float = 1.0


class OpenMeterHttp:
    """One shared `AsyncClient` for the process; `transport` is the seam tests and benchmarks may use.

    At most `max_concurrency` requests are in flight at once, whatever the number of tool calls, so a burst of
    admins cannot stampede OpenMeter.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = DEFAULT_OPENMETER_TIMEOUT_SECONDS,
        max_concurrency: int = DEFAULT_OPENMETER_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx2.AsyncClient(
            base_url=base_url,
            # Stripped: a key pasted with a trailing newline would make every request an illegal header.
            headers={"Authorization": f"Bearer {api_key.strip()}", "Accept": "application/json"},
            timeout=httpx2.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            transport=transport,
            follow_redirects=False,
            verify=tls_context(),
        )
        self.redact = Redactor([api_key])  # for every upstream text this client logs
        self._in_flight = asyncio.Semaphore(max_concurrency)
        self._retry = retry or RetryPolicy()
        self._wait = _wait_for(self._retry)
        self._stop = _stop_for(self._retry)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_json(
        self,
        path: str,
        params: Any,
        *,
        meter: str | None,
        template: str | None = None,
        absent: frozenset[int] = frozenset(),
    ) -> Any:
        """GET `path` and its JSON body, retried as the policy says; `meter` names the meter a 404 is about.

        `template` is the path as telemetry names it (default: `path` with the meter's key as `{meter}`; never a
        tenant); a status in `absent` (e.g. 404 for a customer that does not exist) is an answer, not an error: it
        returns None."""
        return await self.request_json("GET", path, params=params, meter=meter, template=template, absent=absent)

    async def post_json(self, path: str, body: Any, *, meter: str | None, template: str | None = None) -> Any:
        """POST `body` as JSON to `path` (a read: v3's meter query), retried like a GET."""
        return await self.request_json("POST", path, body=body, meter=meter, template=template)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        meter: str | None,
        template: str | None = None,
        absent: frozenset[int] = frozenset(),
    ) -> Any:
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, OpenMeterError) and exc.retryable),
            before_sleep=lambda state: _log_retry(f"{method} {path}", state),
            reraise=True,
        )
        # one span over every attempt
        with openmeter_request(path, meter, method=method, template=template) as traced:
            async for attempt in retrying:
                with attempt:
                    async with self._in_flight:
                        with traced.attempt():
                            return await self._json_once(
                                method, path, params, body, meter=meter, traced=traced, absent=absent
                            )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _json_once(
        self,
        method: str,
        path: str,
        params: Any,
        body: Any,
        *,
        meter: str | None,
        traced: OpenMeterRequest,
        absent: frozenset[int],
    ) -> Any:
        started = time.perf_counter()
        try:
            response = await self._http.request(method, path, params=params, json=body)
        except httpx2.TimeoutException:
            logger.warning("OpenMeter %s %s timed out", method, path)
            raise OpenMeterError(TIMED_OUT, retryable=True) from None
        except httpx2.DecodingError:  # e.g. `Content-Encoding: gzip` over a body that is not gzip
            raise self.unreadable(path, "a body that does not decode as its Content-Encoding says") from None
        except httpx2.HTTPError as exc:  # transport trouble may pass; anything else (e.g. redirects) will not
            logger.warning("OpenMeter %s %s failed: %s", method, path, type(exc).__name__)
            raise OpenMeterError(
                "OpenMeter cannot be reached right now; try again in a few minutes, "
                "and tell the operator if it persists.",
                retryable=isinstance(exc, httpx2.TransportError),
            ) from None
        except httpx2.InvalidURL as exc:  # not an HTTPError: the request could not even be built
            logger.warning("OpenMeter %s %s could not be sent: %s", method, path, self.redact(str(exc)))
            raise OpenMeterError(
                "The credits server could not build its request to OpenMeter; this is a fault in the credits "
                "server, please report it to the operator."
            ) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        traced.note_status(response.status_code)
        if response.status_code in absent:
            logger.info("OpenMeter %s %s -> %d in %.0f ms (absent)", method, path, response.status_code, elapsed_ms)
            return None
        if response.status_code >= 300:
            _log_problem(f"{method} {path}", response, elapsed_ms, self.redact)
            error = _status_error(response, meter, self._retry)
            error.status, error.problem = response.status_code, read_problem(response)
            raise error
        logger.info("OpenMeter %s %s -> %d in %.0f ms", method, path, response.status_code, elapsed_ms)
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
            raise self.unreadable(path, "invalid JSON") from None

    def unreadable(self, what: str, reason: str | Exception) -> OpenMeterError:
        """OpenMeter's answer is not JSON, or not the documented shape. `reason` is our own words, or the exception
        that said so: of a pydantic `ValidationError` the log gets where and what kind each mismatch is, never the
        input (its text quotes the body's values shortened to their two ends, so an echoed key, cut, would slip past
        the redaction: issue 23); of any other exception, its type."""
        if isinstance(reason, ValidationError):
            text = shape_errors(reason, self.redact)
        elif isinstance(reason, Exception):
            text = type(reason).__name__
        else:
            text = self.redact(reason)
        logger.warning("OpenMeter sent an unreadable %s: %s", what, text[:300])
        return OpenMeterError(UNREADABLE)


def shape_errors(error: ValidationError, redact: Redactor, *, most: int = 5) -> str:
    """A pydantic error as `location: type` pairs (`data.0.value: float_parsing`), without its input or message.
    A location may hold a key of the body's own, so each part is redacted and then cut."""
    described = []
    for detail in error.errors(include_url=False, include_context=False, include_input=False)[:most]:
        where = ".".join(redact(str(part))[:40] for part in detail["loc"])
        described.append(f"{where or 'body'}: {detail['type']}")
    if error.error_count() > most:
        described.append(f"and {error.error_count() - most} more")
    return "; ".join(described)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx2's default TLS context, made once per process and shared by every client the server makes (OpenMeter's,
    the JWKS fetch): loading the CA bundle costs about 30 ms a client."""
    return httpx2.create_ssl_context()


def _stop_for(policy: RetryPolicy) -> Callable[[RetryCallState], bool]:
    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.attempts or state.idle_for + state.upcoming_sleep > policy.max_total_wait:
            return True
        left = anyio.current_effective_deadline() - anyio.current_time()  # inf outside a tool call
        if state.upcoming_sleep + policy.attempt_room > left:
            logger.warning("OpenMeter: not retrying, the tool call's deadline is %.1f s away", left)
            return True
        return False

    return stop


def _wait_for(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
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
    logger.warning("OpenMeter %s: retrying in %.2f s after attempt %d (%s)", path, wait, state.attempt_number, error)


def _log_problem(path: str, response: httpx2.Response, elapsed_ms: float, redact: Redactor) -> None:
    try:
        problem = response.json()
    except (ValueError, RecursionError):
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = problem.get("detail") or problem.get("title") or "no detail"
    if 300 <= response.status_code < 400:
        detail = f"redirect to {response.headers.get('location', '?')}"
    logger.warning(
        "OpenMeter %s -> %d in %.0f ms: %s (request %s)",
        path,
        response.status_code,
        elapsed_ms,
        # Redacted before cut: a cut key would no longer match. repr: one log line, whatever OpenMeter sent.
        repr(redact(str(detail))[:300]),
        repr(redact(str(problem.get("instance", "unknown")))[:200]),
    )


def _status_error(response: httpx2.Response, meter: str | None, policy: RetryPolicy) -> OpenMeterError:
    status = response.status_code
    if status < 400:  # redirects are not followed: OPENMETER_URL points at the wrong place (http for https?)
        return OpenMeterError(
            f"OpenMeter answered with a redirect (HTTP {status}); ask the operator to check OPENMETER_URL."
        )
    if status in (401, 403):
        return OpenMeterError("OpenMeter refused this server's API key; ask the operator to check OPENMETER_API_KEY.")
    if status == 404 and meter is not None:
        return OpenMeterError(f"OpenMeter has no meter '{meter}'; ask the operator to check OPENMETER_METER.")
    if status == 408:
        return OpenMeterError(TIMED_OUT, retryable=True)
    if status == 429:
        retry_after = _retry_after(response)
        if retry_after is not None and retry_after > policy.max_retry_after:  # retrying sooner would be refused
            seconds = math.ceil(retry_after)
            return OpenMeterError(
                f"OpenMeter is rate-limiting requests right now and asked to wait {seconds:,} "
                f"second{'' if seconds == 1 else 's'}; try again after that.",
                retry_after=retry_after,
            )
        return OpenMeterError(
            "OpenMeter is rate-limiting requests right now; try again in a minute.",
            retryable=True,
            retry_after=retry_after,
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
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
