"""The write API's 503s counted by problem: a refused write and one whose outcome is unknown."""

from __future__ import annotations

import httpx
from prometheus_client import generate_latest
from pydantic import SecretStr

from domain import Event
from kernel.auth import ALL_ROOMS, WRITE, AuthSettings, mint
from kernel.position import Position
from kernel.producer import BrokerUnavailable, OutcomeUnknown
from write_api.app import create_app

SECRET = "s" * 32


class _Failing:
    """An appender whose writes fail in turn with each of ``failures``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)

    async def append(self, event: Event, traceparent: str | None = None) -> Position:
        raise self.failures.pop(0)

    async def ready(self) -> bool:
        return False


async def test_each_503_counts_under_the_problem_it_names() -> None:
    appender = _Failing(BrokerUnavailable("no leader"), OutcomeUnknown("timed out"), OutcomeUnknown("lost"))
    app = create_app(appender=appender, auth=AuthSettings(jwt_secret=SecretStr(SECRET)))
    token = mint(SECRET, "alice", scopes=(WRITE,), rooms=(ALL_ROOMS,))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        for _ in range(3):
            answer = await client.post(
                "/v1/rooms/lobby/messages",
                json={"sender_id": "alice", "body": "hi"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 503, answer.text
    exported = generate_latest(app.state.operations.registry).decode()
    assert 'merlin_http_unavailable_total{problem="unavailable",service="write_api"} 1.0' in exported
    assert 'merlin_http_unavailable_total{problem="outcome-unknown",service="write_api"} 2.0' in exported
