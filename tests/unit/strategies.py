"""Hypothesis strategies for valid commands and events of the message model."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

from hypothesis import strategies as st

from domain import MAX_BODY_CHARS, MessageCreated, MessageUpdated

identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,40}", fullmatch=True)
# What a client may send: no C0 control characters but tab and newlines, no lone surrogates.
_STORABLE = st.characters(
    exclude_categories=["Cs"],
    exclude_characters=[chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r"],
)
_BLANK = "\u115f\u1160\u3164\uffa0\u2800\ufffc"
# ... with at least one visible character (not only spaces, zero-width or other invisible ones, marks
# without a base, or blank letters and symbols).
bodies = st.text(_STORABLE, min_size=1, max_size=MAX_BODY_CHARS).filter(
    lambda body: any(unicodedata.category(c)[0] not in "ZCM" and c not in _BLANK for c in body)
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))

created = st.builds(
    MessageCreated,
    event_id=st.uuids(),
    room_id=identifiers,
    message_id=st.uuids(),
    sender_id=identifiers,
    body=bodies,
    occurred_at=moments,
)
updated = st.builds(
    MessageUpdated,
    event_id=st.uuids(),
    room_id=identifiers,
    message_id=st.uuids(),
    sender_id=identifiers,
    body=bodies,
    occurred_at=moments,
    expected_version=st.none() | st.integers(min_value=1, max_value=10_000),
)
events = created | updated
