"""Errors of the infrastructure merlin runs on (broker, database, tools), under the one MerlinError tree."""

from __future__ import annotations

from domain.errors import MerlinError


class InfrastructureError(MerlinError):
    """A piece of infrastructure (broker, database, tool) did not do what was asked."""


class ToolMissing(InfrastructureError):
    """A program merlin needs is not installed; the message says how to get it."""
