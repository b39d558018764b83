"""Time zone input: places' IANA names only, with a suggestion for what was meant."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.directory import Recipient, suggest_timezones

SUGGESTIONS = [
    ("EST", ["America/New_York"]),
    ("EST5EDT", ["America/New_York"]),
    ("CST6CDT", ["America/Chicago"]),
    ("MST7MDT", ["America/Denver"]),
    ("PST8PDT", ["America/Los_Angeles"]),
    ("HST", ["Pacific/Honolulu"]),
    ("pst", ["America/Los_Angeles"]),
    ("America/Bostn", ["America/New_York"]),
    ("America/Boston", ["America/New_York"]),
    ("america/new_york", ["America/New_York"]),
    ("Europe/Berln", ["Europe/Berlin"]),
    ("Asia/Dhak", ["Asia/Dhaka"]),
    ("America/Sao_Paolo", ["America/Sao_Paulo"]),
    ("Mars/Olympus", []),
]


@pytest.mark.parametrize(("typed", "suggested"), SUGGESTIONS)
def test_suggestions(typed: str, suggested: list[str]) -> None:
    assert suggest_timezones(typed) == suggested


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "America/New_York", "Asia/Dhaka"])
def test_places_and_utc_are_accepted(zone: str) -> None:
    assert Recipient.model_validate({"id": "a", "timezone": zone}).timezone == zone


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("EST", "fixed offset that ignores daylight saving time: use a place's zone, e.g. "
         "America/New_York"),
        ("PST8PDT", "America/Los_Angeles"),
        ("America/Bostn", "did you mean America/New_York?"),
        ("Mars/Olympus", "use an IANA name like Europe/Berlin"),
    ],
)  # fmt: skip
def test_input_refuses_with_the_suggestion(typed: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Recipient.model_validate({"id": "a", "timezone": typed})
    assert message in caught.value.errors()[0]["msg"]


def test_a_stored_recipient_with_an_old_name_still_loads() -> None:
    stored = Recipient.model_validate_json('{"id": "a", "timezone": "EST"}')
    assert stored.timezone == "EST"
    with pytest.raises(ValidationError):
        Recipient.model_validate_json('{"id": "a", "timezone": "Mars/Olympus"}')
