import random
from datetime import UTC, datetime

import pytest

from schemas.directory import Subscription
from schemas.subjects import matches
from services.directory.matching import SubscriptionIndex

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def sub(recipient: str, pattern: str, channel: str = "email") -> Subscription:
    return Subscription(
        id=Subscription.make_id(recipient, pattern, channel),
        recipient=recipient,
        pattern=pattern,
        channel=channel,
        created_at=NOW,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("patterns", "subject", "expected"),
    [
        (["impact.>"], "impact.s.metric.bmi", {"impact.>"}),
        (["impact.s.>", "impact.o.>"], "impact.s.metric.bmi", {"impact.s.>"}),
        (
            ["impact.*.milestone.>", "impact.s.metric.bmi"],
            "impact.s.metric.bmi",
            {"impact.s.metric.bmi"},
        ),
        (["impact.*.milestone.>"], "impact.o.milestone.x", {"impact.*.milestone.>"}),
        (["impact.*.*.*", "impact.*.*"], "impact.a.update.t", {"impact.*.*.*"}),
        (["impact.s.metric.>"], "impact.s.metric.bmi", {"impact.s.metric.>"}),
        ([], "impact.s.metric.bmi", set()),
    ],
)
def test_index_matches_like_the_nats_rule(
    patterns: list[str], subject: str, expected: set[str]
) -> None:
    index = SubscriptionIndex([sub(f"r{i}", p) for i, p in enumerate(patterns)])
    assert {s.pattern for s in index.match(subject)} == expected


def test_index_agrees_with_matches_on_random_subscriptions() -> None:
    rng = random.Random(7)
    inits, kinds, topics = ["a", "b", "c"], ["metric", "milestone", "meeting", "update"], ["x", "y"]

    def pattern() -> str:
        parts = ["impact"]
        for pool in (inits, kinds, topics):
            roll = rng.random()
            if roll < 0.15:
                parts.append(">")
                return ".".join(parts)
            parts.append("*" if roll < 0.4 else rng.choice(pool))
        return ".".join(parts)

    subs = [sub(f"r{i}", pattern()) for i in range(400)]
    index = SubscriptionIndex(subs)
    for i in inits:
        for k in kinds:
            for t in topics:
                subject = f"impact.{i}.{k}.{t}"
                want = {s.id for s in subs if matches(s.pattern, subject)}
                assert {s.id for s in index.match(subject)} == want


def test_remove_and_replace() -> None:
    a, b = sub("a", "impact.s.>"), sub("b", "impact.s.metric.bmi")
    index = SubscriptionIndex([a, b])
    assert index.remove(a.id) == a
    assert index.remove(a.id) is None
    assert [s.id for s in index.match("impact.s.metric.bmi")] == [b.id]
    index.remove(b.id)
    assert index.match("impact.s.metric.bmi") == []
    assert len(index) == 0
    index.add(b)
    index.add(b)
    assert len(index) == 1
    assert len(index.match("impact.s.metric.bmi")) == 1
