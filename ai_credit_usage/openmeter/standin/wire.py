"""The stand-in's HTTP side that every API shares: problem+json answers, query parameters as the Go binder reads
them, the request log, and injected faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from starlette.datastructures import QueryParams
from starlette.responses import Response

from ai_credit_usage.openmeter.standin.problems import Problem
from ai_credit_usage.openmeter.standin.store import Row, parse_rfc3339

Handler = Callable[[], Any]


class EventStore(Protocol):
    """What an API's routes read of the stand-in (its lock is held while they run)."""

    meters: dict[str, dict[str, Any]]
    rows: list[Row]

    def meter(self, id_or_slug: str) -> dict[str, Any]: ...
    def rows_by_time(self) -> list[Row]: ...
    def rows_by_subject(self) -> dict[str, list[Row]]: ...
    def rows_newest_first(
        self, cursor: tuple[int, str] | None, time_below: int | None, subjects: Sequence[str] | None
    ) -> Iterator[Row]: ...


@dataclass(frozen=True)
class StandInRequest:
    """One request as a router sees it: the body is read before the stand-in's lock is taken."""

    method: str
    path: str
    query: QueryParams
    body: bytes

    @property
    def parts(self) -> list[str]:
        return self.path.strip("/").split("/")


def single_param(q: QueryParams, name: str) -> str | None:
    values = q.getlist(name)
    if len(values) > 1:
        raise Problem(400, f"multiple values for single value parameter '{name}'")
    return values[0] if values else None


def time_param(q: QueryParams, name: str) -> datetime | None:
    raw = single_param(q, name)
    try:
        return None if raw is None else parse_rfc3339(raw, allow_date_only=True)
    except ValueError:
        raise Problem(400, f"Invalid format for parameter {name}: {raw!r} is not an RFC 3339 date-time") from None


def json_param(q: QueryParams, name: str) -> Any:
    values = q.getlist(name)
    raw = values[0] if values else None  # Go reads Query().Get: the first value
    try:
        return None if raw is None else json.loads(raw)
    except json.JSONDecodeError:
        raise Problem(400, f"Error unmarshaling parameter '{name}' as JSON") from None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it; `query` keeps repeated keys in order."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The request's JSON body (v3's meter query)."""
        return json.loads(self.body)

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    def param(self, name: str) -> str | None:
        values = self.params(name)
        return values[0] if values else None


@dataclass
class Fault:
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


class CutResponse(Response):
    """Promises a body it never finishes: the connection drops mid-response, as when a proxy or pod dies."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"items": [', "more_body": False})
