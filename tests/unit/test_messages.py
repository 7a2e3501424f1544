"""The write API's use cases, without HTTP: ids, the idempotency key, If-Match, the event to append."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain import InvalidCommand, MessageCreated, MessageUpdated, create_event_id, message_id_for
from write_api.messages import MAX_IDEMPOTENCY_KEY, create_message, edit_message

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MESSAGE = uuid.UUID(int=7)


def test_a_create_with_a_key_gets_the_ids_of_that_key() -> None:
    event = create_message("r1", "u1", "hi", idempotency_key="k-1", now=NOW)
    assert isinstance(event, MessageCreated)
    assert event.message_id == message_id_for("r1", "u1", "k-1")
    assert event.event_id == create_event_id("r1", event.message_id, "u1", "hi")
    assert (event.room_id, event.sender_id, event.body, event.occurred_at) == ("r1", "u1", "hi", NOW)


def test_a_retried_create_is_the_same_event_and_other_content_another() -> None:
    first = create_message("r1", "u1", "hi", idempotency_key="k-1", now=NOW)
    again = create_message("r1", "u1", "hi", idempotency_key="k-1")
    other = create_message("r1", "u1", "ho", idempotency_key="k-1")
    assert (again.message_id, again.event_id) == (first.message_id, first.event_id)
    assert other.message_id == first.message_id
    assert other.event_id != first.event_id


def test_a_client_chosen_message_id_is_kept_and_must_agree_with_the_key() -> None:
    assert create_message("r1", "u1", "hi", message_id=MESSAGE).message_id == MESSAGE
    keyed = message_id_for("r1", "u1", "k-1")
    assert create_message("r1", "u1", "hi", message_id=keyed, idempotency_key="k-1").message_id == keyed
    with pytest.raises(InvalidCommand) as caught:
        create_message("r1", "u1", "hi", message_id=MESSAGE, idempotency_key="k-1")
    assert caught.value.field == "message_id"


def test_two_senders_with_one_key_make_two_messages_and_two_edits() -> None:
    alice = create_message("r1", "alice", "hi", idempotency_key="k-1")
    mallory = create_message("r1", "mallory", "hi", idempotency_key="k-1")
    assert alice.message_id != mallory.message_id
    edits = [edit_message("r1", MESSAGE, sender, "new", idempotency_key="k-2") for sender in ("alice", "bob")]
    assert edits[0].event_id != edits[1].event_id


def test_a_create_without_key_or_id_gets_a_new_message_each_time() -> None:
    assert create_message("r1", "u1", "hi").message_id != create_message("r1", "u1", "hi").message_id


@pytest.mark.parametrize("key", ["", "k" * (MAX_IDEMPOTENCY_KEY + 1)])
def test_an_idempotency_key_out_of_bounds_is_refused(key: str) -> None:
    for attempt in (
        lambda: create_message("r1", "u1", "hi", idempotency_key=key),
        lambda: edit_message("r1", MESSAGE, "u1", "hi", idempotency_key=key),
    ):
        with pytest.raises(InvalidCommand) as caught:
            attempt()
        assert caught.value.field == "Idempotency-Key"


def test_the_model_limits_apply_to_both_use_cases() -> None:
    with pytest.raises(InvalidCommand) as caught:
        create_message("r 1", "u1", "hi")
    assert caught.value.field == "room_id"
    with pytest.raises(InvalidCommand) as caught:
        edit_message("r1", MESSAGE, "u1", "   ")
    assert caught.value.field == "body"


@pytest.mark.parametrize(("if_match", "version"), [('"3"', 3), ('W/"3"', 3), ("3", 3), (' "12" ', 12)])
def test_if_match_sets_the_expected_version(if_match: str, version: int) -> None:
    event = edit_message("r1", MESSAGE, "u1", "b", if_match=if_match, now=NOW)
    assert isinstance(event, MessageUpdated)
    assert event.expected_version == version
    assert (event.message_id, event.occurred_at) == (MESSAGE, NOW)


@pytest.mark.parametrize("if_match", ['"0"', "*", '"abc"', '"1234567890"'])
def test_if_match_that_is_no_version_is_refused(if_match: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        edit_message("r1", MESSAGE, "u1", "b", if_match=if_match)
    assert caught.value.field == "If-Match"


def test_if_match_and_expected_version_must_agree() -> None:
    assert edit_message("r1", MESSAGE, "u1", "b", expected_version=2, if_match='"2"').expected_version == 2
    with pytest.raises(InvalidCommand, match="disagrees with expected_version"):
        edit_message("r1", MESSAGE, "u1", "b", expected_version=2, if_match='"3"')


def test_an_edit_with_a_key_is_the_same_event_on_retry_and_without_one_a_new_event() -> None:
    keyed = edit_message("r1", MESSAGE, "u1", "b", idempotency_key="e-1")
    assert edit_message("r1", MESSAGE, "u1", "other", idempotency_key="e-1").event_id == keyed.event_id
    assert edit_message("r1", MESSAGE, "u1", "b").event_id != edit_message("r1", MESSAGE, "u1", "b").event_id
