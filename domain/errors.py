"""The one exception tree of merlin: every error merlin raises on purpose is a MerlinError.

Two kinds stand outside it, by design: the HTTP answers the API layer raises for
its framework to send (``kernel.http``'s ``BodyTooLarge`` and ``Forbidden`` are
starlette ``HTTPException`` s), and private signals a module raises and catches
itself (a leading underscore: ``_Stopped``, ``_Retryable``, ``_Stale``). Errors of
the infrastructure are ``kernel.errors.InfrastructureError``; library errors are
translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class MerlinError(Exception):
    """Base of every error merlin raises on purpose."""


class DomainError(MerlinError):
    """A rule of the message model was broken."""


class InvalidCommand(DomainError):
    """A command is malformed: ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CommandRejected(DomainError):
    """A well-formed command that the message's current state refuses."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MalformedEvent(DomainError):
    """A record that is not a valid event envelope (a poison event)."""
