"""Awaiting Kafka's admin API (confluent-kafka's futures) on the event loop, failures as one clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from kernel.errors import InfrastructureError

T = TypeVar("T")


class AdminCallFailed(InfrastructureError):
    """The broker answered an admin request with an error (``code`` says which), or did not answer."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


async def answer(call: Future[T] | Awaitable[T], what: str, timeout: float = 30.0) -> T:
    """The result of one admin request; ``what`` names it in the error if it fails or times out."""
    awaitable = asyncio.wrap_future(call) if isinstance(call, Future) else call
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        raise AdminCallFailed(f"{what} failed: {error.str()}", error.code()) from exc
    except TimeoutError as exc:
        raise AdminCallFailed(f"{what} did not answer within {timeout:g} s") from exc
