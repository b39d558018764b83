"""Dead letters and the delivery log, through the CLI as a user runs them.

One hub (``impactbus up``) per test, wired to the SMTP sink, the Slack fake and a webhook
sink; every command is a separate ``impactbus`` process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from notifiers.webhook_signing import new_secret
from services.bus import Bus, NatsSettings
from tests.e2e.conftest import Hub
from tests.fakes.slack import SlackFake
from tests.fakes.smtp import SmtpSink
from tests.fakes.webhook import WebhookSink

pytestmark = pytest.mark.e2e


@pytest.fixture
def ops_hub(tmp_path: Path, hub_env: dict[str, str]) -> Iterator[Hub]:
    """A hub that may post webhooks to 127.0.0.1 (the sink), signed with a shared secret."""
    env = {
        **hub_env,
        "IMPACTBUS_WEBHOOK_ALLOW_LOOPBACK": "true",
        "IMPACTBUS_WEBHOOK_SECRET": new_secret(),
    }
    h = Hub(env=env, data_dir=tmp_path / ".impactbus").start()
    yield h
    h.stop()


def eventually(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def dead_letters(hub: Hub, *args: str) -> list[dict[str, object]]:
    out = hub.cli("dead", "list", "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def post_update(hub: Hub, event_id: str, topic: str = "market") -> None:
    hub.cli(
        "post", "update", "--initiative", "somerville", "--topic", topic,
        "--title", f"Update {event_id}", "--id", event_id,
    )  # fmt: skip


def test_rejected_email_is_dead_then_replayed_once_the_cause_is_fixed(
    ops_hub: Hub, smtp_sink: SmtpSink
) -> None:
    hub = ops_hub
    hub.cli("recipients", "add", "maria", "--email", "maria@school.example")
    hub.cli("subscribe", "maria", "impact.somerville.>", "--via", "email")
    smtp_sink.fail_next(550)
    post_update(hub, "ev-550")
    hub.wait_quiet()
    [letter] = dead_letters(hub)
    assert (letter["reason"], letter["attempts"], letter["recipient"]) == ("rejected", 1, "maria")
    seq = str(letter["seq"])

    listed = hub.cli("dead", "list").stdout
    assert "rejected" in listed
    assert "maria" in listed
    assert "550" in listed
    assert hub.cli("dead", "list", "--reason", "exhausted").stdout.strip() == "no dead letters"
    shown = json.loads(hub.cli("dead", "show", seq).stdout)
    assert shown["job"]["event"]["id"] == "ev-550"
    log = hub.cli("log", "ev-550").stdout
    assert "dead" in log
    assert "reason rejected" in log

    # the mailbox is fixed (the sink failed once only): replay
    replayed = hub.cli("dead", "replay", seq).stdout
    assert f"replayed dead letter {seq}" in replayed
    [msg] = smtp_sink.wait_for(1)
    hub.wait_quiet()
    assert len(smtp_sink.messages) == 1
    assert msg["Message-ID"] == f"<{letter['job_id']}@impactbus>"  # the same job id
    assert dead_letters(hub) == []
    eventually(lambda: "  sent " in hub.cli("log", "ev-550").stdout, "the log to say sent")
    again = hub.cli("dead", "replay", seq, check=False)
    assert again.returncode == 2
    assert f"no dead letter {seq}" in again.stderr


def test_log_shows_sent_retrying_and_dead_per_target(
    ops_hub: Hub, smtp_sink: SmtpSink, slack_fake: SlackFake, webhook_sink: WebhookSink
) -> None:
    hub = ops_hub
    hub.cli("recipients", "add", "ann", "--email", "ann@partner.example")
    hub.cli("recipients", "add", "steering", "--slack-channel", "C9")
    hub.cli("recipients", "add", "crm", "--webhook-url", webhook_sink.url_for("/hook"))
    hub.cli("subscribe", "ann", "impact.somerville.>", "--via", "email")
    hub.cli("subscribe", "steering", "impact.somerville.>", "--via", "slack")
    hub.cli("subscribe", "crm", "impact.somerville.>", "--via", "webhook")
    slack_fake.respond_next(200, json={"ok": False, "error": "channel_not_found"})
    webhook_sink.respond_next(503, headers={"Retry-After": "30"})  # retrying for 30 s
    post_update(hub, "ev-log")
    smtp_sink.wait_for(1)
    webhook_sink.wait_for(1)

    def all_three() -> bool:
        out = hub.cli("log", "ev-log").stdout
        return all(f"  {s} " in out for s in ("sent", "retrying", "dead"))

    eventually(all_three, "sent, retrying and dead in the log")
    lines = hub.cli("log", "ev-log").stdout.splitlines()
    assert lines[0].startswith("event ev-log: routed")
    assert "to 3 deliveries" in lines[0]
    by_channel = {line.split()[1]: line for line in lines[1:4]}
    assert by_channel["email"].split()[0] == "sent"
    assert "<" in by_channel["email"]  # the Message-ID
    assert by_channel["slack"].split()[0] == "dead"
    assert "channel_not_found" in by_channel["slack"]
    assert by_channel["webhook"].split()[0] == "retrying"
    assert "HTTP 503" in by_channel["webhook"]
    assert "next in 30" in by_channel["webhook"]
    as_json = json.loads(hub.cli("log", "ev-log", "--json").stdout)
    assert {t["channel"]: t["status"] for t in as_json["targets"]} == {
        "email": "sent",
        "slack": "dead",
        "webhook": "retrying",
    }

    # channel_not_found disabled steering's Slack: turn it back on and resend
    shown = json.loads(hub.cli("recipients", "show", "steering").stdout)
    assert shown["disabled_channels"] == ["slack"]
    refused = hub.cli("dead", "replay", "--all", check=False)
    assert "is disabled" in refused.stderr
    assert "replayed 0 dead letters" in refused.stdout
    assert (
        "enabled slack for steering" in hub.cli("recipients", "enable", "steering", "slack").stdout
    )
    assert "was not disabled" in hub.cli("recipients", "enable", "steering", "slack").stdout
    assert (
        "replayed 1 dead letter"
        in hub.cli("dead", "replay", "--all", "--reason", "rejected").stdout
    )
    [posted] = slack_fake.wait_for(1)
    assert posted.channel == "C9"
    eventually(lambda: "  sent      slack" in hub.cli("log", "ev-log").stdout, "slack sent")


def test_an_invalid_event_on_nats_is_dead_lettered_listed_and_not_replayable(
    ops_hub: Hub,
) -> None:
    hub = ops_hub

    async def publish_junk() -> None:
        bus = await Bus.connect(hub.nats_url, NatsSettings(url=hub.nats_url), reconnect=False)
        try:
            await bus.js.publish("impact.x.metric.y", b"{junk")
        finally:
            await bus.close()

    asyncio.run(publish_junk())
    hub.wait_quiet()
    [letter] = dead_letters(hub, "--reason", "invalid")
    assert letter["subject"] == "dead.invalid.x"
    assert letter["original_subject"] == "impact.x.metric.y"
    assert letter["payload"] == "{junk"
    listed = hub.cli("dead", "list").stdout.splitlines()
    assert len(listed) == 2  # the header and the letter
    assert "invalid" in listed[1]
    assert "impact.x.metric.y" in listed[1]
    refused = hub.cli("dead", "replay", str(letter["seq"]), check=False)
    assert refused.returncode == 2
    [error] = refused.stderr.splitlines()
    assert error.startswith("error: ")
    assert "cannot be replayed" in error
    assert hub.cli("dead", "purge", "--reason", "invalid").stdout.strip() == "purged 1 dead letter"
    assert dead_letters(hub) == []


BAD_INPUT: list[tuple[list[str], str]] = [
    (["dead", "show", "abc"], "dead letter number 'abc'"),
    (["dead", "show", "999"], "no dead letter 999"),
    (["dead", "replay"], "give a dead letter number"),
    (["dead", "replay", "1", "--all"], "not both"),
    (["dead", "replay", "1", "--reason", "gone"], "go with --all"),
    (["dead", "list", "--reason", "a.b"], "'.'"),
    (["dead", "list", "--limit", "0"], "--limit"),
    (["dead", "purge", "--initiative", "Some*"], "initiative"),
    (["log", "no-such-event"], "no delivery log for event 'no-such-event'"),
    (["recipients", "enable", "nobody", "slack"], "no recipient 'nobody'"),
    (["recipients", "enable", "maria", "sms"], "unknown channel 'sms'"),
    (["webhook-secret", "show", "maria"], "no webhook contact"),
    (["webhook-secret", "rotate", "nobody"], "no recipient 'nobody'"),
]


def test_bad_input_gets_one_clear_line_and_exit_2(ops_hub: Hub) -> None:
    ops_hub.cli("recipients", "add", "maria", "--email", "maria@school.example")
    for args, message in BAD_INPUT:
        done = ops_hub.cli(*args, check=False)
        said = done.stderr + done.stdout
        assert done.returncode == 2, (args, said)
        assert "Traceback" not in said, args
        errors = [line for line in said.splitlines() if line.lower().startswith("error")]
        assert len(errors) == 1, (args, said)
        assert message in errors[0], (args, said)


def test_webhook_secret_show_and_rotate(ops_hub: Hub) -> None:
    ops_hub.cli("recipients", "add", "crm", "--webhook-url", "https://crm.example.org/hook")
    first = ops_hub.cli("webhook-secret", "show", "crm")
    [line] = first.stdout.splitlines()
    secret = line.split()[0]
    assert secret.startswith("whsec_")
    assert line.endswith("signing")
    assert "created a secret" in first.stderr
    assert ops_hub.cli("webhook-secret", "show", "crm").stdout == first.stdout
    rotated = ops_hub.cli("webhook-secret", "rotate", "crm", "--grace-hours", "2")
    new = rotated.stdout.strip()
    assert new.startswith("whsec_")
    assert new != secret
    assert "still sent (and valid) until" in rotated.stderr
    shown = ops_hub.cli("webhook-secret", "show", "crm").stdout.splitlines()
    assert [s.split()[0] for s in shown] == [new, secret]
    assert "old, valid until" in shown[1]
