"""The write API's use cases: create and edit a message, from what a client sent to the event to append.

No HTTP here: ids, the idempotency key, ``If-Match`` and the command are
worked out from plain values, so unit tests call these directly.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from uuid import UUID

from domain import (
    CreateMessage,
    InvalidCommand,
    MessageCreated,
    MessageUpdated,
    UpdateMessage,
    create_event_id,
    message_id_for,
    to_event,
    update_event_id,
)

_IF_MATCH = re.compile(r'(?:W/)?"?(\d{1,9})"?')
MAX_IDEMPOTENCY_KEY = 255


def create_message(
    room_id: str,
    sender_id: str,
    body: str,
    *,
    message_id: UUID | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> MessageCreated:
    """The ``MessageCreated`` to append; a retry with the same key or message id gets the same ids."""
    key = _idempotency_key(idempotency_key)
    if key is not None:
        keyed = message_id_for(room_id, sender_id, key)
        if message_id is not None and message_id != keyed:
            raise InvalidCommand("message_id", "disagrees with the Idempotency-Key")
        message_id = keyed
    message_id = message_id or uuid.uuid4()
    event_id = create_event_id(room_id, message_id, sender_id, body)
    return to_event(CreateMessage(event_id, room_id, message_id, sender_id, body, now or datetime.now(UTC)))


def edit_message(
    room_id: str,
    message_id: UUID,
    sender_id: str,
    body: str,
    *,
    expected_version: int | None = None,
    if_match: str | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> MessageUpdated:
    """The ``MessageUpdated`` to append; ``If-Match`` and ``expected_version`` must agree if both are sent."""
    key = _idempotency_key(idempotency_key)
    expected = _expected_version(if_match, expected_version)
    event_id = update_event_id(room_id, message_id, sender_id, key) if key else uuid.uuid4()
    return to_event(
        UpdateMessage(event_id, room_id, message_id, sender_id, body, now or datetime.now(UTC), expected)
    )


def _idempotency_key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidCommand("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


def _expected_version(if_match: str | None, expected: int | None) -> int | None:
    if if_match is None:
        return expected
    match = _IF_MATCH.fullmatch(if_match.strip())
    if match is None or int(match.group(1)) < 1:
        raise InvalidCommand("If-Match", 'must be a version, e.g. "3"')
    version = int(match.group(1))
    if expected is not None and expected != version:
        raise InvalidCommand("If-Match", "disagrees with expected_version in the body")
    return version
