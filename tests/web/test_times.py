"""Times on pages are in the reader's zone, and say which.

A recipient's own pages (preference centre, unsubscribe) use the recipient's zone; the
shared pages (initiative page, its feed, the post preview, the outbox) use the hub's,
``IMPACTBUS_TIMEZONE``. Pages are fetched over HTTP from a real hub.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schemas.events import new_event
from services.pipeline.ingest import publish_event
from tests.web.conftest import WebHub

NEW_YORK = ZoneInfo("America/New_York")
# 20:00 UTC is 15:00 in New York (EST) and 05:00 the next day in Tokyo
HELD = datetime(2027, 1, 12, 20, 0, tzinfo=UTC)


def in_zone(moment: datetime, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%d %b %Y, %H:%M} ({tz.key})"


def minutes_around(start: datetime, end: datetime, tz: ZoneInfo) -> set[str]:
    """Every minute from ``start`` to ``end`` as the page would write it."""
    first = start.replace(second=0, microsecond=0)
    steps = int((end - first).total_seconds() // 60) + 1
    return {in_zone(first + timedelta(minutes=i), tz) for i in range(steps)}


@pytest.mark.parametrize("hub_timezone", ["America/New_York"])
async def test_shared_pages_show_times_in_the_hubs_zone(web_hub: WebHub) -> None:
    meeting = new_event(
        "meeting",
        "somerville",
        "steering",
        {"title": "Steering committee", "held_at": HELD.isoformat(), "attendees": ["Ana"]},
        time=HELD,
    )
    await publish_event(web_hub.bus, meeting)

    page = (await web_hub.client.get("/initiatives/somerville")).text
    assert "12 Jan 2027, 15:00 (America/New_York) · 1 attendees" in page  # Meetings
    assert '<span class="meta">12 Jan 2027, 15:00 (America/New_York)</span>' in page  # Latest
    assert "UTC" not in page

    feed = (await web_hub.client.get("/feeds/somerville.atom")).text
    assert "Held 12 Jan 2027, 15:00 (America/New_York)" in feed

    csrf = await web_hub.login()
    form = (await web_hub.client.get("/post?initiative=somerville&kind=meeting")).text
    assert "<option selected>America/New_York</option>" in form  # the meeting's zone
    preview = await web_hub.client.post(
        "/post",
        data={
            "csrf": csrf,
            "initiative": "somerville",
            "kind": "meeting",
            "title": "Partners' breakfast",
            "held_at": "2027-01-13T09:30",
            "held_tz": "Asia/Tokyo",  # typed in Tokyo time, shown in the hub's
        },
    )
    assert preview.status_code == 200, preview.text
    assert "Held 12 Jan 2027, 19:30 (America/New_York)" in preview.text


@pytest.mark.parametrize("hub_timezone", ["America/New_York"])
async def test_outbox_shows_when_a_message_was_sent_in_the_hubs_zone(web_hub: WebHub) -> None:
    await web_hub.person("maria", email="maria@school.example")
    await web_hub.post(title="Market opens on Saturdays")
    [entry] = await web_hub.wait_outbox(1, "email")
    await web_hub.login()

    page = (await web_hub.client.get("/outbox")).text

    sent = datetime.fromisoformat(entry["sent_at"])
    assert f"to <strong>maria@school.example</strong> · {in_zone(sent, NEW_YORK)}" in page
    assert "UTC" not in page.split("<iframe")[0]


@pytest.mark.parametrize("hub_timezone", ["Asia/Tokyo"])
async def test_a_recipients_own_pages_use_the_recipients_zone(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria", timezone="America/New_York")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}", data={"csrf": token, "action": "pause", "pause_days": "10"}
    )
    assert r.status_code == 303
    until = (await web_hub.directory.get_recipient("maria")).paused_until
    assert until is not None

    page = (await web_hub.client.get(f"/preferences/{token}")).text
    assert f"Everything is paused</strong> until {in_zone(until, NEW_YORK)}." in page
    assert "Asia/Tokyo)" not in page

    before = datetime.now(UTC)
    done = await web_hub.client.post(
        f"/unsubscribe/{web_hub.signer.unsubscribe_token('maria', sub.id)}"
    )
    after = datetime.now(UTC)
    assert done.status_code == 200
    assert "You are unsubscribed" in done.text
    shown = {
        t for t in minutes_around(before, after, NEW_YORK) if f"Unsubscribed on {t}." in done.text
    }
    assert shown, done.text


def test_the_hub_refuses_to_start_with_an_unknown_time_zone(tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "IMPACTBUS_DATA_DIR": str(tmp_path / ".impactbus"),
        "IMPACTBUS_TIMEZONE": "Mars/Olympus_Mons",
        "IMPACTBUS_NATS_URL": "nats://127.0.0.1:1",  # never reached: the settings fail first
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "impactbus"), "up"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert "IMPACTBUS_TIMEZONE: unknown time zone 'Mars/Olympus_Mons'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
