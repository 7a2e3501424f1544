"""Consumer groups a comparison made, deleted once it is over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from kernel.settings import KafkaSettings


async def delete_groups(kafka: KafkaSettings, ours: Callable[[str], bool], patience: float = 15.0) -> None:
    """Delete every group whose id ``ours`` accepts.

    A killed forwarder stays a member until its session times out: a group that is not
    empty yet is tried again for up to ``patience`` seconds, then left.
    """
    admin = AdminClient(kafka.client())
    listed = await asyncio.wrap_future(admin.list_consumer_groups(request_timeout=10))
    names = [group.group_id for group in listed.valid if ours(group.group_id)]
    deadline = time.monotonic() + patience
    while names:
        busy = []
        for name, future in admin.delete_consumer_groups(names, request_timeout=10).items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.NON_EMPTY_GROUP:
                    busy.append(name)
        if not busy or time.monotonic() > deadline:
            return
        names = busy
        await asyncio.sleep(1)
