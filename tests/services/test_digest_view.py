"""The digest view model, its email rendering and its Slack blocks (all pure)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from schemas.directory import Recipient
from schemas.errors import InvalidInputError
from schemas.events import Event, new_event
from services.digest.slack import MAX_BLOCKS, MAX_SECTION_CHARS, digest_blocks, escape
from services.digest.view import (
    DigestView,
    MetricView,
    build_digest,
    excerpt,
    render_digest_email,
)

NOW = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)  # 08:00 in New York
ANA = Recipient(
    id="ana",
    name="Ana Silva",
    organisation="Somerville YMCA",
    timezone="America/New_York",
    digest="daily@08:00",
)
_seq = iter(range(1_000_000))


def event(
    kind: str,
    data: dict[str, Any],
    *,
    initiative: str = "somerville",
    topic: str = "bmi",
    time: datetime | None = None,
) -> Event:
    return new_event(
        kind,
        initiative,
        topic,
        data,
        event_id=f"e{next(_seq)}",
        time=time or NOW - timedelta(days=1),
    )


def metric(value: float, **data: Any) -> Event:
    time = data.pop("time", None)
    topic = data.pop("topic", "bmi")
    return event("metric", {"indicator": "BMI", "value": value, **data}, topic=topic, time=time)


def one_metric(events: list[Event], previous: dict[str, float] | None = None) -> MetricView:
    view = build_digest(ANA, events, previous or {}, NOW)
    [section] = view.initiatives
    [m] = section.metrics
    return m


# ---------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    ("goal", "value", "progress", "bar"),
    [
        ((20, 15, "decrease"), 17, 0.6, "[######----] 60%"),
        ((20, 15, "decrease"), 20, 0.0, "[----------] 0%"),
        ((20, 15, "decrease"), 22, 0.0, "[----------] 0%"),
        ((20, 15, "decrease"), 15, 1.0, "[##########] 100%"),
        ((20, 15, "decrease"), 12, 1.0, "[##########] 100%"),
        ((100, 200, "increase"), 150, 0.5, "[#####-----] 50%"),
        ((100, 200, "increase"), 199.9, 0.999, "[#########-] 99%"),
        ((100, 200, "increase"), 250, 1.0, "[##########] 100%"),
        ((0, 10, "increase"), 3, 0.3, "[###-------] 30%"),
    ],
)
def test_progress_toward_target(
    goal: tuple[float, float, str], value: float, progress: float, bar: str
) -> None:
    baseline, target, direction = goal
    m = one_metric([metric(value, baseline=baseline, target=target, direction=direction)])
    assert m.progress == pytest.approx(progress)
    assert m.bar == bar


def test_no_progress_without_baseline_or_target() -> None:
    assert one_metric([metric(5, target=10)]).progress is None
    assert one_metric([metric(5, baseline=1)]).progress is None
    assert one_metric([metric(5)]).bar == ""


@pytest.mark.parametrize(
    ("previous", "value", "change", "pct", "text"),
    [
        (18, 17, -1, -5.555, "-1 (-5.56%) since last digest"),
        (10, 12.5, 2.5, 25.0, "+2.5 (+25%) since last digest"),
        (-4, -2, 2, 50.0, "+2 (+50%) since last digest"),
        (0, 3, 3, None, "+3 since last digest"),
        (7, 7, 0, 0.0, "0 (0%) since last digest"),
    ],
)
def test_change_since_previous_digest(
    previous: float, value: float, change: float, pct: float | None, text: str
) -> None:
    m = one_metric([metric(value)], {"somerville/bmi": previous})
    assert m.previous == previous
    assert m.change == pytest.approx(change)
    assert m.change_pct == (None if pct is None else pytest.approx(pct, abs=1e-3))
    assert m.change_text == text


def test_no_change_without_previous() -> None:
    m = one_metric([metric(17)], {"other/bmi": 3})
    assert (m.previous, m.change, m.change_pct, m.change_text) == (None, None, None, "")


@pytest.mark.parametrize(
    ("direction", "target", "value", "reached"),
    [
        ("increase", 100, 100, True),
        ("increase", 100, 99.9, False),
        ("increase", 100, 130, True),
        ("decrease", 15, 15, True),
        ("decrease", 15, 14, True),
        ("decrease", 15, 15.1, False),
    ],
)
def test_target_reached(direction: str, target: float, value: float, reached: bool) -> None:
    m = one_metric([metric(value, target=target, direction=direction)])
    assert m.target_reached is reached
    assert ("target reached" in m.flags) is reached


@pytest.mark.parametrize(
    ("direction", "baseline", "previous", "value", "wrong"),
    [
        # Against a previous digest's value.
        ("decrease", 20, 17, 18, True),
        ("decrease", 20, 17, 16, False),
        ("increase", 100, 150, 140, True),
        ("increase", 100, 150, 160, False),
        ("increase", 100, 150, 150, False),
        # Beating the target further is not the wrong way.
        ("increase", None, 210, 220, False),
        # No previous digest: against the baseline.
        ("decrease", 20, None, 21, True),
        ("decrease", 20, None, 19, False),
        ("increase", 100, None, 90, True),
        # Nothing to compare with.
        ("increase", None, None, 90, False),
    ],
)
def test_wrong_way(
    direction: str, baseline: float | None, previous: float | None, value: float, wrong: bool
) -> None:
    prev = {} if previous is None else {"somerville/bmi": previous}
    data: dict[str, Any] = {
        "direction": direction,
        "target": 200 if direction == "increase" else 15,
    }
    if baseline is not None:
        data["baseline"] = baseline
    m = one_metric([metric(value, **data)], prev)
    assert m.wrong_way is wrong
    assert ("wrong way" in m.flags) is wrong


@pytest.mark.parametrize(
    ("age", "stale_after", "stale"),
    [
        (timedelta(days=29), timedelta(days=30), False),
        (timedelta(days=30, seconds=1), timedelta(days=30), True),
        (timedelta(days=8), timedelta(days=7), True),
        (timedelta(days=6), timedelta(days=7), False),
    ],
)
def test_stale(age: timedelta, stale_after: timedelta, stale: bool) -> None:
    view = build_digest(ANA, [metric(1, time=NOW - age)], {}, NOW, stale_after=stale_after)
    m = view.initiatives[0].metrics[0]
    assert m.stale is stale
    assert ("stale" in m.flags) is stale


def test_latest_value_per_indicator_and_next_values() -> None:
    events = [
        metric(19, time=NOW - timedelta(days=3)),
        metric(17, time=NOW - timedelta(days=1)),
        metric(18, time=NOW - timedelta(days=2)),
        metric(40, topic="jobs", time=NOW - timedelta(days=2)),
    ]
    previous = {"somerville/bmi": 20.0, "boston/kept": 5.0}
    view = build_digest(ANA, events, previous, NOW)
    metrics = {m.key: m for m in view.initiatives[0].metrics}
    assert metrics["somerville/bmi"].value == 17
    assert metrics["somerville/bmi"].updates == 3
    assert metrics["somerville/bmi"].change == -3
    # Indicators not updated this time keep their value for the next digest's change.
    assert view.next_values == {"somerville/bmi": 17, "somerville/jobs": 40, "boston/kept": 5}
    assert previous == {"somerville/bmi": 20.0, "boston/kept": 5.0}


def test_duplicate_events_count_once() -> None:
    e = metric(3)
    view = build_digest(ANA, [e, e], {}, NOW)
    assert view.event_count == 1
    assert view.initiatives[0].metrics[0].updates == 1


# ------------------------------------------------------------------- grouping, milestones


def test_grouped_by_initiative_then_kind() -> None:
    events = [
        event("update", {"title": "News"}, initiative="boston", topic="news"),
        metric(1),
        event("milestone", {"title": "M", "status": "reached"}, topic="m"),
        event("update", {"title": "Local"}, topic="local"),
    ]
    view = build_digest(ANA, events, {}, NOW)
    assert [s.initiative for s in view.initiatives] == ["boston", "somerville"]
    boston, somerville = view.initiatives
    assert [u.title for u in boston.updates] == ["News"]
    assert (len(somerville.metrics), len(somerville.milestones), len(somerville.updates)) == (
        1,
        1,
        1,
    )
    assert view.event_count == 4


def milestone(title: str, status: str, due: date | None, topic: str | None = None) -> Event:
    data: dict[str, Any] = {"title": title, "status": status}
    if due:
        data["due"] = due.isoformat()
    return event("milestone", data, topic=topic or title.lower().replace(" ", "-"))


def test_milestone_ordering() -> None:
    today = date(2026, 11, 22)
    events = [
        milestone("Upcoming late", "planned", today + timedelta(days=14)),
        milestone("Reached", "reached", today - timedelta(days=2)),
        milestone("Upcoming soon", "planned", today + timedelta(days=2)),
        milestone("Far away", "planned", today + timedelta(days=15)),
        milestone("No due", "planned", None),
        milestone("At risk", "at-risk", today + timedelta(days=30)),
        milestone("Missed", "missed", today - timedelta(days=5)),
        milestone("Slipped", "planned", today - timedelta(days=1)),
    ]
    ms = build_digest(ANA, events, {}, NOW).initiatives[0].milestones
    assert [m.title for m in ms] == [
        "Missed",
        "Slipped",
        "At risk",
        "Reached",
        "Upcoming soon",
        "Upcoming late",
    ]
    assert [m.label for m in ms] == [
        "missed",
        "overdue",
        "at risk",
        "reached",
        "upcoming",
        "upcoming",
    ]


def test_milestone_latest_status_wins() -> None:
    def launch(status: str, hours_ago: int) -> Event:
        data = {"title": "Launch", "status": status, "due": "2026-11-25"}
        return event("milestone", data, topic="launch", time=NOW - timedelta(hours=hours_ago))

    [m] = (
        build_digest(ANA, [launch("at-risk", 1), launch("planned", 2)], {}, NOW)
        .initiatives[0]
        .milestones
    )
    assert (m.status, m.label) == ("at-risk", "at risk")
    view = build_digest(ANA, [launch("planned", 3), launch("reached", 1)], {}, NOW)
    assert [m.label for m in view.initiatives[0].milestones] == ["reached"]


def test_far_off_planned_milestones_are_left_out() -> None:
    view = build_digest(ANA, [milestone("Far", "planned", date(2027, 6, 1))], {}, NOW)
    assert view.is_empty
    assert view.event_count == 1


# ------------------------------------------------------------------------------ meetings


def meeting(items: list[dict[str, str]], **extra: Any) -> Event:
    data = {"title": "Steering group", "held_at": "2026-11-19T15:00:00Z", **extra}
    return event("meeting", {**data, "action_items": items}, topic="steering")


def test_own_action_items_flagged_and_overdue_first() -> None:
    items = [
        {"task": "Later, mine", "owner": "ANA SILVA", "due": "2026-12-10"},
        {"task": "Not mine, overdue", "owner": "Bob", "due": "2026-11-18"},
        {"task": "Mine by org, no due", "owner": " somerville ymca "},
        {"task": "Mine by id, overdue", "owner": "ana", "due": "2026-11-20"},
        {"task": "Due today", "owner": "Bob", "due": "2026-11-22"},
    ]
    view = build_digest(ANA, [meeting(items)], {}, NOW)
    [mt] = view.initiatives[0].meetings
    assert [(a.task, a.mine, a.overdue) for a in mt.action_items] == [
        ("Not mine, overdue", False, True),
        ("Mine by id, overdue", True, True),
        ("Due today", False, False),
        ("Later, mine", True, False),
        ("Mine by org, no due", True, False),
    ]
    assert [a.task for a in view.my_action_items] == [
        "Mine by id, overdue",
        "Later, mine",
        "Mine by org, no due",
    ]
    assert mt.held_text == "19 Nov 2026, 10:00 (America/New_York)"


def test_overdue_uses_the_recipients_date() -> None:
    # 03:00 UTC on the 23rd is still the 22nd in New York: due the 22nd is not overdue yet.
    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    view = build_digest(ANA, [meeting([{"task": "T", "owner": "x", "due": "2026-11-22"}])], {}, now)
    assert not view.initiatives[0].meetings[0].action_items[0].overdue


def test_one_event_seen_by_different_recipients_gets_each_their_view() -> None:
    # Views are made once per (event, context) and shared: the context must be all of it.
    m = metric(17, baseline=20, target=15, direction="decrease")
    mt = meeting([{"task": "Book the hall", "owner": "Ana Silva", "due": "2026-11-21"}])
    ms = milestone("Launch", "planned", date(2026, 11, 21))
    bob = ANA.model_copy(update={"id": "bob", "name": "Bob", "timezone": "Asia/Dhaka"})

    def views(who: Recipient, previous: dict[str, float], now: datetime) -> tuple[Any, ...]:
        [section] = build_digest(who, [m, mt, ms], previous, now).initiatives
        return section.metrics[0], section.meetings[0], section.milestones[0]

    ana = views(ANA, {"somerville/bmi": 18}, NOW)
    assert views(ANA, {"somerville/bmi": 18}, NOW) == ana  # the same context, the same views
    other = views(bob, {"somerville/bmi": 16}, NOW - timedelta(days=2))
    assert (ana[0].change, other[0].change) == (-1, 1)
    assert (ana[0].wrong_way, other[0].wrong_way) == (False, True)
    assert ana[1].action_items[0].mine
    assert not other[1].action_items[0].mine
    assert (ana[1].held_text, other[1].held_text) == (
        "19 Nov 2026, 10:00 (America/New_York)",
        "19 Nov 2026, 21:00 (Asia/Dhaka)",
    )
    assert ana[1].action_items[0].overdue
    assert not other[1].action_items[0].overdue
    assert ana[2].overdue
    assert not other[2].overdue
    stale = views(ANA, {"somerville/bmi": 18}, NOW + timedelta(days=60))
    assert stale[0].stale
    assert not ana[0].stale


def test_naive_now_rejected() -> None:
    with pytest.raises(InvalidInputError):
        build_digest(ANA, [], {}, datetime(2026, 1, 1))


# ------------------------------------------------------------------------------- updates


@pytest.mark.parametrize(
    ("body", "text", "cut"),
    [
        ("", "", False),
        ("One line", "One line", False),
        ("a\n\nb\nc", "a\nb\nc", False),
        ("a\nb\nc\nd", "a\nb\nc …", True),
        ("word " * 100, ("word " * 55).strip() + "…", True),
    ],
)
def test_excerpt(body: str, text: str, cut: bool) -> None:
    got, truncated = excerpt(body)
    assert (got, truncated) == (text, cut)
    assert len(got) <= 280


def test_update_view() -> None:
    body = "First\nSecond\nThird\nFourth"
    e = event("update", {"title": "News", "body": body, "url": "https://x.org/a"}, topic="n")
    [u] = build_digest(ANA, [e], {}, NOW).initiatives[0].updates
    assert (u.title, u.excerpt, u.truncated, u.url) == (
        "News",
        "First\nSecond\nThird …",
        True,
        "https://x.org/a",
    )


# ------------------------------------------------------------------------------- email


def full_view() -> DigestView:
    events = [
        metric(17, baseline=20, target=15, direction="decrease", unit="%"),
        metric(120, topic="jobs", baseline=100, target=110, time=NOW - timedelta(days=40)),
        metric(5, topic="wrong", baseline=10, target=20),
        milestone("Grant filed", "missed", date(2026, 11, 1)),
        meeting(
            [{"task": "Book hall", "owner": "Ana Silva", "due": "2026-11-20"}],
            decisions=["Fund it"],
        ),
        event("update", {"title": "News", "body": "Hello\nworld", "url": "https://x.org/?a=1&b=2"}),
    ]
    return build_digest(ANA, events, {"somerville/bmi": 18}, NOW)


def test_email_parts() -> None:
    subject, text, html = render_digest_email(full_view(), "https://hub.example/prefs?t=a&u=b")
    assert subject == (
        "Daily digest 2026-11-22: 6 updates from 1 initiative - 1 of your action items overdue"
    )
    assert "\n" not in subject
    # Text part: no HTML, the text bar, flags as words, own items marked.
    assert not re.search(r"<[a-zA-Z/!]", text)
    assert "&amp;" not in text
    assert "[######----] 60%" in text
    assert "TARGET REACHED" in text
    assert "WRONG WAY" in text
    assert "STALE" in text
    assert ">> Book hall" in text
    assert "https://hub.example/prefs?t=a&u=b" in text
    # HTML part: a table progress bar without images, flags as words, own items highlighted.
    assert '<td width="60%"' in html
    assert "<img" not in html
    assert "@import" not in html
    assert "<link" not in html
    assert "target reached" in html
    assert "wrong way" in html
    assert ">stale<" in html
    assert "Yours:" in html
    assert 'href="https://hub.example/prefs?t=a&amp;u=b"' in html
    assert 'name="viewport"' in html


def test_html_escapes_untrusted_text() -> None:
    events = [
        event("update", {"title": "<script>alert(1)</script>", "body": "<b>x</b> & y"}),
        event("milestone", {"title": '"><img src=x onerror=alert(1)>', "status": "missed"}),
    ]
    _, text, html = render_digest_email(build_digest(ANA, events, {}, NOW), None)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html
    # The text part is text/plain: it shows the title as written.
    assert "<script>alert(1)</script>" in text
    assert "preferences" not in text


def test_email_of_an_empty_digest() -> None:
    subject, text, html = render_digest_email(build_digest(ANA, [], {}, NOW), None)
    assert subject == "Daily digest 2026-11-22: nothing new"
    assert "Nothing new" in text
    assert "Nothing new" in html


def test_weekly_subject_uses_iso_week() -> None:
    weekly = ANA.model_copy(update={"digest": "weekly@sun-08:00"})
    view = build_digest(weekly, [metric(1)], {}, NOW)
    assert view.period == "2026-W47"
    assert render_digest_email(view, None)[0].startswith("Weekly digest 2026-W47: 1 update from")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x", ""])
def test_preferences_link_must_be_http(url: str) -> None:
    with pytest.raises(InvalidInputError):
        render_digest_email(full_view(), url)


# ------------------------------------------------------------------------------- slack


def all_text(blocks: list[dict[str, object]]) -> str:
    return json.dumps(blocks)


def test_slack_escapes_mentions_and_markup() -> None:
    events = [
        event(
            "update",
            {"title": "<!channel> & <@U123>", "body": "<!here> hi", "url": "https://x.org/a|b"},
        ),
        metric(3, unit="<!everyone>"),
        meeting([{"task": "<!subteam^S1>", "owner": "Ana Silva"}]),
    ]
    blocks = digest_blocks(build_digest(ANA, events, {}, NOW))
    dumped = all_text(blocks)
    for mention in ("<!channel>", "<@U123>", "<!here>", "<!everyone>", "<!subteam"):
        assert mention not in dumped
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" in dumped
    assert "<https://x.org/a%7Cb|" in dumped
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_slack_blocks_respect_limits_with_200_events() -> None:
    long = "word " * 36 + "<!channel>"
    events: list[Event] = []
    for i in range(200):
        initiative = f"initiative-{i % 7}"
        kind = ("metric", "milestone", "meeting", "update")[i % 4]
        data: dict[str, Any] = {  # type: ignore[assignment]
            "metric": {"indicator": f"{long} {i}", "value": i, "unit": "&&&&&&", "target": 500},
            "milestone": {"title": f"{long} {i}", "status": "missed"},
            "meeting": {
                "title": f"{long} {i}",
                "held_at": "2026-11-19T15:00:00Z",
                "decisions": [long * 5] * 10,
                "action_items": [{"task": long, "owner": "Ana Silva"}] * 10,
            },
            "update": {"title": f"{long} {i}", "body": "&" * 2000},
        }[kind]
        events.append(event(kind, data, initiative=initiative, topic=f"t{i}"))
    view = build_digest(ANA, events, {}, NOW)
    blocks = digest_blocks(view)
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            text = block["text"]
            assert isinstance(text, dict)
            assert len(text["text"]) <= MAX_SECTION_CHARS
            assert not re.search(r"&[a-z]*…", text["text"])  # no entity cut in half
        if block["type"] == "header":
            text = block["text"]
            assert isinstance(text, dict)
            assert len(text["text"]) <= 150
    assert "<!channel>" not in all_text(blocks)
    assert blocks[-1]["type"] == "context"
    assert "more entries" in all_text(blocks[-1:])


def test_slack_small_digest_keeps_everything() -> None:
    blocks = digest_blocks(full_view())
    dumped = all_text(blocks)
    assert blocks[0]["type"] == "header"
    assert "more entries" not in dumped
    assert "Your action items" in dumped
    assert "[######----] 60%" in dumped
    assert "WRONG WAY" in dumped
    assert "*Yours:* Book hall" in dumped
