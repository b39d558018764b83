"""Digest items: the router's layout, taken apart without parsing the event twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.events import new_event
from services.bus.itemstore import digest_item, split_digest_item
from services.digest.service import read_item

TRICKY = 'He said ,"recipient":"mallory" and {"event": 1}, then \\" left'


def _raw(title: str = TRICKY) -> bytes:
    event = new_event(
        "update",
        "somerville",
        "news",
        {"title": "Hello", "body": title},
        event_id="u1",
        time=datetime(2026, 11, 22, tzinfo=UTC),
    )
    return event.model_dump_json().encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"recipient": "ana", "subscription": "s1", "channel": "email"},
        {"recipient": 'ana ,"recipient":"x"', "subscription": "s\\2", "channel": "slack"},
    ],
)
def test_round_trip_whatever_the_strings_hold(fields: dict[str, str]) -> None:
    raw = _raw()
    payload = digest_item(raw, fields)
    assert json.loads(payload) == {"event": json.loads(raw), **fields}
    assert split_digest_item(payload) == (raw, fields)


def test_fields_must_start_with_the_recipient() -> None:
    with pytest.raises(ValueError, match="recipient"):
        digest_item(_raw(), {"channel": "email", "recipient": "ana"})


@pytest.mark.parametrize(
    "payload",
    [b"", b"{}", b'{"event":{}}', b'{"channel":"email","event":{}}', b'{"event":1,"recipient":x}'],
)
def test_other_layouts_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's and ours
        split_digest_item(payload)


def test_read_item_shares_one_parsed_event_between_recipients() -> None:
    raw = _raw("shared body")
    a = read_item(digest_item(raw, {"recipient": "ana", "subscription": "s", "channel": "email"}))
    b = read_item(digest_item(raw, {"recipient": "ben", "subscription": "t", "channel": "slack"}))
    assert a[0] is b[0]
    assert a[0].data.body == "shared body"  # type: ignore[union-attr]
    assert (a[1], b[1]) == ("email", "slack")


def test_read_item_of_another_layout_is_validated_whole() -> None:
    payload = json.dumps({"channel": "slack", "event": json.loads(_raw())}).encode()
    event, channel = read_item(payload)
    assert (event.id, channel) == ("u1", "slack")


@pytest.mark.parametrize(
    "payload",
    [
        digest_item(_raw(), {"recipient": "ana", "channel": "pigeon"}),
        digest_item(b'{"id":"x"}', {"recipient": "ana", "channel": "email"}),
        b"not json",
    ],
)
def test_bad_items_raise_for_the_caller_to_skip(payload: bytes) -> None:
    with pytest.raises((ValidationError, ValueError)):
        read_item(payload)
