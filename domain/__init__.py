"""merlin's pure domain: the Message aggregate, its rules and its event envelope."""

from domain.envelope import SCHEMA_VERSION, decode, encode, event_type, headers
from domain.errors import (
    CommandRejected,
    DomainError,
    InvalidCommand,
    MalformedEvent,
    MerlinError,
)
from domain.ids import create_event_id, message_id_for, update_event_id
from domain.model import (
    MAX_BODY_CHARS,
    Command,
    CreateMessage,
    Event,
    Message,
    MessageCreated,
    MessageUpdated,
    UpdateMessage,
    check_applicable,
    decide,
    evolve,
    fold,
    to_event,
)

__all__ = [
    "MAX_BODY_CHARS",
    "SCHEMA_VERSION",
    "Command",
    "CommandRejected",
    "CreateMessage",
    "DomainError",
    "Event",
    "InvalidCommand",
    "MalformedEvent",
    "MerlinError",
    "Message",
    "MessageCreated",
    "MessageUpdated",
    "UpdateMessage",
    "check_applicable",
    "create_event_id",
    "decide",
    "decode",
    "encode",
    "event_type",
    "evolve",
    "fold",
    "headers",
    "message_id_for",
    "to_event",
    "update_event_id",
]
