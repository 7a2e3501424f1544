"""Every problem type the APIs answer (RFC 9457), and how an OpenAPI document states them.

The services answer with ``kernel.http.responses.problem`` (and the edge with its own
bytes, ``kernel.http.edge``); this catalog is what their documents say of those
answers: a problem's ``type`` is ``PROBLEM_TYPE_BASE`` + its kind. A unit test
checks that every kind answered in the code is here, with its status.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kernel.http.responses import PROBLEM_TYPE_BASE

PROBLEM_SCHEMA = "#/components/schemas/Problem"
RETRY_AFTER = "#/components/headers/RetryAfter"
WWW_AUTHENTICATE = "#/components/headers/WwwAuthenticate"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    kind: str
    status: int
    title: str  # as answered (some answers word it after their case)
    meaning: str  # when it is answered, and what a client does about it
    retry_after: bool = False  # answered with ``Retry-After`` (whole seconds)

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_BASE + self.kind


_KINDS = (
    ProblemKind(
        "malformed-json", 400, "The request body is not valid JSON.",
        "The body is not JSON, or names a key twice (`detail` says which).",
    ),
    ProblemKind(
        "unauthorized", 401, "A valid bearer token is required.",
        "No bearer token, or one that does not verify; why is logged, never said.",
    ),
    ProblemKind(
        "forbidden", 403, "This route needs the admin scope.",
        "The token does not allow this: its scope, its rooms, or a `sender_id` that is not its `sub`.",
    ),
    ProblemKind("not-found", 404, "No such message.", "Nothing there by that name or id."),
    ProblemKind(
        "conflict", 409, "The request conflicts with the state of the resource.",
        "The endpoint's stored definition is not one this version reads (define it again, with its "
        "secret), or a rewind could not move the endpoint's group (nothing was moved).",
    ),
    ProblemKind(
        "too-large", 413, "The request body is too large.",
        "The body is over the API's limit (refused before it is read), or the event is larger than the "
        "event log takes; nothing was recorded, and a retry would be refused the same way.",
    ),
    ProblemKind(
        "unsupported-media-type", 415, "The body must be JSON.",
        "The body is sent with a `Content-Type` other than `application/json` or `application/*+json`.",
    ),
    ProblemKind(
        "invalid-request", 422, "The request is not valid.",
        "A parameter, header or field is invalid: `errors` names each (`field`) and why (`reason`).",
    ),
    ProblemKind(
        "rate-limited", 429, "Too many requests from this caller; retry later.",
        "The caller (the token's `sub`) is past its rate limit.", retry_after=True,
    ),
    ProblemKind(
        "too-many-waiting-reads", 429,
        "This caller already has as many reads waiting for the projection as it may; retry once one "
        "is answered.",
        "As many of the caller's reads with `after_position` as it may have already wait.",
        retry_after=True,
    ),
    ProblemKind(
        "unavailable", 503, "The event log cannot take writes right now; nothing was recorded. Retry later.",
        "A dependency (the event log, the read store, Kafka) cannot answer now; nothing was changed.",
        retry_after=True,
    ),
    ProblemKind(
        "outcome-unknown", 503,
        "The write may or may not have been recorded: retry with the same Idempotency-Key.",
        "The event log did not say whether the write was recorded: retry with the same "
        "`Idempotency-Key` (without one, a retry may record it twice).",
        retry_after=True,
    ),
    ProblemKind(
        "projection-behind", 503, "The projection has not reached that position yet.",
        "The projection did not pass `after_position` within the wait; `position` repeats it.",
        retry_after=True,
    ),
    ProblemKind(
        "too-many-waiters", 503, "Too many reads are waiting for the projection; retry shortly.",
        "As many reads with `after_position` as the process takes already wait.", retry_after=True,
    ),
    ProblemKind(
        "too-many-streams", 503, "This process holds as many live streams as it may; retry shortly.",
        "The process holds as many live streams as it takes (`MERLIN_READ_API_LIVE_MAX_STREAMS`).",
        retry_after=True,
    ),
    ProblemKind(
        "too-many-connections", 503, "Too many connections; retry shortly.",
        "The listener has as many connections open as it takes; the connection is closed.",
        retry_after=True,
    ),
    ProblemKind(
        "not-ready", 503, "Not ready.",
        "A dependency does not answer: `checks` says which.", retry_after=True,
    ),
    # Answered before any route is found, so on no operation of a document.
    ProblemKind("method-not-allowed", 405, "Method Not Allowed", "The path does not take that method."),
    ProblemKind("request-timeout", 408, "The request took too long to arrive.", "Too slow to arrive."),
    ProblemKind("headers-too-large", 431, "The request's head is too large.", "Too large a head."),
    ProblemKind("internal", 500, "Something went wrong on our side.", "A fault of the service's own."),
)  # fmt: skip
PROBLEMS: dict[str, ProblemKind] = {problem.kind: problem for problem in _KINDS}


def problem_schema() -> dict[str, Any]:
    """The ``Problem`` schema: RFC 9457's members, with those the APIs add."""
    return {
        "type": "object",
        "description": "An RFC 9457 problem document (`application/problem+json`). `type` names the "
        f"problem: `{PROBLEM_TYPE_BASE}` followed by its kind. Members other than these may be added.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "format": "uri", "examples": [PROBLEMS["invalid-request"].type]},
            "title": {"type": "string", "description": "What went wrong, for people."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "This occurrence, for people."},
            "errors": {
                "type": "array",
                "description": "`invalid-request`: each field at fault.",
                "items": {
                    "type": "object",
                    "required": ["field", "reason"],
                    "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
            "position": {"type": "string", "description": "`projection-behind`: the position waited for."},
            "checks": {
                "type": "object",
                "description": "`not-ready`: each dependency, and whether it answers.",
                "additionalProperties": {"type": "boolean"},
            },
        },
    }


def problem_responses(*kinds: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses saying that an operation answers these problems, by status."""
    by_status: dict[int, list[ProblemKind]] = defaultdict(list)
    for kind in kinds:
        by_status[PROBLEMS[kind].status].append(PROBLEMS[kind])
    return {status: _response(found) for status, found in sorted(by_status.items())}


def problem_kinds(response: dict[str, Any]) -> list[str]:
    """The kinds a response made by ``problem_responses`` states."""
    examples = response.get("content", {}).get("application/problem+json", {}).get("examples", {})
    return [kind for kind in examples if kind in PROBLEMS]


def _response(kinds: list[ProblemKind]) -> dict[str, Any]:
    lines = [f"- `{kind.type}`: {kind.meaning}" for kind in kinds]
    response: dict[str, Any] = {
        "description": "\n".join(lines),
        "content": {
            "application/problem+json": {
                "schema": {"$ref": PROBLEM_SCHEMA},
                "examples": {
                    kind.kind: {
                        "summary": kind.title,
                        "value": {"type": kind.type, "title": kind.title, "status": kind.status},
                    }
                    for kind in kinds
                },
            }
        },
    }
    headers = {}
    if all(kind.retry_after for kind in kinds):
        headers["Retry-After"] = {"$ref": RETRY_AFTER}
    if any(kind.kind == "unauthorized" for kind in kinds):
        headers["WWW-Authenticate"] = {"$ref": WWW_AUTHENTICATE}
    if headers:
        response["headers"] = headers
    return response
