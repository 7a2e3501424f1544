"""What an operator can do to an endpoint: see its status, pause, resume, rewind, unblock a room.

Pause and unblock are records on the settings topic that every forwarder
follows (``kernel.control``); a rewind pauses the endpoint until its group is
empty, moves the group's offsets with Kafka's admin API (which allows it only
then, as Kafka Connect does for a stopped connector), and resumes it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.exceptions import HTTPException

from admin_api.state import AdminApi
from domain.errors import InvalidCommand
from kernel.control import BLOCKED, DISABLED, PAUSED, RATES, UNBLOCK, key, now

# A rate report older than this is from a forwarder that is gone.
_RATES_FRESH = timedelta(seconds=30)
_UNBLOCK_WAIT = 3.0


async def status(api: AdminApi, name: str) -> dict[str, Any]:
    """Offsets, lag, the oldest undelivered event's age, pause, blocked rooms and rates of ``name``."""
    api.endpoint(name)
    group = api.group(name)
    partitions = await api.groups.partitions()
    committed, ends = await asyncio.gather(
        api.groups.committed(group, partitions), api.groups.ends(partitions)
    )
    rows, behind = [], {}
    for partition in partitions:
        done, end = committed.get(partition), ends[partition]
        lag = None if done is None else max(0, end - done)
        if done is not None and lag:
            behind[partition] = done
        rows.append({"partition": partition, "committed": done, "end": end, "lag": lag})
    written = await api.groups.timestamps(behind)
    oldest = min(written.values(), default=None)
    return {
        "endpoint": name,
        "group": group,
        "paused": key(PAUSED, name) in api.control.values,
        "disabled": disabled(api.control.values.get(key(PAUSED, name))),
        "lag": sum(row["lag"] or 0 for row in rows),
        "oldest_undelivered_age_seconds": None
        if oldest is None
        else round(max(0.0, time.time() - oldest), 3),
        "partitions": rows,
        "blocked_rooms": [
            {
                "room_id": room,
                "event_id": report.get("event_id"),
                "partition": report.get("partition"),
                "offset": report.get("offset"),
                "attempts": len(report.get("attempts") or []),
                "last_error": report.get("reason"),
                "since": report.get("since"),
            }
            for room, report in sorted(api.control.under(BLOCKED, name).items())
        ],
        "rates": _rates(api, name),
    }


def _rates(api: AdminApi, name: str) -> dict[str, Any]:
    cutoff = datetime.now(UTC) - _RATES_FRESH
    fresh = {
        instance: report
        for instance, report in api.control.under(RATES, name).items()
        if _when(report.get("at")) > cutoff
    }
    return {
        "delivered_per_s": round(sum(float(r.get("delivered_per_s", 0)) for r in fresh.values()), 3),
        "failed_per_s": round(sum(float(r.get("failed_per_s", 0)) for r in fresh.values()), 3),
        "instances": sorted(fresh),
    }


def _when(text: object) -> datetime:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def disabled(pause: dict[str, Any] | None) -> dict[str, Any] | None:
    """When and why a forwarder disabled the endpoint (its pause record says), or None."""
    if pause is None or pause.get("by") != DISABLED:
        return None
    return {"at": pause.get("at"), "reason": pause.get("reason"), "instance": pause.get("instance")}


async def pause(api: AdminApi, name: str) -> dict[str, Any]:
    api.endpoint(name)
    await api.writer.put(key(PAUSED, name), {"at": now()})
    api.acted("pause", name)
    return {"endpoint": name, "paused": True}


async def resume(api: AdminApi, name: str) -> dict[str, Any]:
    api.endpoint(name)
    await api.writer.delete(key(PAUSED, name))
    api.acted("resume", name)
    return {"endpoint": name, "paused": False}


async def rewind(api: AdminApi, name: str, to: datetime | dict[int, int]) -> dict[str, Any]:
    """Move ``name``'s group to a time or to offsets: what follows is delivered again, same event ids."""
    api.endpoint(name)
    group = api.group(name)
    partitions = await api.groups.partitions()
    if isinstance(to, datetime):
        target = await api.groups.at_time(partitions, to)
    else:
        ends = await api.groups.ends(partitions)
        for partition, offset in to.items():
            if partition not in ends:
                raise InvalidCommand(f"to.{partition}", f"the events topic has no partition {partition}")
            if not 0 <= offset <= ends[partition]:
                raise InvalidCommand(f"to.{partition}", f"must be between 0 and {ends[partition]}")
        target = dict(to)
    was_paused = key(PAUSED, name) in api.control.values
    if not was_paused:
        await api.writer.put(key(PAUSED, name), {"at": now(), "by": "rewind"})
    try:
        deadline = time.monotonic() + api.settings.rewind_wait_seconds
        while not await api.groups.empty(group):
            if time.monotonic() > deadline:
                raise HTTPException(
                    409,
                    f"the forwarders of {name!r} did not leave group {group} within "
                    f"{api.settings.rewind_wait_seconds:g} s; nothing was moved",
                )
            await asyncio.sleep(0.2)
        before = await api.groups.committed(group, partitions)
        await api.groups.move(group, target)
    finally:
        if not was_paused:
            await api.writer.delete(key(PAUSED, name))
    api.acted("rewind", name, offsets=target)
    return {
        "endpoint": name,
        "offsets": {str(p): o for p, o in sorted(target.items())},
        "previous": {str(p): o for p, o in sorted(before.items()) if p in target},
        "paused": was_paused,
    }


async def unblock(api: AdminApi, name: str, room: str, action: str) -> dict[str, Any]:
    """Ask the forwarder holding ``room`` to retry its head event now, or skip it to the dead-letter topic."""
    api.endpoint(name)
    report = api.control.values.get(key(BLOCKED, name, room))
    if report is None:
        raise HTTPException(404, f"room {room!r} is not blocked at endpoint {name!r}")
    event_id = str(report.get("event_id"))
    command = key(UNBLOCK, name, room)
    await api.writer.put(command, {"action": action, "event_id": event_id, "at": now()})
    api.acted("unblock", name, room=room, event_id=event_id, unblock=action)
    # The forwarder deletes the command once it carried it out: wait a little to say so.
    done = await api.control.gone(command, _UNBLOCK_WAIT)
    return {"endpoint": name, "room_id": room, "event_id": event_id, "action": action, "done": done}
