"""Every error an API answers is problem+json; client mistakes are 4xx, never 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Counter
from starlette.exceptions import HTTPException
from starlette.responses import Response

from domain.errors import InvalidCommand
from kernel import tracing
from kernel.http.responses import REQUEST_ID_HEADER, problem
from kernel.producer import BrokerUnavailable, OutcomeUnknown, RecordTooLarge

log = structlog.get_logger()

# The problems a 503 names: nothing recorded, or a write whose outcome is not known.
UNAVAILABLE_PROBLEMS = ("unavailable", "outcome-unknown")


def count_unavailable(app: FastAPI, registry: CollectorRegistry, service: str) -> None:
    """Count ``app``'s 503s by problem (``merlin_http_unavailable_total``): the status alone does not
    tell a refused write from one whose outcome is unknown. Both series start at 0, so the first
    503 is an increase Prometheus sees."""
    answers = Counter(
        "merlin_http_unavailable",
        "Requests answered 503 because a dependency could not answer, by problem type",
        ["service", "problem"],
        registry=registry,
    )
    app.state.unavailable = {problem: answers.labels(service, problem) for problem in UNAVAILABLE_PROBLEMS}


def _counted(request: Request, problem_type: str) -> None:
    counters: dict[str, Counter] | None = getattr(request.app.state, "unavailable", None)
    if counters is not None:
        counters[problem_type].inc()


class BodyTooLarge(HTTPException):
    """The request body is over the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "path", "query", "header")]
    return ".".join(parts) or "body"


async def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    invalid_json = [error for error in errors if error.get("type") == "json_invalid"]
    if invalid_json:
        reason = str(invalid_json[0].get("ctx", {}).get("error", "")) or None
        return problem(400, "malformed-json", "The request body is not valid JSON.", reason)
    invalid = [{"field": _field(tuple(error["loc"])), "reason": str(error["msg"])} for error in errors]
    detail = "; ".join(f"{error['field']}: {error['reason']}" for error in invalid)
    return problem(422, "invalid-request", "The request is not valid.", detail, errors=invalid)


async def _invalid_command(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidCommand)
    return problem(
        422,
        "invalid-request",
        "The request is not valid.",
        str(exc),
        errors=[{"field": exc.field, "reason": exc.reason}],
    )


async def _http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {
        401: "unauthorized",
        403: "forbidden",
        404: "not-found",
        405: "method-not-allowed",
        409: "conflict",
        413: "too-large",
    }
    return problem(
        exc.status_code,
        kinds.get(exc.status_code, "http-error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def _too_large(_request: Request, exc: Exception) -> Response:
    # Not a 503: retrying a record the log will never take can never succeed.
    return problem(413, "too-large", "The event is larger than the event log takes; nothing was recorded.")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path, exc_info=exc)
    # Set only when the error escaped the request log (Starlette's outermost handler answers past it):
    # the id it gave the request goes on here, so a caller can quote it. Inside, the log adds it.
    rid = getattr(request.state, "request_id", None)
    return problem(
        500,
        "internal",
        "Something went wrong on our side.",
        headers={REQUEST_ID_HEADER: rid} if isinstance(rid, str) else None,
    )


def _mark_outage(dependency: str, exc: Exception) -> None:
    """With tracing on, the request's span tells that ``dependency`` could not answer (a span event)."""
    if tracing.ENABLED:
        from opentelemetry.trace import get_current_span

        get_current_span().add_event(
            "dependency_unavailable",
            {
                "merlin.dependency": dependency,
                "error.type": type(exc).__qualname__,
                "exception.message": str(exc),
            },
        )


def _unavailable(retry_after_seconds: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    retry_after = str(retry_after_seconds)

    async def handle(request: Request, exc: Exception) -> Response:
        _mark_outage("event log", exc)
        if isinstance(exc, OutcomeUnknown):
            _counted(request, "outcome-unknown")
            log.warning("write_outcome_unknown", error=str(exc), path=request.url.path)
            return problem(
                503,
                "outcome-unknown",
                "The write may or may not have been recorded: retry with the same Idempotency-Key.",
                f"{exc} Without an Idempotency-Key, a retry may record it twice.",
                headers={"Retry-After": retry_after},
            )
        _counted(request, "unavailable")
        log.warning("broker_unavailable", error=str(exc), path=request.url.path)
        return problem(
            503,
            "unavailable",
            "The event log cannot take writes right now; nothing was recorded. Retry later.",
            str(exc),
            headers={"Retry-After": retry_after},
        )

    return handle


def add_outage_handler(
    app: FastAPI,
    errors: tuple[type[Exception], ...],
    is_outage: Callable[[BaseException], bool],
    dependency: str,
    retry_after_seconds: int = 1,
) -> None:
    """Answer 503 + ``Retry-After`` when ``dependency`` cannot answer now; other such errors stay 500s."""
    retry_after = str(retry_after_seconds)

    async def handle(request: Request, exc: Exception) -> Response:
        if not is_outage(exc):
            return await _unexpected(request, exc)
        _mark_outage(dependency, exc)
        _counted(request, "unavailable")
        log.warning(
            "dependency_unavailable", dependency=dependency, path=request.url.path, error=type(exc).__name__
        )
        return problem(
            503,
            "unavailable",
            f"The {dependency} cannot answer right now. Retry shortly.",
            headers={"Retry-After": retry_after},
        )

    for error in errors:
        app.add_exception_handler(error, handle)


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """Answer every error of ``app`` as problem+json; a 503 asks clients to wait ``retry_after_seconds``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InvalidCommand, _invalid_command)
    app.add_exception_handler(BrokerUnavailable, _unavailable(retry_after_seconds))
    app.add_exception_handler(RecordTooLarge, _too_large)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
