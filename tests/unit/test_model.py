"""The Message aggregate's rules: versions, expected_version, original sender, limits, idempotent creates."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import (
    MAX_BODY_CHARS,
    CommandRejected,
    CreateMessage,
    Event,
    InvalidCommand,
    Message,
    MessageCreated,
    UpdateMessage,
    create_event_id,
    decode,
    encode,
    evolve,
    is_duplicate,
    message_id_for,
    to_event,
)
from read_store.projection import Record, Snapshot, project
from tests.unit.strategies import bodies

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MESSAGE = uuid.UUID(int=1)


def create(body: str = "hi", sender: str = "u1") -> CreateMessage:
    return CreateMessage(uuid.uuid4(), "r1", MESSAGE, sender, body, T0)


def update(body: str, sender: str = "u1", expected: int | None = None, minutes: int = 1) -> UpdateMessage:
    return UpdateMessage(uuid.uuid4(), "r1", MESSAGE, sender, body, T0 + timedelta(minutes=minutes), expected)


def run(*commands: CreateMessage | UpdateMessage) -> tuple[list[Event], Message | None]:
    """Record each command as an event and apply it, as the projection does; a repeated create yields none."""
    state: Message | None = None
    history: list[Event] = []
    for command in commands:
        event = to_event(command)
        if not is_duplicate(state, event):
            state = evolve(state, event)
            history.append(event)
    return history, state


def test_create_starts_at_version_one() -> None:
    """A create makes version 1, created and updated at its time."""
    _, state = run(create("hello"))
    assert state is not None
    assert (state.body, state.version, state.created_at, state.updated_at) == ("hello", 1, T0, T0)


def test_each_update_bumps_the_version() -> None:
    """Every accepted update adds one to the version and takes its body and time."""
    _, state = run(create(), update("b", expected=1), update("c", expected=2, minutes=2), update("d"))
    assert state is not None
    assert (state.body, state.version) == ("d", 4)
    assert state.updated_at == T0 + timedelta(minutes=1)


def test_a_stale_expected_version_is_rejected() -> None:
    """An update expecting an older version is refused with version_conflict."""
    _, state = run(create(), update("b"))
    with pytest.raises(CommandRejected, match="expected version 1, message is at version 2") as caught:
        is_duplicate(state, to_event(update("c", expected=1)))
    assert caught.value.code == "version_conflict"


def test_only_the_original_sender_may_edit() -> None:
    """An update from another sender is refused with forbidden."""
    _, state = run(create(sender="alice"))
    with pytest.raises(CommandRejected) as caught:
        is_duplicate(state, to_event(update("mine now", sender="mallory")))
    assert caught.value.code == "forbidden"


def test_updating_a_missing_message_is_rejected() -> None:
    """An update of a message that does not exist is refused with not_found."""
    with pytest.raises(CommandRejected) as caught:
        is_duplicate(None, to_event(update("x")))
    assert caught.value.code == "not_found"


def test_a_repeated_create_is_a_no_op_and_a_different_one_a_conflict() -> None:
    """The same create again is a duplicate; another body under the same id is a conflict."""
    history, state = run(create("hi"))
    assert is_duplicate(state, to_event(create("hi"))) is True
    with pytest.raises(CommandRejected) as caught:
        is_duplicate(state, to_event(create("other")))
    assert caught.value.code == "conflict"
    assert len(history) == 1


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (CreateMessage(uuid.uuid4(), "", MESSAGE, "u1", "hi", T0), "room_id"),
        (CreateMessage(uuid.uuid4(), "r 1", MESSAGE, "u1", "hi", T0), "room_id"),
        (CreateMessage(uuid.uuid4(), "r" * 129, MESSAGE, "u1", "hi", T0), "room_id"),
        (CreateMessage(uuid.uuid4(), "r1", MESSAGE, "", "hi", T0), "sender_id"),
        (CreateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", " \n\t", T0), "body"),
        (CreateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", "x" * (MAX_BODY_CHARS + 1), T0), "body"),
        (UpdateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", "hi", T0, 0), "expected_version"),
        (UpdateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", "hi", T0, 2**31), "expected_version"),
    ],
)
def test_invalid_commands_name_their_field(command: CreateMessage | UpdateMessage, field: str) -> None:
    """A command breaking a limit is refused before it becomes an event, naming the field."""
    with pytest.raises(InvalidCommand) as caught:
        to_event(command)
    assert caught.value.field == field


def _create_with(body: str) -> CreateMessage:
    return CreateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", body, T0)


def _update_with(body: str) -> UpdateMessage:
    return UpdateMessage(uuid.uuid4(), "r1", MESSAGE, "u1", body, T0, 1)


_COMMANDS = pytest.mark.parametrize("command", [_create_with, _update_with], ids=["create", "update"])


@_COMMANDS
@pytest.mark.parametrize(
    ("body", "found"),
    [
        ("a\x00b", "U+0000 at character 1"),
        ("ab\x1f", "U+001F at character 2"),
        ("\x0bvertical tab", "U+000B at character 0"),
        ("lone \ud800 surrogate", "U+D800 at character 5"),
        ("tab\tok, then \x00", "U+0000 at character 13"),
        ("del\x7f", "U+007F at character 3"),
        ("csi \x9b31m", "U+009B at character 4"),
        ("\x80 first C1", "U+0080 at character 0"),
    ],
    ids=["nul", "unit-separator", "vertical-tab", "lone-surrogate", "after-a-tab", "del", "csi", "c1"],
)
def test_a_body_no_store_can_keep_is_refused_naming_the_character(
    command: Callable[[str], CreateMessage | UpdateMessage], body: str, found: str
) -> None:
    """C0 controls other than tab, LF and CR, and lone surrogates, are refused on the body field,
    naming the first such code point and where it is."""
    with pytest.raises(InvalidCommand) as caught:
        to_event(command(body))
    assert caught.value.field == "body"
    assert caught.value.reason == (
        f"must not hold control characters other than tab and newlines, nor lone surrogates (found {found})"
    )
    assert str(caught.value) == f"body: {caught.value.reason}"


@_COMMANDS
@pytest.mark.parametrize(
    "body",
    ["\u200b\u200b", "\u2060", "\u3000\u200b", "\u00ad", "\u0301\u0301\u0301", "\u3164", "\u115f",
     "\u2800", "\ufffc", "\u3164 \u0301\u2800"],
)  # fmt: skip
def test_a_body_with_nothing_visible_is_refused(
    command: Callable[[str], CreateMessage | UpdateMessage], body: str
) -> None:
    """Zero-width spaces, word joiners, ideographic spaces, soft hyphens, combining marks alone, Hangul
    fillers, the blank Braille pattern, the object replacement character: nothing to see."""
    with pytest.raises(InvalidCommand, match="visible") as caught:
        to_event(command(body))
    assert caught.value.field == "body"


def test_an_invisible_body_in_the_log_is_read_as_it_is() -> None:
    event = MessageCreated(uuid.uuid4(), "r1", MESSAGE, "u1", "\u200b", T0)
    assert decode(encode(event)) == event


@_COMMANDS
@pytest.mark.parametrize(
    "body", ["tab\there", "line\nfeed", "crlf\r\n", "é😀", "e\u0301", "a\u200bb", "\u314e"]
)
def test_tab_newlines_and_non_ascii_bodies_are_accepted(
    command: Callable[[str], CreateMessage | UpdateMessage], body: str
) -> None:
    """Tab, LF, CR, DEL and characters beyond ASCII (astral ones too) are kept as they are."""
    assert to_event(command(body)).body == body


def test_an_event_read_from_the_log_is_not_checked_for_storable_characters() -> None:
    """The check is on new commands only: an old log record with a NUL body decodes as it is."""
    event = MessageCreated(uuid.uuid4(), "r1", MESSAGE, "u1", "old\x00body", T0)
    assert decode(encode(event)) == event


def test_a_body_at_the_limit_is_accepted() -> None:
    """A body of exactly the maximum length is accepted."""
    _, state = run(create("x" * MAX_BODY_CHARS))
    assert state is not None


def test_ids_are_deterministic_from_room_and_key() -> None:
    """Message and create event ids depend only on their inputs."""
    assert message_id_for("r1", "u1", "key-1") == message_id_for("r1", "u1", "key-1")
    assert message_id_for("r1", "u1", "key-1") != message_id_for("r2", "u1", "key-1")
    assert message_id_for("r1", "u1", "key-1") != message_id_for("r1", "u2", "key-1")  # keys are per sender
    assert create_event_id("r1", MESSAGE, "u1", "hi") == create_event_id("r1", MESSAGE, "u1", "hi")
    assert create_event_id("r1", MESSAGE, "u1", "hi") != create_event_id("r1", MESSAGE, "u1", "ho")


@given(bodies, st.lists(st.tuples(bodies, st.sampled_from(["u1", "u2"]), st.integers(0, 12)), max_size=20))
def test_versions_count_the_accepted_updates(first: str, edits: list[tuple[str, str, int]]) -> None:
    """Only accepted updates bump the version; projecting the history lands on the same message."""
    message_id = uuid.uuid4()
    history: list[Event] = [MessageCreated(uuid.uuid4(), "r1", message_id, "u1", first, T0)]
    accepted = 0
    state = evolve(None, history[0])
    for body, sender, expected in edits:
        event = to_event(UpdateMessage(uuid.uuid4(), "r1", message_id, sender, body, T0, expected or None))
        try:
            is_duplicate(state, event)
        except CommandRejected:
            continue
        history.append(event)
        state = evolve(state, event)
        accepted += 1
    assert state is not None
    assert state.version == 1 + accepted
    changes = project([Record(0, offset, event) for offset, event in enumerate(history)], Snapshot())
    assert changes.messages[("r1", message_id)].message == state
