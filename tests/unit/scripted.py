"""A scripted sender for delivery tests: answers in turn, records every call."""

from __future__ import annotations

from dataclasses import dataclass, field

from webhooks.calls import Answer, CallFailed


@dataclass
class Call:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Scripted:
    """Answers calls in turn with the scripted statuses or failures, then 200."""

    answers: list[int | CallFailed]
    seen: list[Call] = field(default_factory=list)

    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        self.seen.append(Call(url, body, headers))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, CallFailed):
            raise answer
        return Answer(answer, "0" if answer in (429, 503) else None)
