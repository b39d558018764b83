"""Pure parts of the delivery log and of dead letters: folding records, parsing letters."""

from __future__ import annotations

import json

import pytest

from services.pipeline.deadletters import dead_filter, parse_dead_letter
from services.pipeline.deliverylog import render, summarise

T0 = "2026-10-02T09:30:00.000000+00:00"


def rec(status: str, job: str = "j1", attempt: int = 1, **extra: object) -> dict[str, object]:
    return {
        "status": status,
        "at": T0,
        "channel": "email",
        "recipient": "ann",
        "target": "email:ann@example.org",
        "job_id": job,
        "attempt": attempt,
        **extra,
    }


def test_the_latest_record_of_each_delivery_wins() -> None:
    records = [
        {"status": "routed", "at": T0, "jobs": 3, "event": "ev"},
        rec("retrying", attempt=1, error="SMTP 450", retry_in_s=0.1),
        rec("retrying", attempt=2, error="SMTP 450", retry_in_s=0.2),
        rec("sent", attempt=3, provider_id="<j1@impactbus>"),
        rec("dead", job="j2", reason="gone", error="HTTP 410"),
        {"status": "routed", "at": T0, "jobs": 3, "event": "ev"},  # a router redelivery
    ]
    log = summarise("ev", records)
    assert log.jobs == 3
    assert [(t.job_id, t.status, t.attempts) for t in log.targets] == [
        ("j1", "sent", 3),
        ("j2", "dead", 1),
    ]
    assert log.targets[0].error is None  # sent: the earlier errors are history
    assert log.targets[1].reason == "gone"
    assert log.not_attempted == 1
    lines = render(log)
    assert lines[0].startswith("event ev: routed 2026-10-02 09:30:00Z to 3 deliveries")
    assert "sent" in lines[1]
    assert "<j1@impactbus>" in lines[1]
    assert "reason gone" in lines[2]
    assert "1 more queued" in lines[3]
    assert lines[4].strip() == "1 dead, 1 sent"


def test_a_replayed_delivery_shows_as_queued_again() -> None:
    records = [rec("dead", reason="rejected", error="550"), rec("queued", attempt=0)]
    [t] = summarise("ev", records).targets
    assert (t.status, t.attempts, t.error) == ("queued", 1, None)


@pytest.mark.parametrize(
    ("body", "reason", "replayable"),
    [
        ({"reason": "gone", "channel": "webhook", "job": {"event": {"id": "e"}}}, "gone", True),
        (
            {"reason": "invalid", "payload": "junk", "subject": "impact.x.metric.y"},
            "invalid",
            False,
        ),
        ({"reason": "invalid", "channel": "email", "payload": "{}"}, "invalid", False),
    ],
)
def test_dead_letters_parse_and_say_whether_they_can_be_replayed(
    body: dict[str, object], reason: str, replayable: bool
) -> None:
    letter = parse_dead_letter(7, f"dead.{reason}.x", json.dumps(body).encode())
    assert (letter.seq, letter.reason, letter.initiative) == (7, reason, "x")
    assert letter.replayable is replayable


def test_an_unreadable_dead_letter_is_listed_not_replayable() -> None:
    letter = parse_dead_letter(3, "dead.rejected.x", b"\xff not json")
    assert letter.error == "unreadable dead letter"
    assert not letter.replayable


@pytest.mark.parametrize(
    ("reason", "initiative", "subject"),
    [(None, None, "dead.*.*"), ("gone", None, "dead.gone.*"), (None, "x", "dead.*.x")],
)
def test_dead_filter(reason: str | None, initiative: str | None, subject: str) -> None:
    assert dead_filter(reason, initiative) == subject


def test_dead_filter_refuses_wildcards_and_dots() -> None:
    with pytest.raises(ValueError, match="reason"):
        dead_filter("a.b")
