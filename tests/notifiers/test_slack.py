"""The Slack notifier through the real slack-sdk client to a local Web API fake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifiers.base import Links, PermanentDeliveryError, TransientDeliveryError
from notifiers.settings import SlackSettings
from notifiers.slack import (
    BLOCKS_MAX,
    SECTION_MAX,
    SlackNotifier,
    chunk_mrkdwn,
    compose_slack,
    escape_mrkdwn,
)
from services.bus import free_port
from tests.fakes.slack import SlackFake
from tests.notifiers.conftest import DeliveryFactory

LINKS = Links(
    preferences="https://hub.example.org/p/tok", unsubscribe="https://hub.example.org/u/tok"
)


def settings(fake: SlackFake, **kw: Any) -> SlackSettings:
    # Pacing off unless a test is about it: it would add a second per post to one channel.
    return SlackSettings(token="xoxb-test", api_url=fake.api_url, **{"per_channel_per_s": 0, **kw})


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn text in the blocks (where Slack would parse mentions and links)."""
    texts: list[str] = []
    for block in blocks:
        for item in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(item, dict) and item.get("type") == "mrkdwn":
                texts.append(item["text"])
    return texts


async def test_message_with_blocks_is_posted(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    async with SlackNotifier(settings(slack_fake), lambda d: LINKS) as notifier:
        result = await notifier.send(make_delivery("metric", "slack"))

    [posted] = slack_fake.wait_for(1)
    assert posted.channel == "C0123ABC"
    assert posted.authorization == "Bearer xoxb-test"
    assert result.provider_id == posted.ts
    assert (result.channel, result.target) == ("slack", "slack:C0123ABC")
    assert posted.blocks is not None
    assert posted.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "emoji": True, "text": "Children active 60 minutes a day"},
    }
    texts = " ".join(mrkdwn_texts(posted.blocks))
    assert "42.5%" in texts
    assert "2026-10" in texts
    assert "41% of the way" in texts
    assert "<https://hub.example.org/u/tok|Unsubscribe>" in texts
    assert "link_names" not in posted.body
    assert posted.text == "[somerville] Children active 60 minutes a day: 42.5% (2026-10)"


@pytest.mark.parametrize("kind", ["metric", "milestone", "meeting", "update"])
def test_every_kind_composes(kind: str, make_delivery: DeliveryFactory) -> None:
    message = compose_slack(make_delivery(kind, "slack"), Links())
    assert message["blocks"][0]["type"] == "header"
    assert len(message["blocks"]) > 2
    assert "thread_ts" not in message


async def test_mentions_and_links_arrive_escaped(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    hostile = "<!channel> <!here> <@U123> <https://evil.example|click> & more"
    delivery = make_delivery("update", "slack", title="Hi <!channel>", body=hostile)
    async with SlackNotifier(settings(slack_fake)) as notifier:
        await notifier.send(delivery)

    [posted] = slack_fake.wait_for(1)
    assert posted.blocks is not None
    for text in [posted.text or "", *mrkdwn_texts(posted.blocks)]:
        for live in ("<!channel>", "<!here>", "<@U123>", "<https://evil.example"):
            assert live not in text
    body = " ".join(mrkdwn_texts(posted.blocks))
    assert (
        "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;https://evil.example|click&gt; &amp; more"
        in body
    )
    assert posted.text == "[somerville] Hi &lt;!channel&gt;"


async def test_long_body_is_split_within_limits(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    body = "\n".join(f"Line {i} & <more> text " + "x" * 80 for i in range(180))  # ~20k chars
    async with SlackNotifier(settings(slack_fake)) as notifier:
        await notifier.send(make_delivery("update", "slack", body=body))

    [posted] = slack_fake.wait_for(1)
    assert posted.blocks is not None
    sections = [b["text"]["text"] for b in posted.blocks if b["type"] == "section" and "text" in b]
    assert len(sections) >= 7
    assert all(len(s) <= SECTION_MAX for s in sections)
    assert len(posted.blocks) <= BLOCKS_MAX
    assert "\n".join(sections[: len(sections) - 1]) == escape_mrkdwn(body)  # last: the link


def test_too_many_blocks_are_cut_with_a_note(make_delivery: DeliveryFactory) -> None:
    # A long summary (7 sections) and 40 decisions near the section limit: > 50 blocks.
    decisions = ["word " * 580 + str(i) for i in range(40)]
    delivery = make_delivery("meeting", "slack", summary="y " * 9_900, decisions=decisions)
    message = compose_slack(delivery, LINKS)
    blocks = message["blocks"]
    assert len(blocks) == BLOCKS_MAX
    assert blocks[-1]["type"] == "context"  # the links footer is kept
    assert "Unsubscribe" in str(blocks[-1])
    assert "more blocks not shown" in str(blocks[-2])


async def test_429_with_retry_after_is_retried_then_delivered(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    slack_fake.respond_next(status=429, headers={"Retry-After": "1"}, times=1)
    async with SlackNotifier(settings(slack_fake, rate_limit_retries=1)) as notifier:
        result = await notifier.send(make_delivery("milestone", "slack"))
    [posted] = slack_fake.wait_for(1)
    assert result.provider_id == posted.ts
    assert slack_fake.requests == 2


async def test_429_after_retries_is_transient(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    slack_fake.respond_next(status=429, headers={"Retry-After": "7"}, times=1)
    async with SlackNotifier(settings(slack_fake, rate_limit_retries=0)) as notifier:
        with pytest.raises(TransientDeliveryError) as info:
            await notifier.send(make_delivery("update", "slack"))
    assert info.value.retry_after == 7


@pytest.mark.parametrize(
    ("error", "disable"),
    [
        ("channel_not_found", True),
        ("is_archived", True),
        ("not_in_channel", True),
        ("invalid_auth", False),
        ("token_revoked", False),
        ("account_inactive", False),
        ("invalid_blocks", False),
    ],
)
async def test_slack_errors_are_permanent(
    error: str, disable: bool, slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    slack_fake.respond_next(json={"ok": False, "error": error})
    async with SlackNotifier(settings(slack_fake)) as notifier:
        with pytest.raises(PermanentDeliveryError) as info:
            await notifier.send(make_delivery("update", "slack"))
    assert info.value.disable_target is disable
    assert error in str(info.value)


@pytest.mark.parametrize(
    ("status", "payload"),
    [(500, None), (503, None), (200, {"ok": False, "error": "internal_error"})],
)
async def test_server_errors_are_transient(
    status: int,
    payload: dict[str, Any] | None,
    slack_fake: SlackFake,
    make_delivery: DeliveryFactory,
) -> None:
    slack_fake.respond_next(status=status, json=payload)
    async with SlackNotifier(settings(slack_fake)) as notifier:
        with pytest.raises(TransientDeliveryError):
            await notifier.send(make_delivery("update", "slack"))
        await notifier.send(make_delivery("update", "slack"))  # and the client still works
    assert len(slack_fake.wait_for(1)) == 1


async def test_connection_refused_is_transient(make_delivery: DeliveryFactory) -> None:
    refused = SlackSettings(token="xoxb-test", api_url=f"http://127.0.0.1:{free_port()}/api/")
    async with SlackNotifier(refused) as notifier:
        with pytest.raises(TransientDeliveryError):
            await notifier.send(make_delivery("update", "slack"))


async def test_wrong_target_is_permanent(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    async with SlackNotifier(settings(slack_fake)) as notifier:
        with pytest.raises(PermanentDeliveryError):
            await notifier.send(make_delivery("update", "email"))


async def test_thread_ts_is_passed(slack_fake: SlackFake, make_delivery: DeliveryFactory) -> None:
    async with SlackNotifier(settings(slack_fake)) as notifier:
        await notifier.send(make_delivery("update", "slack"), thread_ts="1700000000.000001")
    [posted] = slack_fake.wait_for(1)
    assert posted.thread_ts == "1700000000.000001"


async def test_per_channel_rate_limit_is_honoured(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    slack_fake.per_channel_rate = 1.0
    async with SlackNotifier(settings(slack_fake, per_channel_per_s=1.0)) as notifier:
        await asyncio.gather(
            notifier.send(make_delivery("update", "slack", title="one")),
            notifier.send(make_delivery("update", "slack", title="two")),
        )
    assert len(slack_fake.wait_for(2)) == 2
    assert slack_fake.requests == 2  # paced to one post per second: no 429 at all


async def test_without_pacing_a_429_is_retried_after_retry_after(
    slack_fake: SlackFake, make_delivery: DeliveryFactory
) -> None:
    slack_fake.per_channel_rate = 1.0
    async with SlackNotifier(settings(slack_fake)) as notifier:
        await asyncio.gather(
            notifier.send(make_delivery("update", "slack", title="one")),
            notifier.send(make_delivery("update", "slack", title="two")),
        )
    assert len(slack_fake.wait_for(2)) == 2
    assert slack_fake.requests == 3  # one 429, retried after Retry-After


async def test_one_session_is_shared(slack_fake: SlackFake, make_delivery: DeliveryFactory) -> None:
    notifier = SlackNotifier(settings(slack_fake))
    await asyncio.gather(*(notifier.send(make_delivery("update", "slack")) for _ in range(10)))
    session = notifier._session
    assert session is not None
    await notifier.aclose()
    assert session.closed
    assert len(slack_fake.wait_for(10)) == 10


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a & b", "a &amp; b"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123|bob>", "&lt;@U123|bob&gt;"),
        ("&lt;", "&amp;lt;"),
        ("*bold* _it_", "*bold* _it_"),
    ],
)
def test_escape_mrkdwn(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


@pytest.mark.parametrize("limit", [5, 7, 10, 50])
def test_chunks_never_split_an_entity(limit: int) -> None:
    text = "&&&<<>>" * 20 + "\n" + "ab & cd " * 30
    chunks = chunk_mrkdwn(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    for chunk in chunks:
        assert chunk.count("&") == chunk.count(";"), chunk
    assert "".join(chunks).replace("\n", "") == escape_mrkdwn(text).replace("\n", "")


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_SLACK_TOKEN", "xoxb-secret")
    s = SlackSettings()
    assert s.configured
    assert s.api_url == "https://slack.com/api/"
    assert "xoxb-secret" not in repr(s)
    monkeypatch.delenv("IMPACTBUS_SLACK_TOKEN")
    assert not SlackSettings().configured
