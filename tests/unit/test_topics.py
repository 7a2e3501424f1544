"""The topic names of the public contract (docs/DESIGN.md): their defaults are not ours to change quietly."""

from __future__ import annotations

from kernel.settings import KafkaSettings


def test_the_default_topics_are_the_contracts() -> None:
    defaults = {name: field.default for name, field in KafkaSettings.model_fields.items()}
    assert defaults["events_topic"] == "merlin.message-events"
    assert defaults["dead_letter_topic"] == "merlin.message-events.dlq"
    assert defaults["settings_topic"] == "merlin.settings"
