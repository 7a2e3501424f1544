"""The one thread a Kafka consumer runs on, so the event loop never blocks on it.

confluent-kafka's consumer blocks in ``poll`` and ``close``, and is not to be
called from two threads at once: every call to one consumer goes through the
same single thread, one after another. The events topic's consumers
(``forwarder.consumer``) and the settings topic's reader (``kernel.control``)
each own one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ConsumerThread:
    """A thread of its own for one consumer's calls, awaited from the event loop."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on the thread, once the calls before it returned."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    def stop(self) -> None:
        """Take no more calls; one under way finishes on its own."""
        self._executor.shutdown(wait=False)
