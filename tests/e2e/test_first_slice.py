"""Issue 2: an event posted with the CLI reaches exactly its subscribers, on real parts."""

from __future__ import annotations

import pytest

from services.bus import EmbeddedNats
from tests.e2e.conftest import Hub
from tests.fakes.slack import SlackFake
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.e2e


def _parts(msg: object) -> dict[str, str]:
    from email.message import EmailMessage

    assert isinstance(msg, EmailMessage)
    out = {}
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            out[part.get_content_type()] = part.get_content()
    return out


def test_a_milestone_reaches_the_subscribed_recipient_and_nobody_else(
    hub: Hub, smtp_sink: SmtpSink
) -> None:
    hub.cli(
        "recipients",
        "add",
        "maria",
        "--email",
        "maria@school.example",
        "--timezone",
        "America/New_York",
        "--name",
        "Maria Lopez",
    )
    hub.cli("recipients", "add", "bob", "--email", "bob@city.example")
    hub.cli("subscribe", "maria", "impact.somerville.>", "--via", "email")
    hub.cli("subscribe", "bob", "impact.oporajita.>", "--via", "email")
    out = hub.cli(
        "post",
        "milestone",
        "--initiative",
        "somerville",
        "--topic",
        "farmers-market",
        "--title",
        "Farmers' market opens",
        "--status",
        "reached",
    )
    assert "impact.somerville.milestone.farmers-market" in out.stdout

    [msg] = smtp_sink.wait_for(1)
    hub.wait_quiet()
    assert len(smtp_sink.messages) == 1
    assert msg["To"].addresses[0].addr_spec == "maria@school.example"
    assert "Farmers' market opens" in str(msg["Subject"])
    parts = _parts(msg)
    assert set(parts) == {"text/plain", "text/html"}
    assert "Farmers' market opens" in parts["text/plain"]
    assert "reached" in parts["text/plain"].lower()


def test_slack_subscribers_get_block_kit_messages(
    hub: Hub, slack_fake: SlackFake, smtp_sink: SmtpSink
) -> None:
    hub.cli("recipients", "add", "steering", "--slack-channel", "C123")
    hub.cli("subscribe", "steering", "impact.somerville.>", "--via", "slack")
    hub.cli(
        "post",
        "metric",
        "--initiative",
        "somerville",
        "--topic",
        "bmi",
        "--indicator",
        "Children with healthy BMI",
        "--value",
        "71.5",
        "--unit",
        "%",
        "--baseline",
        "64",
        "--target",
        "75",
    )
    [posted] = slack_fake.wait_for(1)
    hub.wait_quiet()
    assert posted.channel == "C123"
    assert posted.blocks, "a Slack message must carry Block Kit blocks"
    assert "71.5" in str(posted.blocks)
    assert posted.authorization == "Bearer xoxb-test-token"
    assert len(slack_fake.messages) == 1
    assert smtp_sink.messages == []


CASES = [
    ("impact.>", {"a", "b", "c", "d", "e"}),
    ("impact.somerville.>", {"a", "b", "c", "d"}),
    ("impact.*.milestone.>", {"a", "b", "e"}),
    ("impact.somerville.metric.bmi", {"c"}),
    ("impact.somerville.metric.*", {"c", "d"}),
    ("impact.*.*.activity", {"d"}),
]
EVENTS = {
    "a": (
        "milestone",
        "somerville",
        "crosswalks",
        ["--title", "Crosswalks", "--status", "reached"],
    ),
    "b": ("milestone", "somerville", "market", ["--title", "Market", "--status", "planned"]),
    "c": ("metric", "somerville", "bmi", ["--indicator", "BMI", "--value", "1"]),
    "d": ("metric", "somerville", "activity", ["--indicator", "Activity", "--value", "2"]),
    "e": ("milestone", "oporajita", "wages", ["--title", "Wages", "--status", "at-risk"]),
}


def test_wildcard_subscriptions_match_at_every_level(hub: Hub, smtp_sink: SmtpSink) -> None:
    for i, (pattern, _) in enumerate(CASES):
        hub.cli("recipients", "add", f"r{i}", "--email", f"r{i}@partner.example")
        hub.cli("subscribe", f"r{i}", pattern, "--via", "email")
    for name, (kind, initiative, topic, args) in EVENTS.items():
        hub.cli(
            "post", kind, "--initiative", initiative, "--topic", topic, "--id", f"ev-{name}", *args
        )
    expected_total = sum(len(want) for _, want in CASES)
    smtp_sink.wait_for(expected_total)
    hub.wait_quiet()
    assert len(smtp_sink.messages) == expected_total
    got: dict[str, set[str]] = {}
    titles = {"Crosswalks": "a", "Market": "b", "BMI": "c", "Activity": "d", "Wages": "e"}
    for msg in smtp_sink.messages:
        rcpt = msg["To"].addresses[0].addr_spec.split("@")[0]
        event = next(v for k, v in titles.items() if k in str(msg["Subject"]))
        got.setdefault(rcpt, set()).add(event)
    for i, (pattern, want) in enumerate(CASES):
        assert got.get(f"r{i}", set()) == want, pattern


def test_hostile_text_arrives_escaped_on_every_channel(
    hub: Hub, smtp_sink: SmtpSink, slack_fake: SlackFake
) -> None:
    hub.cli(
        "recipients", "add", "maria", "--email", "maria@school.example", "--slack-channel", "C9"
    )
    hub.cli("subscribe", "maria", "impact.somerville.>", "--via", "email")
    hub.cli("subscribe", "maria", "impact.somerville.>", "--via", "slack")
    hub.cli(
        "post",
        "update",
        "--initiative",
        "somerville",
        "--topic",
        "news",
        "--title",
        "<script>alert(1)</script> <!channel>",
        "--body",
        "Hello <!here> and <@U123> <https://evil.example|click>",
    )
    [mail] = smtp_sink.wait_for(1)
    [slack] = slack_fake.wait_for(1)
    html = _parts(mail)["text/html"]
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    # Slack parses mentions and links in the top-level text and in mrkdwn objects;
    # plain_text objects (headers) are shown literally and never ping.
    parsed = [str(slack.text), *_mrkdwn_texts(slack.blocks)]
    everything = "\n".join(parsed)
    for live in ("<!channel>", "<!here>", "<@U123>", "<https://evil.example|click>"):
        assert live not in everything
    assert "&lt;!channel&gt;" in everything
    assert "&lt;@U123&gt;" in everything


def _mrkdwn_texts(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [str(node["text"])] if node.get("type") == "mrkdwn" else []
        return found + [t for v in node.values() for t in _mrkdwn_texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _mrkdwn_texts(v)]
    return []


def test_delivery_survives_a_hub_restart_between_post_and_delivery(
    tmp_path: object, hub_env: dict[str, str], nats_server: EmbeddedNats, smtp_sink: SmtpSink
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    env = {**hub_env, "IMPACTBUS_NATS_URL": nats_server.url}
    h = Hub(env=env, data_dir=tmp_path / ".impactbus").start()
    h.cli("recipients", "add", "maria", "--email", "maria@school.example")
    h.cli("subscribe", "maria", "impact.somerville.>", "--via", "email")
    assert h.stop() == 0
    # The hub is down: the event goes into JetStream and waits there.
    h.cli(
        "post", "update", "--initiative", "somerville", "--topic", "news", "--title", "While down"
    )
    assert smtp_sink.messages == []
    h.start()
    try:
        [msg] = smtp_sink.wait_for(1)
        h.wait_quiet()
        assert "While down" in str(msg["Subject"])
        # a second restart must not send it again
        h.stop()
        h.start()
        h.wait_quiet()
        assert len(smtp_sink.messages) == 1
    finally:
        h.stop()


BAD_INPUT: list[tuple[list[str], str]] = [
    (["post", "bogus", "--initiative", "s", "--topic", "t"], "bogus"),
    (
        ["post", "update", "--initiative", "s", "--topic", "farmers.market", "--title", "x"],
        "'.'",
    ),
    (
        ["post", "update", "--initiative", "s", "--topic", "farmers market", "--title", "x"],
        "' '",
    ),
    (["post", "update", "--initiative", "some*", "--topic", "t", "--title", "x"], "'*'"),
    (["post", "update", "--initiative", "s", "--topic", ">", "--title", "x"], "'>'"),
    (
        ["post", "update", "--initiative", "s", "--topic", "t", "--title", "x" * 201],
        "at most 200",
    ),
    (
        [
            "post",
            "milestone",
            "--initiative",
            "s",
            "--topic",
            "t",
            "--title",
            "x",
            "--status",
            "done",
        ],
        "status",
    ),
    (
        ["post", "update", "--initiative", "s", "--topic", "t", "--title", "x", "--value", "3"],
        "--value",
    ),
    (["recipients", "add", "maria", "--email", "not-an-address"], "email"),
    (["recipients", "add", "maria", "--timezone", "Mars/Olympus"], "time zone"),
    (["recipients", "add", "Maria Lopez"], "recipient"),
    (["subscribe", "nobody", "impact.>"], "no recipient 'nobody'"),
    (["subscribe", "maria", "somerville.>"], "must start with 'impact.'"),
    (["recipients", "add", "maria", "--digest", "hourly"], "daily@08:00"),
]


def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(hub: Hub) -> None:
    # One hub for the whole table: each case is a separate CLI process, as a user types it.
    hub.cli("recipients", "add", "maria", "--email", "maria@school.example")
    for args, message in BAD_INPUT:
        done = hub.cli(*args, check=False)
        said = done.stderr + done.stdout
        assert done.returncode == 2, (args, said)
        assert "Traceback" not in said, args
        errors = [line for line in said.splitlines() if line.lower().startswith("error")]
        assert len(errors) == 1, (args, said)
        assert message in errors[0], (args, said)


def test_cli_without_a_hub_says_how_to_start_one(hub_env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    h = Hub(env=hub_env, data_dir=tmp_path / ".impactbus")
    done = h.cli("recipients", "list", check=False)
    assert done.returncode == 3
    assert "make up" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_explains_every_command(hub_env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    h = Hub(env=hub_env, data_dir=tmp_path / ".impactbus")
    top = h.cli("--help").stdout
    for command in ("up", "run", "post", "subscribe", "recipients", "tail", "status", "outbox"):
        assert f"  {command} " in top
        assert h.cli(command, "--help").returncode == 0
