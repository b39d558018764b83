import re

import pytest

from schemas.errors import InvalidSubjectError
from schemas.subjects import (
    event_subject,
    is_wildcard,
    matches,
    parse_event_subject,
    validate_pattern,
    validate_token,
)


@pytest.mark.parametrize(
    ("initiative", "kind", "topic", "expected"),
    [
        ("somerville", "milestone", "farmers-market", "impact.somerville.milestone.farmers-market"),
        ("oporajita", "metric", "wage_gap", "impact.oporajita.metric.wage_gap"),
        ("a1", "update", "x", "impact.a1.update.x"),
    ],
)
def test_event_subject_round_trips(initiative: str, kind: str, topic: str, expected: str) -> None:
    subject = event_subject(initiative, kind, topic)
    assert subject == expected
    assert parse_event_subject(subject) == (initiative, kind, topic)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("farmers.market", "'.'"),
        ("farmers market", "' '"),
        ("*", "'*'"),
        (">", "'>'"),
        ("Somerville", "'S'"),
        ("$sys", "'$'"),
        ("", "empty"),
        ("x" * 65, "longer than 64"),
        ("caf\u00e9", "'\u00e9'"),
    ],
)
def test_bad_tokens_are_refused_with_a_clear_message(token: str, message: str) -> None:
    with pytest.raises(InvalidSubjectError, match=re.escape(message)):
        validate_token(token, "topic")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidSubjectError, match="unknown kind 'bogus'"):
        event_subject("somerville", "bogus", "x")


@pytest.mark.parametrize(
    "subject",
    ["impact.somerville.metric", "deliver.email.x", "impact.a.metric.b.c", "impact.A.metric.b"],
)
def test_parse_refuses_non_event_subjects(subject: str) -> None:
    with pytest.raises(InvalidSubjectError):
        parse_event_subject(subject)


@pytest.mark.parametrize(
    "pattern",
    [
        "impact.>",
        "impact.somerville.>",
        "impact.*.milestone.>",
        "impact.somerville.metric.bmi",
        "impact.*.*.*",
        "impact.*.metric.*",
    ],
)
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    "pattern",
    [
        "somerville.>",
        "impact",
        "impact.>.metric",
        "impact.somerville.bogus.>",
        "impact.a.metric.b.c",
        "impact.Bad.>",
        "impact..metric",
    ],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidSubjectError):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("impact.>", "impact.somerville.metric.bmi", True),
        ("impact.somerville.>", "impact.somerville.metric.bmi", True),
        ("impact.somerville.>", "impact.oporajita.metric.bmi", False),
        ("impact.*.milestone.>", "impact.oporajita.milestone.x", True),
        ("impact.*.milestone.>", "impact.oporajita.metric.x", False),
        ("impact.somerville.metric.bmi", "impact.somerville.metric.bmi", True),
        ("impact.somerville.metric.bmi", "impact.somerville.metric.bmi2", False),
        ("impact.*.*.*", "impact.a.metric.b", True),
        ("impact.*.*", "impact.a.metric.b", False),
        ("impact.a.metric.b.>", "impact.a.metric.b", False),
    ],
)
def test_matches(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_is_wildcard() -> None:
    assert is_wildcard("impact.*.metric.x")
    assert is_wildcard("impact.>")
    assert not is_wildcard("impact.a.metric.x")
