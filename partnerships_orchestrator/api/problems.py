"""Errors as RFC 9457 problem details (`application/problem+json`): a stable `type` URI per
kind of problem, a `title`, the `status`, a `detail` for this occurrence, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from partnerships_orchestrator.errors import InputError, PartnershipsError
from partnerships_orchestrator.spec.problems import SpecError

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:partnerships:problem:"
log = logging.getLogger("partnerships.api")

TITLES = {
    "bad-request": "The request is malformed",
    "malformed-json": "The body is not strict JSON",
    "unauthenticated": "A valid bearer token is required",
    "forbidden": "The token's role does not allow this",
    "not-found": "No such resource",
    "method-not-allowed": "The method is not allowed on this resource",
    "conflict": "The request conflicts with the resource's state",
    "duplicate": "Already received",
    "payload-too-large": "The body is larger than allowed",
    "unsupported-media-type": "The body's content type is not accepted here",
    "invalid-request": "The request does not match the schema",
    "invalid-playbook": "The playbook document has problems",
    "invalid-inputs": "The run inputs were refused",
    "invalid-signature": "The webhook signature does not verify",
    "rate-limited": "Too many requests for this token",
    "not-ready": "A part of the product is not ready",
    "upstream-error": "Dagster refused or failed the request",
    "server-error": "The server failed to handle the request",
}


class ProblemBody(BaseModel):
    """The problem details document (extra members name what went wrong)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class Problem(Exception):
    """Raised by routes; rendered as problem+json with ``status`` and the kind's URI."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or TITLES[kind])


def problem_body(
    status: int, kind: str, detail: str | None, instance: str | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind,
        "title": TITLES[kind],
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_response(
    request: Request | None,
    status: int,
    kind: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    instance = request.url.path if request is not None else None
    if request is not None:
        request.state.problem = kind
    return JSONResponse(
        problem_body(status, kind, detail, instance, **extra),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


_HTTP_KINDS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "rate-limited",
}


def install(app: FastAPI) -> None:
    """Every error the app can answer, as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.kind, exc.detail, exc.headers or None, **exc.extra
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(
            exc.status_code, "bad-request" if exc.status_code < 500 else "server-error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem_response(request, exc.status_code, kind, detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "path": ".".join(str(p) for p in err.get("loc", ())),
                "message": str(err.get("msg", "")),
            }
            for err in exc.errors()
        ]
        kind = (
            "malformed-json"
            if any(e.get("type") == "json_invalid" for e in exc.errors())
            else "invalid-request"
        )
        status = 400 if kind == "malformed-json" else 422
        return problem_response(
            request,
            status,
            kind,
            "; ".join(f"{e['path']}: {e['message']}" for e in errors),
            errors=errors,
        )

    @app.exception_handler(SpecError)
    async def _spec(request: Request, exc: SpecError) -> JSONResponse:
        return problem_response(
            request,
            422,
            "invalid-playbook",
            f"{len(exc.problems)} problem(s) in the playbook document",
            problems=[p.as_dict() for p in exc.problems],
        )

    @app.exception_handler(InputError)
    async def _inputs(request: Request, exc: InputError) -> JSONResponse:
        return problem_response(request, 422, "invalid-inputs", str(exc))

    @app.exception_handler(PartnershipsError)
    async def _product(request: Request, exc: PartnershipsError) -> JSONResponse:
        return problem_response(request, 409, "conflict", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request, 500, "server-error", "an unexpected error; the server log has the details"
        )


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route can give."""
    return {
        status: {
            "content": {MEDIA_TYPE: {"schema": ProblemBody.model_json_schema()}},
            "description": _HTTP_KINDS.get(status, "problem").replace("-", " "),
        }
        for status in statuses
    }
