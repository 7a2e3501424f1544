"""The settings subscription's self-check: pings read back keep it ok, a silence renews the reader."""

from __future__ import annotations

import asyncio
from typing import Any

from forwarder.subscription import Heard, SubscriptionCheck
from kernel.control import Listener


class Channel:
    """A settings topic that hands back what was written only while ``connected``."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.connected = True
        self.renewals = 0
        self.closed = 0
        self.written: list[tuple[str, dict[str, Any] | None]] = []

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def renew(self) -> None:
        self.renewals += 1

    def hear(self, name: str, value: dict[str, Any] | None) -> None:
        for listener in self.listeners:
            listener(name, value)

    async def put(self, name: str, value: dict[str, Any]) -> None:
        self.written.append((name, value))
        if self.connected:
            self.hear(name, value)

    async def delete(self, name: str) -> None:
        self.written.append((name, None))

    async def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _check(channel: Channel, clock: Clock, heard: list[Heard]) -> SubscriptionCheck:
    return SubscriptionCheck(
        channel, lambda: channel, "worker-1", every=1.0, within=3.0, report=heard.append, clock=clock
    )


async def _ping(check: SubscriptionCheck, clock: Clock, seconds: float = 1.0) -> None:
    """One round of the check's loop: ping, let the write land, a second passes, check."""
    check._ping()
    await asyncio.sleep(0)  # the ping's write is a task of its own
    await asyncio.sleep(0)
    clock.now += seconds
    check._check()


async def test_pings_read_back_keep_the_subscription_ok_with_their_round_trip() -> None:
    channel, clock, heard = Channel(), Clock(), list[Heard]()
    check = _check(channel, clock, heard)
    assert check.status()["state"] == "starting"
    await _ping(check, clock)
    assert check.status()["state"] == "ok"
    assert channel.written[0][0] == "ping/worker-1"
    assert heard == [Heard(round_trip=0.0)]
    assert channel.renewals == 0


async def test_a_silence_as_long_as_the_bound_renews_the_reader_once_a_bound_until_a_ping_is_back() -> None:
    channel, clock, heard = Channel(), Clock(), list[Heard]()
    check = _check(channel, clock, heard)
    await _ping(check, clock)
    channel.connected = False
    await _ping(check, clock)  # 1 s unheard
    await _ping(check, clock)  # 2 s
    assert (check.state, channel.renewals) == ("ok", 0)
    await _ping(check, clock)  # 3 s: the bound
    assert (check.state, channel.renewals) == ("stalled", 1)
    assert check.status()["renewals"] == 1
    for _ in range(2):  # the renewed reader gets a whole bound
        await _ping(check, clock)
    assert channel.renewals == 1
    await _ping(check, clock)
    assert channel.renewals == 2
    channel.connected = True
    await _ping(check, clock)
    assert (check.state, channel.renewals) == ("ok", 2)
    assert [h.renewed for h in heard].count(True) == 2
    assert channel.closed == 2  # each renewal closed the pinger it replaced


async def test_a_ping_written_before_the_renewal_and_read_after_it_proves_the_reader() -> None:
    channel, clock, heard = Channel(), Clock(), list[Heard]()
    check = _check(channel, clock, heard)
    channel.connected = False
    for _ in range(3):
        await _ping(check, clock)
    assert check.status()["state"] == "stalled"
    first = channel.written[0]
    channel.hear(*first)  # the new reader reads on from where the old one got to
    assert check.status()["state"] == "ok"
    assert heard[-1].round_trip == 3.0


async def test_pings_of_another_process_under_the_same_id_are_not_this_ones() -> None:
    channel, clock = Channel(), Clock()
    earlier = _check(channel, clock, [])
    channel.connected = False
    await _ping(earlier, clock)
    check = _check(channel, clock, [])
    check._ping()
    channel.hear(*channel.written[0])  # the earlier process's ping, seq 1 like this one's
    assert check.state == "starting"


async def test_closing_deletes_the_ping() -> None:
    channel, clock = Channel(), Clock()
    check = _check(channel, clock, [])
    await check.close()
    assert channel.written == [("ping/worker-1", None)]
    assert channel.closed == 1
