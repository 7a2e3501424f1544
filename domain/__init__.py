"""merlin's pure domain: the Message aggregate, its rules and its event envelope."""

from domain.envelope import SCHEMA_VERSION, decode, encode, headers
from domain.errors import (
    CommandRejected,
    DomainError,
    InvalidCommand,
    MalformedEvent,
    MerlinError,
)
from domain.ids import create_event_id, message_id_for, update_event_id
from domain.model import (
    EVENT_TYPES,
    MAX_BODY_CHARS,
    Command,
    CreateMessage,
    Event,
    EventType,
    Message,
    MessageCreated,
    MessageUpdated,
    UpdateMessage,
    check_applicable,
    evolve,
    is_duplicate,
    to_event,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_BODY_CHARS",
    "SCHEMA_VERSION",
    "Command",
    "CommandRejected",
    "CreateMessage",
    "DomainError",
    "Event",
    "EventType",
    "InvalidCommand",
    "MalformedEvent",
    "MerlinError",
    "Message",
    "MessageCreated",
    "MessageUpdated",
    "UpdateMessage",
    "check_applicable",
    "create_event_id",
    "decode",
    "encode",
    "evolve",
    "headers",
    "is_duplicate",
    "message_id_for",
    "to_event",
    "update_event_id",
]
