"""Calls from a browser page on another origin (CORS): off unless an API is given exact origins.

The write and read APIs take ``MERLIN_WRITE_API_CORS_ORIGINS`` and ``MERLIN_READ_API_CORS_ORIGINS``
(``kernel.settings.CorsServing``, checked as they are read); ``merlin dev`` sets both to its
live-rooms page's origins (decision 0026). Callers authenticate by a bearer token in a header, never
a cookie, so no credentials mode is allowed: a page of an origin listed here still sends nothing the
browser holds on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# What a page sends beside the CORS-safelisted headers: the bearer token, JSON bodies, the edit's
# expected version, the write's idempotency key, and the position an event stream resumes after.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-Match", "Idempotency-Key", "Last-Event-ID")
# What a page may read of an answer beside the safelisted ones: an entity tag, how long to wait after
# a 503 or 429, and the request's id to quote in a report.
EXPOSED_HEADERS = ("ETag", "Retry-After", "X-Request-Id")
ALLOWED_METHODS = ("GET", "POST", "PATCH")
# How long a browser may reuse a preflight's answer (Chromium caps it at two hours).
PREFLIGHT_MAX_AGE_SECONDS = 600


def add_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Answer preflights from ``origins`` and let their pages read the answers; nothing when empty.

    Added after the authentication layer, so outside it: a preflight carries no token, and a ``401``
    must still reach the page with its origin allowed, or it would only see a network error.
    """
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )
