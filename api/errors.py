"""Error responses: every error the API returns has the body `{"error": {"type", "message", "candidates"}}`, and
each kind of failure has one status code (documented per route in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.error_body import error_body
from grounding.errors import GroundingError
from pipeline.jobs.cell import CellUnavailable
from pipeline.jobs.queue import QueueFull
from pipeline.jobs.runner import JobNotFound, RobotBlocked
from pipeline.jobs.state import JobNotWaiting
from pipeline.sequence import SequenceError

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "queue_full",
    503: "stream_full",
}


def error_json(
    status: int, type_: str, message: str, candidates: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error response."""
    return JSONResponse(error_body(type_, message, candidates), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed_json", "the request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return 422, "invalid", "; ".join(parts) or "the request does not match the schema"


def install_error_handlers(app: FastAPI) -> None:
    """Map framework and domain errors to their status codes and the common error body."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return error_json(exc.status_code, _HTTP_TYPES.get(exc.status_code, "error"), str(exc.detail), None, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, type_, message = _validation_message(exc)
        return error_json(status, type_, message)

    @app.exception_handler(GroundingError)
    async def grounding(_: Request, exc: GroundingError) -> JSONResponse:
        return error_json(400, exc.type, exc.message, [c.to_json() for c in exc.candidates])

    @app.exception_handler(SequenceError)
    async def sequence(_: Request, exc: SequenceError) -> JSONResponse:
        return error_json(400, "invalid_sequence", str(exc))

    @app.exception_handler(QueueFull)
    async def full(_: Request, exc: QueueFull) -> JSONResponse:
        return error_json(429, "queue_full", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(RobotBlocked)
    async def blocked(_: Request, exc: RobotBlocked) -> JSONResponse:
        return error_json(409, "robot_blocked", str(exc))

    @app.exception_handler(CellUnavailable)
    async def unavailable(_: Request, exc: CellUnavailable) -> JSONResponse:
        return error_json(409, "unavailable", str(exc))

    @app.exception_handler(JobNotWaiting)
    async def not_waiting(_: Request, exc: JobNotWaiting) -> JSONResponse:
        return error_json(409, "not_waiting", str(exc))

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return error_json(404, "not_found", f"no job {exc.args[0]!r}; GET /jobs lists the known jobs")
