"""Pure helpers of the web pages, as tables: words, slugs, Slack text, form errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.web.forms import event_from_form, kind_of
from services.web.outbox import Span, mrkdwn_spans, slack_view
from services.web.words import describe_pattern, slug

NAMES = {"somerville": "Shape Up Somerville"}
TOPICS = {"impact.somerville.metric.bmi": "Children's BMI"}
NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("impact.somerville.>", "Everything from Shape Up Somerville"),
        ("impact.somerville.*.>", "Everything from Shape Up Somerville"),
        ("impact.*.milestone.>", "Milestones from every initiative"),
        ("impact.>", "Everything from every initiative"),
        ("impact.somerville.metric.>", "Metric updates from Shape Up Somerville"),
        ("impact.somerville.metric.bmi", "Children's BMI in Shape Up Somerville"),
        ("impact.somerville.metric.steps", "“steps” in Shape Up Somerville"),
        ("impact.somerville.*.market", "Everything about “market” in Shape Up Somerville"),
        ("impact.oporajita-bd.meeting.>", "Meeting notes from Oporajita Bd"),
        ("impact.*.update.*", "Updates from every initiative"),
    ],
)
def test_patterns_in_words(pattern: str, words: str) -> None:
    assert describe_pattern(pattern, NAMES, TOPICS) == words


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Farmers' market opens", "farmers-market-opens"),
        ("  Crosswalks -- near SCHOOLS!  ", "crosswalks-near-schools"),
        ("Ünïcode & émoji 🎉", "n-code-moji"),
        ("", ""),
        ("a" * 80, "a" * 64),
    ],
)
def test_slug(text: str, token: str) -> None:
    assert slug(text) == token


def test_mrkdwn_links_bold_and_unescaping() -> None:
    spans = mrkdwn_spans(
        "*Due* &lt;soon&gt; <https://x.example/a?b=1|Read &amp; act> <javascript:alert(1)|x>"
    )
    assert spans == [
        Span("Due", "bold"),
        Span(" <soon> "),
        Span("Read & act", "link", "https://x.example/a?b=1"),
        Span(" "),
        Span("x"),  # not an http(s) or mailto link: text only
    ]


def test_slack_blocks_become_views() -> None:
    views = slack_view(
        [
            {"type": "header", "text": {"type": "plain_text", "text": "Market opens"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Status*\nReached"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "somerville"}]},
            {"type": "divider"},
            {"type": "image", "image_url": "https://x.example/i.png"},
        ]
    )
    assert [v.type for v in views] == ["header", "section", "context", "divider"]
    assert views[1].fields == [[Span("Status", "bold"), Span("\nReached")]]


def form(kind: str, **fields: str) -> dict[str, str]:
    return {"initiative": "somerville", "kind": kind, **fields}


@pytest.mark.parametrize(
    ("kind", "fields", "errors"),
    [
        ("milestone", {"status": "reached"}, {"title": "required"}),
        ("milestone", {"title": "T", "status": "done"}, {"status": "Input should be"}),
        (
            "milestone",
            {"title": "T", "status": "planned", "due": "soon"},
            {"due": "Input should be"},
        ),
        ("metric", {"indicator": "BMI"}, {"value": "required"}),
        ("metric", {"indicator": "BMI", "value": "high"}, {"value": "valid number"}),
        ("update", {"title": "T", "url": "ftp://x"}, {"url": "URL scheme"}),
        ("update", {"title": "T", "topic": "Not A Token"}, {"topic": "use lowercase letters"}),
        ("meeting", {"title": "M"}, {"held_at": "required"}),
        ("meeting", {"title": "M", "held_at": "tomorrow"}, {"held_at": "date and time"}),
        (
            "meeting",
            {"title": "M", "held_at": "2026-11-03T18:00", "action_items": "Call | Ana\nOops"},
            {"action_items": "line 2: write task | owner"},
        ),
        (
            "meeting",
            {"title": "M", "held_at": "2026-11-03T18:00", "attendees": "Ana\n" + "x" * 201},
            {"attendees": "line 2: String should have at most 200"},
        ),
    ],
)
def test_form_errors_land_on_their_field(
    kind: str, fields: dict[str, str], errors: dict[str, str]
) -> None:
    chosen = kind_of(kind)
    assert chosen is not None
    result = event_from_form(
        form(kind, **fields), chosen, "somerville", source="urn:t", event_id="e1", now=NOW
    )
    assert result.event is None
    assert set(result.errors) == set(errors), result.errors
    for name, start in errors.items():
        assert start in result.errors[name], result.errors


def test_a_valid_meeting_form() -> None:
    fields = {
        "title": "Steering committee",
        "held_at": "2026-11-03T18:00",
        "held_tz": "America/New_York",
        "attendees": "Ana\n\nBo\n",
        "decisions": "Open on Saturdays\nRepaint crosswalks",
        "action_items": "Find a contractor | City | 2026-12-01\nCall restaurants | Kenji",
    }
    result = event_from_form(
        form("meeting", **fields), "meeting", "somerville", source="urn:t", event_id="e1", now=NOW
    )
    assert result.errors == {}
    event = result.event
    assert event is not None
    assert event.subject == "steering-committee"
    data = event.data
    assert data.held_at.isoformat() == "2026-11-03T18:00:00-05:00"  # type: ignore[union-attr]
    assert data.attendees == ["Ana", "Bo"]  # type: ignore[union-attr]
    assert [a.owner for a in data.action_items] == ["City", "Kenji"]  # type: ignore[union-attr]
