"""OpenMeter's error answers: RFC 7807 problem+json, as the Go server's StatusProblem writes them (v1, and the domain
errors of v3's handlers), and v3's AIP `BaseAPIError` (request validation, binding, unknown routes)."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response


class Problem(Exception):
    """Raised inside a handler; becomes an RFC 7807 response (`validation_errors`: v3's
    `extensions.validationErrors`, for the domain errors of its meter query)."""

    def __init__(self, status: int, detail: str, *, validation_errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.validation_errors = validation_errors

    def response(self, instance: str) -> Response:
        extensions = {"validationErrors": self.validation_errors} if self.validation_errors else None
        return problem_response(self.status, self.detail, instance, extensions=extensions)


@dataclass(frozen=True)
class InvalidParameter:
    """One entry of a BaseAPIError's `invalid_parameters`."""

    field: str
    reason: str
    source: str  # query | body | path | header
    rule: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field}
        if self.rule is not None:
            out["rule"] = self.rule
        out.update(reason=self.reason, source=self.source)
        return out


class ApiError(Problem):
    """v3's AIP `BaseAPIError`: what request validation, parameter binding and unknown routes answer."""

    def __init__(self, status: int, detail: str, invalid: list[InvalidParameter] | None = None) -> None:
        super().__init__(status, detail)
        self.invalid = list(invalid or [])

    @classmethod
    def bad_request(cls, *invalid: InvalidParameter) -> ApiError:
        reasons = ", ".join(f"{p.field}{f' [{p.rule}]' if p.rule else ''}: {p.reason}" for p in invalid)
        return cls(400, f"Bad Request: {reasons}", list(invalid))

    def response(self, instance: str) -> Response:
        return api_error_response(self.status, self.detail, instance, self.invalid)


_KONG_TYPES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed"}


def api_error_response(
    status: int, detail: str, instance: str, invalid: list[InvalidParameter] | None = None
) -> Response:
    """A BaseAPIError body (`api/v3/apierrors/errors.go`): type under https://kongapi.info/konnect/."""
    body: dict[str, Any] = {
        "type": f"https://kongapi.info/konnect/{_KONG_TYPES.get(status, 'internal-server-error')}",
        "status": status,
        "title": _phrase(status),
        "instance": instance,
        "detail": detail,
    }
    if invalid:
        body["invalid_parameters"] = [parameter.as_json() for parameter in invalid]
    return JSONResponse(body, status, media_type="application/problem+json")


def problem_response(
    status: int,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    *,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """An RFC 7807 body like Go's StatusProblem (which omits `detail` on 500)."""
    body: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status}
    if detail and status != 500:
        body["detail"] = detail
    body["instance"] = instance
    if extensions:
        body["extensions"] = extensions
    return JSONResponse(body, status, headers, media_type="application/problem+json")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Unimplemented(Problem):
    """What OpenMeter answers on a credits endpoint when credits are not enabled: 501 with an empty body (the
    generated `Unimplemented` handler, `api/v3/server/routes.go`)."""

    def __init__(self) -> None:
        super().__init__(501, "")

    def response(self, instance: str) -> Response:
        return Response(b"", 501)
