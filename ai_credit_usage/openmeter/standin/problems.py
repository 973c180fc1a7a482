"""OpenMeter's error answers: RFC 7807 problem+json, as the Go server's StatusProblem writes them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response


class Problem(Exception):
    """Raised inside a handler; becomes an RFC 7807 response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def problem_response(status: int, detail: str, instance: str, headers: dict[str, str] | None = None) -> Response:
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
