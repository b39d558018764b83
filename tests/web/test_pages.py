"""The web pages over real HTTP: preference centre, sign-in, post form, initiative page,
Atom feeds and the outbox, against a real hub."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import feedparser
import httpx

from tests.web.conftest import WebHub


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


# ------------------------------------------------------------------ preference centre


async def test_preferences_show_subscriptions_in_words(web_hub: WebHub) -> None:
    await web_hub.person(
        "maria", "impact.somerville.>", "impact.*.milestone.>", "impact.somerville.metric.bmi"
    )
    await web_hub.post(
        "metric", "bmi", indicator="Children's BMI", value=18.2, direction="decrease"
    )
    token = web_hub.signer.preferences_token("maria")

    r = await web_hub.client.get(f"/preferences/{token}")

    assert r.status_code == 200
    for words in (
        "Everything from Shape Up Somerville",
        "Milestones from every initiative",
        "Children&#39;s BMI in Shape Up Somerville",
    ):
        assert words in r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "same-origin"
    assert "script-src" not in r.headers["content-security-policy"]


async def test_saving_preferences_changes_mode_channel_digest_and_timezone(web_hub: WebHub) -> None:
    _, [everything, milestones] = await web_hub.person(
        "maria", "impact.somerville.>", "impact.*.milestone.>", slack_channel="#steering"
    )
    token = web_hub.signer.preferences_token("maria")
    form = {
        "csrf": token,
        "action": "save",
        f"mode-{everything.id}": "digest",
        f"channel-{everything.id}": "email",
        f"mode-{milestones.id}": "immediate",
        f"channel-{milestones.id}": "slack",
        "digest_frequency": "weekly",
        "digest_day": "fri",
        "digest_time": "16:30",
        "timezone": "Asia/Dhaka",
    }

    r = await web_hub.client.post(f"/preferences/{token}", data=form)

    assert r.status_code == 303
    assert r.headers["location"] == f"/preferences/{token}?done=saved"
    maria = await web_hub.directory.get_recipient("maria")
    assert (maria.digest, maria.timezone) == ("weekly@fri-16:30", "Asia/Dhaka")
    subs = {
        (s.pattern, s.channel, s.mode) for s in await web_hub.directory.list_subscriptions("maria")
    }
    assert subs == {
        ("impact.somerville.>", "email", "digest"),
        ("impact.*.milestone.>", "slack", "immediate"),
    }
    shown = await web_hub.client.get(r.headers["location"])
    assert "Your preferences are saved." in shown.text


async def test_off_removes_the_subscription(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}",
        data={"csrf": token, f"mode-{sub.id}": "off", "digest_time": "08:00", "timezone": "UTC"},
    )
    assert r.status_code == 303
    assert await web_hub.directory.list_subscriptions("maria") == []


async def test_invalid_choices_are_shown_beside_the_field_and_change_nothing(
    web_hub: WebHub,
) -> None:
    _, [sub] = await web_hub.person("maria")
    before = await web_hub.directory.get_recipient("maria")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}",
        data={
            "csrf": token,
            f"mode-{sub.id}": "digest",
            f"channel-{sub.id}": "slack",  # maria has no Slack contact
            "digest_time": "8 o'clock",
            "timezone": "Mars/Olympus",
        },
    )
    assert r.status_code == 422
    assert 'id="e-timezone"' in r.text
    assert "unknown time zone" in r.text
    assert f'id="e-channel-{sub.id}"' in r.text
    assert 'id="e-digest"' in r.text
    assert await web_hub.directory.get_recipient("maria") == before
    assert (await web_hub.directory.get_subscription(sub.id)).mode == "immediate"


async def test_a_form_token_of_another_page_changes_nothing(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    await web_hub.person("bob")
    maria, bob = (web_hub.signer.preferences_token(r) for r in ("maria", "bob"))
    r = await web_hub.client.post(
        f"/preferences/{maria}", data={"csrf": bob, f"mode-{sub.id}": "off", "timezone": "UTC"}
    )
    assert r.status_code == 403
    assert await web_hub.directory.list_subscriptions("maria") == [sub]


async def test_cross_site_posts_are_refused(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}",
        data={"csrf": token, f"mode-{sub.id}": "off"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    assert await web_hub.directory.list_subscriptions("maria") == [sub]


async def test_pause_and_resume(web_hub: WebHub) -> None:
    await web_hub.person("maria")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}", data={"csrf": token, "action": "pause", "pause_days": "10"}
    )
    assert r.status_code == 303
    paused = (await web_hub.directory.get_recipient("maria")).paused_until
    assert paused is not None
    assert 9.9 < (paused - datetime.now(UTC)).total_seconds() / 86_400 <= 10
    assert "Everything is paused" in (await web_hub.client.get(f"/preferences/{token}")).text

    await web_hub.post(title="Nothing reaches a paused recipient")
    await web_hub.wait_quiet()
    assert await web_hub.outbox() == []

    r = await web_hub.client.post(f"/preferences/{token}", data={"csrf": token, "action": "resume"})
    assert r.status_code == 303
    assert (await web_hub.directory.get_recipient("maria")).paused_until is None


async def test_bad_pause_days_is_an_error_beside_the_field(web_hub: WebHub) -> None:
    await web_hub.person("maria")
    token = web_hub.signer.preferences_token("maria")
    r = await web_hub.client.post(
        f"/preferences/{token}", data={"csrf": token, "action": "pause", "pause_days": "999"}
    )
    assert r.status_code == 422
    assert 'id="e-pause_days"' in r.text


async def test_preferences_of_a_deleted_recipient_are_gone(web_hub: WebHub) -> None:
    token = web_hub.signer.preferences_token("ghost")
    r = await web_hub.client.get(f"/preferences/{token}")
    assert r.status_code == 410


# --------------------------------------------------------------------- sign-in and post


async def test_sign_in_sets_a_safe_cookie_and_refuses_other_tokens(web_hub: WebHub) -> None:
    bad = await web_hub.client.post("/login", data={"token": "ib_0000000000000000_nope"})
    assert bad.status_code == 401
    assert 'id="e-token"' in bad.text
    from services.directory.auth import create_token

    _, partner = await create_token(web_hub.bus, "partner", ["somerville"], "maria")
    refused = await web_hub.client.post("/login", data={"token": partner})
    assert refused.status_code == 401
    assert "partner token" in refused.text

    token = await web_hub.token()
    r = await web_hub.client.post("/login", data={"token": token, "next": "//evil.example"})
    assert r.status_code == 303
    assert r.headers["location"] == "/post"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert token.split("_", 2)[2] not in r.headers["set-cookie"]  # the secret never is in it


async def test_post_needs_a_session(web_hub: WebHub) -> None:
    r = await web_hub.client.get("/post")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")


def milestone_form(csrf: str, **fields: str) -> dict[str, str]:
    form = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "milestone",
        "event_id": "01JDEMO0000000000000000001",
        "title": "Farmers' market opens",
        "status": "reached",
        "due": "2026-06-01",
        "topic": "",
        "action": "preview",
    }
    return form | fields


async def test_invalid_post_shows_errors_beside_fields_and_publishes_nothing(
    web_hub: WebHub,
) -> None:
    csrf = await web_hub.login()
    r = await web_hub.client.post(
        "/post", data=milestone_form(csrf, title="", status="done", due="soon", action="publish")
    )
    assert r.status_code == 422
    for name in ("title", "status", "due"):
        assert f'id="e-{name}"' in r.text, name
    assert 'id="e-title">required' in r.text
    assert await web_hub.events() == 0


async def test_meeting_errors_name_the_line(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    form = {
        "csrf": csrf,
        "initiative": "somerville",
        "kind": "meeting",
        "title": "Steering committee",
        "held_at": "2026-11-03T18:00",
        "held_tz": "America/New_York",
        "action_items": "Repaint crosswalks | City | 2026-12-01\nCall restaurants | Ana | someday",
    }
    r = await web_hub.client.post("/post", data=form)
    assert r.status_code == 422
    assert "line 2: due:" in r.text


async def test_preview_then_publish_once(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    preview = await web_hub.client.post("/post", data=milestone_form(csrf))
    assert preview.status_code == 200
    assert "Farmers&#39; market opens" in preview.text
    assert "Publish" in preview.text
    assert await web_hub.events() == 0

    for _ in range(2):  # a double click publishes once
        r = await web_hub.client.post("/post", data=milestone_form(csrf, action="publish"))
        assert r.status_code == 303
    assert r.headers["location"].startswith("/initiatives/somerville?published=")
    assert await web_hub.events() == 1
    page = await web_hub.client.get(r.headers["location"])
    assert "Published." in page.text
    assert "Farmers&#39; market opens" in page.text


async def test_post_without_the_csrf_value_is_refused(web_hub: WebHub) -> None:
    await web_hub.login()
    r = await web_hub.client.post("/post", data=milestone_form("forged", action="publish"))
    assert r.status_code == 403
    assert await web_hub.events() == 0


async def test_post_to_an_initiative_of_another_token_is_refused(web_hub: WebHub) -> None:
    csrf = await web_hub.login()
    r = await web_hub.client.post(
        "/post", data=milestone_form(csrf, initiative="oporajita", action="publish")
    )
    assert r.status_code == 422
    assert await web_hub.events() == 0


# ------------------------------------------------------------------ initiative and feeds


async def test_initiative_page_escapes_and_shows_progress(web_hub: WebHub) -> None:
    await web_hub.post(
        "metric",
        "activity",
        indicator="Minutes of daily physical activity",
        value=42,
        unit="min",
        baseline=30,
        target=60,
    )
    await web_hub.post(title="<script>alert('x')</script>", topic="xss")
    r = await web_hub.client.get("/initiatives/somerville")
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in r.text
    assert 'role="progressbar"' in r.text
    assert 'aria-valuenow="40"' in r.text
    assert 'href="/feeds/somerville.atom"' in r.text


async def test_atom_feeds_are_valid_and_filtered_by_kind(web_hub: WebHub) -> None:
    await web_hub.post("metric", "bmi", indicator="Children's BMI", value=18.2)
    await web_hub.post(title="Crosswalks <repainted> & safe", topic="crosswalks")
    await web_hub.post(title="Elsewhere", initiative="oporajita")

    r = await web_hub.client.get("/feeds/somerville.atom")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(r.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == "Shape Up Somerville"
    titles = [e.title for e in feed.entries]
    assert titles == ["Milestone reached: Crosswalks <repainted> & safe", "Children's BMI: 18.2"]
    assert "<h3>" in feed.entries[0].content[0].value

    only = feedparser.parse((await web_hub.client.get("/feeds/somerville/metric.atom")).content)
    assert [e.title for e in only.entries] == ["Children's BMI: 18.2"]
    assert (await web_hub.client.get("/feeds/somerville/nope.atom")).status_code == 404
    assert (await web_hub.client.get("/feeds/Not.Valid.atom")).status_code == 404


# ----------------------------------------------------------------------------- outbox


async def test_outbox_needs_a_session_and_shows_mail_in_a_sandbox(web_hub: WebHub) -> None:
    await web_hub.person("maria")
    await web_hub.person("steering", channel="slack", slack_channel="#steering")
    await web_hub.post(title="Market <b>opens</b>")
    await web_hub.wait_outbox(2)
    anonymous = httpx.AsyncClient(base_url=web_hub.url)
    async with anonymous:
        assert (await anonymous.get("/outbox")).status_code == 303
    await web_hub.login()

    r = await web_hub.client.get("/outbox")

    assert r.status_code == 200
    assert '<iframe class="mail" sandbox="allow-popups allow-popups-to-escape-sandbox"' in r.text
    assert "allow-scripts" not in r.text
    assert "allow-same-origin" not in r.text
    assert "<b>opens</b>" not in r.text  # the email HTML is only inside srcdoc, escaped
    assert 'srcdoc="&lt;base target=&#34;_blank&#34;&gt;' in r.text
    assert "#steering" in r.text
    assert 'class="header"' in r.text
