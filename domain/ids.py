"""Deterministic identifiers, so a retried create is the same message on any replica."""

from __future__ import annotations

from uuid import UUID, uuid5

_MESSAGE_NS = UUID("6f0f5f8e-3b55-4a59-9a4e-7f1a7d1b9c01")
_EVENT_NS = UUID("0c6b7f0e-8f0a-4a8e-9d54-2d4c1f7e3a02")


def message_id_for(room_id: str, sender_id: str, idempotency_key: str) -> UUID:
    """The message id that a create by ``sender_id`` with ``idempotency_key`` in ``room_id`` always gets.

    Keys are the sender's own: the same key from two senders makes two messages.
    """
    return uuid5(_MESSAGE_NS, f"{room_id}\x00{sender_id}\x00{idempotency_key}")


def create_event_id(room_id: str, message_id: UUID, sender_id: str, body: str) -> UUID:
    """The event id of a create: equal for a retry, different when the content differs."""
    return uuid5(_EVENT_NS, f"create\x00{room_id}\x00{message_id}\x00{sender_id}\x00{body}")


def update_event_id(room_id: str, message_id: UUID, sender_id: str, idempotency_key: str) -> UUID:
    """The event id of an update sent by ``sender_id`` with an idempotency key."""
    return uuid5(_EVENT_NS, f"update\x00{room_id}\x00{message_id}\x00{sender_id}\x00{idempotency_key}")
