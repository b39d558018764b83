"""Validation errors in the CLI's words: flags, and the expected form (pure tables)."""

from __future__ import annotations

import pytest

from schemas.errors import FieldProblem
from schemas.events import new_event
from services.cli.words import (
    POST_FLAGS,
    RECIPIENT_FLAGS,
    FlagMap,
    explain,
    flag_for,
    plain_words,
)
from services.directory.records import _new_recipient

WORDS = [
    ("date_from_datetime_parsing", {}, None, "expected a date like 2027-01-31"),
    ("datetime_parsing", {}, None, "expected a date and time with its UTC offset, like 2027-"),
    ("timezone_aware", {}, None, "expected a date and time with its UTC offset, like 2027-"),
    ("float_parsing", {}, None, "expected a number like 17.5"),
    ("string_pattern_mismatch", {"pattern": "^x$"}, "a Slack id", "expected a Slack id"),
    ("missing", {}, None, "required"),
    ("string_too_short", {"min_length": "1"}, None, "must not be empty"),
    ("string_too_long", {"max_length": "200"}, None, "must be at most 200 characters"),
    ("greater_than_equal", {"ge": "0"}, None, "must be at least 0"),
    ("literal_error", {"expected": "'planned' or 'reached'"}, None, "expected planned or reached"),
    ("extra_forbidden", {}, None, "is not an option here"),
    ("url_parsing", {}, None, "expected a URL like https://example.org/hook"),
]


@pytest.mark.parametrize(("kind", "ctx", "form", "words"), WORDS)
def test_error_types_in_plain_words(
    kind: str, ctx: dict[str, str], form: str | None, words: str
) -> None:
    problem = FieldProblem(loc=("x",), type=kind, message="Pydantic's own words", ctx=ctx)
    assert plain_words(problem, form).startswith(words)


def test_value_errors_keep_their_sentence_without_the_prefix() -> None:
    problem = FieldProblem(("t",), "value_error", "Value error, unknown time zone 'X'")
    assert plain_words(problem) == "unknown time zone 'X'"


FLAGS: list[tuple[tuple[str | int, ...], FlagMap, tuple[str, str | None]]] = [
    (("data", "due"), POST_FLAGS, ("--due", None)),
    (("subject",), POST_FLAGS, ("--topic", None)),
    (("data", "action_items", 1, "due"), POST_FLAGS, ("--action", "item 2")),
    (("data", "unit"), POST_FLAGS, ("--unit", None)),
    (("slack_channel",), RECIPIENT_FLAGS, ("--slack-channel", None)),
    (("id",), RECIPIENT_FLAGS, ("ID", None)),
]


@pytest.mark.parametrize(("loc", "flags", "expected"), FLAGS)
def test_field_paths_map_to_flags(
    loc: tuple[str | int, ...], flags: FlagMap, expected: tuple[str, str | None]
) -> None:
    assert flag_for(loc, flags) == expected


REAL = [
    (lambda: new_event("milestone", "s", "t", {"title": "x", "status": "reached",
                                               "due": "31/01/2027"}),
     POST_FLAGS, "--due: expected a date like 2027-01-31"),
    (lambda: new_event("milestone", "s", "t", {"title": "x", "status": "done"}),
     POST_FLAGS, "--status: expected planned, reached, missed or at-risk"),
    (lambda: new_event("meeting", "s", "t", {"title": "x", "held_at": "2027-01-31T18:00Z",
                                             "action_items": [{"task": "a", "owner": "b",
                                                               "due": "soon"}]}),
     POST_FLAGS, "--action (item 1, due): expected a due date like 2027-01-31"),
    (lambda: _new_recipient({"id": "a", "slack_channel": "general"}),
     RECIPIENT_FLAGS, "--slack-channel: expected a Slack channel id like C123"),
    (lambda: _new_recipient({"id": "a", "email": "nope"}),
     RECIPIENT_FLAGS, "--email: expected an email address like maria@school.example"),
    (lambda: _new_recipient({"id": "a", "timezone": "EST"}),
     RECIPIENT_FLAGS, "--timezone: time zone 'EST' is a fixed offset"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "flags", "expected"), REAL)
def test_real_schema_errors_in_the_commands_words(
    make: object, flags: FlagMap, expected: str
) -> None:
    from schemas.errors import InvalidFieldsError

    assert callable(make)
    with pytest.raises(InvalidFieldsError) as caught:
        make()
    said = explain(caught.value, flags)
    assert said.startswith(expected), said
    assert "Value error" not in said
    assert "Input should" not in said
