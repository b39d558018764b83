"""What a new user and an outside tester ran into, through the real ``impactbus`` command.

No change may lose data (a second ``add``, a removed contact), and no first step may be a
trap (a taken port, a digest without its links, errors in model field names, a time zone
without daylight saving, a hub found only from one folder, an outbox page nobody can
sign in to).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, Hub
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.e2e


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def _error(done: subprocess.CompletedProcess[str]) -> str:
    said = _said(done)
    assert "Traceback" not in said, said
    lines = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, said
    return lines[0]


def _show(hub: Hub, rid: str) -> dict[str, object]:
    return dict(json.loads(hub.cli("recipients", "show", rid).stdout))


def test_directory_changes_never_lose_a_contact_silently(hub: Hub) -> None:
    hub.cli(
        "recipients", "add", "carol", "--email", "carol@city.example", "--timezone", "Asia/Dhaka"
    )
    # a second `add` refuses, names the command that merges, and changes nothing
    again = hub.cli("recipients", "add", "carol", "--slack-channel", "C123", check=False)
    assert again.returncode == 2
    said = _error(again)
    assert "already exists" in said
    assert "impactbus recipients update carol --slack-channel C123" in said
    carol = _show(hub, "carol")
    assert (carol["email"], carol["timezone"], carol["slack_channel"]) == (
        "carol@city.example",
        "Asia/Dhaka",
        None,
    )
    # update merges: the given field changes, the others stay
    hub.cli("recipients", "update", "carol", "--slack-channel", "C123")
    carol = _show(hub, "carol")
    assert (carol["email"], carol["timezone"], carol["slack_channel"]) == (
        "carol@city.example",
        "Asia/Dhaka",
        "C123",
    )

    # a subscription on a channel without a contact is refused, naming the fix
    hub.cli("recipients", "add", "maria", "--email", "maria@school.example")
    for mode in ("immediate", "digest"):
        done = hub.cli(
            "subscribe", "maria", "impact.somerville.>", "--via", "slack", "--mode", mode,
            check=False,
        )  # fmt: skip
        assert done.returncode == 2
        said = _error(done)
        assert "no Slack channel" in said
        assert "impactbus recipients update maria --slack-channel" in said
    assert "no subscriptions" in hub.cli("subscriptions", "--recipient", "maria").stdout

    # removing a contact that a subscription uses asks for --force and names it
    sub = hub.cli("subscribe", "carol", "impact.somerville.>", "--via", "email").stdout
    sub_id = sub.rsplit("id ", 1)[1].strip()
    done = hub.cli("recipients", "update", "carol", "--email", "", check=False)
    assert done.returncode == 2
    said = _error(done)
    assert "impact.somerville.> via email" in said
    assert sub_id in said
    assert "--force" in said
    assert _show(hub, "carol")["email"] == "carol@city.example"
    forced = hub.cli("recipients", "update", "carol", "--email", "", "--force")
    assert f"stopped subscription {sub_id}" in forced.stderr
    carol = _show(hub, "carol")
    assert carol["email"] is None
    assert carol["slack_channel"] == "C123"
    assert carol["subscriptions"] == []


def test_errors_name_flags_and_the_hub_is_found_from_below(hub: Hub, tmp_path: Path) -> None:
    cases = [
        (
            ["post", "milestone", "--initiative", "somerville", "--topic", "market",
             "--title", "Opens", "--status", "reached", "--due", "31/01/2027"],
            "--due: expected a date like 2027-01-31",
        ),
        (
            ["recipients", "add", "ann", "--slack-channel", "general"],
            "--slack-channel: expected a Slack channel id like C123",
        ),
        (
            ["recipients", "add", "ann", "--timezone", "EST"],
            "--timezone: time zone 'EST' is a fixed offset",
        ),
        (
            ["recipients", "add", "ann", "--timezone", "America/Bostn"],
            "did you mean America/New_York?",
        ),
        (
            ["recipients", "add", "ann", "--timezone", "America/Boston"],
            "did you mean America/New_York?",
        ),
        (
            ["post", "meeting", "--initiative", "somerville", "--topic", "steering",
             "--title", "Steering", "--held-at", "tuesday"],
            "--held-at: expected a date and time with its UTC offset, like 2027-01-31T18:00-05:00",
        ),
    ]  # fmt: skip
    for args, expected in cases:
        done = hub.cli(*args, check=False)
        assert done.returncode == 2, (args, _said(done))
        said = _error(done)
        assert expected in said, (args, said)
        for internal in ("data.", "slack_channel", "Value error", "pattern", "Input should"):
            assert internal not in said, (args, said)
    # the time zone names that are places are accepted, UTC included
    for rid, zone in (("u1", "UTC"), ("u2", "Etc/UTC"), ("u3", "America/New_York")):
        hub.cli("recipients", "add", rid, "--timezone", zone)
    assert "EST" not in hub.cli("recipients", "list").stdout

    # from a folder below the one `make up` ran in, without IMPACTBUS_DATA_DIR
    env = {k: v for k, v in hub.env.items() if k != "IMPACTBUS_DATA_DIR"}
    below = hub.data_dir.parent / "notes" / "2027"
    below.mkdir(parents=True)
    assert hub.data_dir.name == ".impactbus"  # the default name, as `make up` makes it
    found = subprocess.run(
        [str(BIN / "impactbus"), "recipients", "list"],
        env=env, cwd=below, text=True, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert found.returncode == 0, _said(found)
    assert "u1" in found.stdout
    # from an unrelated folder: it says where it looked
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    lost = subprocess.run(
        [str(BIN / "impactbus"), "recipients", "list"],
        env=env, cwd=elsewhere, text=True, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert lost.returncode == 3
    said = _error(lost)
    assert f"{elsewhere.resolve()}/.impactbus" in said
    assert "any folder above it" in said
    assert "make up" in said


def test_send_now_digest_carries_working_preference_links(hub: Hub, smtp_sink: SmtpSink) -> None:
    hub.cli("recipients", "add", "ana", "--email", "ana@school.example")
    hub.cli("subscribe", "ana", "impact.somerville.>", "--via", "email", "--mode", "digest")
    hub.cli("post", "update", "--initiative", "somerville", "--topic", "news", "--title", "Walks")
    hub.wait_quiet()
    assert "queued the digest" in hub.cli("digest", "send-now", "ana").stdout
    [digest] = smtp_sink.wait_for(1)
    text = digest.get_body(("plain",))
    assert text is not None
    base = f"http://127.0.0.1:{hub.env['IMPACTBUS_HTTP_PORT']}"
    found = re.search(rf"{re.escape(base)}/preferences/\S+", text.get_content())
    assert found, text.get_content()
    page = httpx.get(found.group(0), timeout=10)
    assert page.status_code == 200
    assert "ana" in page.text.lower()
    assert digest["List-Unsubscribe"]


def test_up_on_a_taken_http_port_fails_and_says_which(
    hub_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**hub_env, "IMPACTBUS_HTTP_PORT": str(port)}
        h = Hub(env=env, data_dir=tmp_path / ".impactbus")
        done = h.cli("up", check=False)
    assert done.returncode != 0
    said = _said(done)
    assert f"port {port} is in use: set IMPACTBUS_HTTP_PORT" in said
    assert "impactbus is up" not in said
    assert "Traceback" not in said
    assert not (tmp_path / ".impactbus" / "hub.json").exists()


def test_dev_outbox_lines_show_and_the_sign_in_token(
    hub_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        k: v for k, v in hub_env.items() if not k.startswith(("IMPACTBUS_SMTP", "IMPACTBUS_SLACK"))
    }
    h = Hub(env=env, data_dir=tmp_path / ".impactbus").start()
    try:
        printed = [line for line in h.output if "sign in" in line]
        assert len(printed) == 1, h.output
        token = printed[0].split()[-1]
        base = f"http://127.0.0.1:{env['IMPACTBUS_HTTP_PORT']}"
        # the token signs in to the web pages, which show the outbox
        with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as web:
            signed = web.post("/login", data={"token": token})
            assert signed.status_code in (302, 303), signed.text
            assert web.get("/outbox").status_code == 200
        # never into a file of the data dir (the nats-server log included)
        for path in h.data_dir.rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                assert token.encode() not in path.read_bytes(), path

        h.cli("recipients", "add", "maria", "--email", "maria@school.example")
        h.cli("recipients", "add", "steering", "--slack-channel", "C9")
        h.cli("subscribe", "maria", "impact.somerville.>", "--via", "email")
        h.cli("subscribe", "steering", "impact.somerville.>", "--via", "slack")
        h.cli(
            "post", "update", "--initiative", "somerville", "--topic", "news",
            "--title", "Walking school bus", "--body", "Mondays.\n\nAnd Fridays.",
        )  # fmt: skip
        h.wait_quiet()
        lines = h.cli("outbox").stdout.splitlines()
        assert len(lines) == 2, lines
        email = next(line for line in lines if " email " in line)
        slack = next(line for line in lines if " slack " in line)
        for line, to in ((email, "maria@school.example"), (slack, "C9")):
            assert to in line
            assert "Walking school bus" in line
        number = email.split()[0]
        shown = h.cli("outbox", "show", number).stdout
        assert "To: maria@school.example" in shown
        assert "Subject: [somerville] Walking school bus" in shown
        assert "List-Unsubscribe: " in shown
        assert "And Fridays." in shown
        assert "<html" not in shown.lower()
        missing = h.cli("outbox", "show", "999", check=False)
        assert missing.returncode == 2
        assert "no outbox message 999" in _error(missing)
    finally:
        h.stop()
