"""RFC 8058 one-click unsubscribe over real HTTP, against a real hub."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from schemas.errors import NotFoundError
from services.directory.links import LinkSigner
from tests.web.conftest import WebHub

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def old_token(
    hub: WebHub, payload: dict[str, str], days: float = 61, salt: str = "unsubscribe"
) -> str:
    """A genuine token (by default an unsubscribe one) issued ``days`` ago."""

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - days * 86_400)

    key = (hub.rt.hub.data_dir / "secret_key").read_text().strip()
    return str(URLSafeTimedSerializer(key, salt=f"impactbus.{salt}", signer=Past).dumps(payload))


async def exists(hub: WebHub, sub_id: str) -> bool:
    try:
        await hub.directory.get_subscription(sub_id)
    except NotFoundError:
        return False
    return True


async def test_one_click_post_unsubscribes_at_once_with_200_and_no_redirect(
    web_hub: WebHub,
) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.unsubscribe_token("maria", sub.id)

    r = await web_hub.client.post(f"/unsubscribe/{token}", data=ONE_CLICK, follow_redirects=False)

    assert r.status_code == 200
    assert "location" not in r.headers
    assert "You are unsubscribed" in r.text
    assert "Everything from Shape Up Somerville" in r.text
    assert not await exists(web_hub, sub.id)
    again = await web_hub.client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
    assert again.status_code == 200
    assert "Already unsubscribed" in again.text


async def test_one_click_post_needs_no_body_cookie_or_origin(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.unsubscribe_token("maria", sub.id)
    files = {"List-Unsubscribe": (None, "One-Click")}  # multipart/form-data, also allowed
    r = await web_hub.client.post(
        f"/unsubscribe/{token}", files=files, headers={"Origin": "https://mail.example"}
    )
    assert r.status_code == 200
    assert not await exists(web_hub, sub.id)


async def test_get_only_confirms_and_changes_nothing(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.unsubscribe_token("maria", sub.id)

    r = await web_hub.client.get(f"/unsubscribe/{token}")

    assert r.status_code == 200
    assert "Unsubscribe?" in r.text
    assert f'action="/unsubscribe/{token}"' in r.text
    assert await exists(web_hub, sub.id)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_token_changes_nothing(web_hub: WebHub, method: str) -> None:
    _, [sub] = await web_hub.person("maria")
    token = web_hub.signer.unsubscribe_token("maria", sub.id)
    forged = [
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # tampered signature
        LinkSigner("another hub's key").unsubscribe_token("maria", sub.id),
        "not-a-token",
        web_hub.signer.preferences_token("maria"),  # genuine, but not for unsubscribing
    ]
    for bad in forged:
        r = await web_hub.client.request(method, f"/unsubscribe/{bad}")
        assert r.status_code == 400, (bad, r.status_code)
        assert "not valid" in r.text
    assert await exists(web_hub, sub.id)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_expired_token_changes_nothing(web_hub: WebHub, method: str) -> None:
    _, [sub] = await web_hub.person("maria")
    token = old_token(web_hub, {"r": "maria", "s": sub.id})

    r = await web_hub.client.request(method, f"/unsubscribe/{token}")

    assert r.status_code == 410
    assert "expired" in r.text
    assert await exists(web_hub, sub.id)


async def test_a_fresh_old_token_still_works(web_hub: WebHub) -> None:
    _, [sub] = await web_hub.person("maria")
    token = old_token(web_hub, {"r": "maria", "s": sub.id}, days=59)
    r = await web_hub.client.post(f"/unsubscribe/{token}")
    assert r.status_code == 200
    assert not await exists(web_hub, sub.id)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_another_recipients_subscription_changes_nothing(
    web_hub: WebHub, method: str
) -> None:
    _, [maria_sub] = await web_hub.person("maria")
    await web_hub.person("bob")
    token = web_hub.signer.unsubscribe_token("bob", maria_sub.id)  # bob's link, maria's sub

    r = await web_hub.client.request(method, f"/unsubscribe/{token}")

    assert r.status_code == 403
    assert "belongs to someone else" in r.text
    assert await exists(web_hub, maria_sub.id)


async def test_the_link_in_a_sent_email_unsubscribes_and_delivery_stops(web_hub: WebHub) -> None:
    await web_hub.person("maria")
    await web_hub.post(title="Crosswalks repainted near schools", topic="crosswalks")
    [entry] = await web_hub.wait_outbox(1, "email")
    header = entry["headers"]["List-Unsubscribe"]
    assert entry["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = header.strip("<>").split(">")[0]
    assert url.startswith(f"{web_hub.url}/unsubscribe/")

    r = await web_hub.client.post(url, data=ONE_CLICK, follow_redirects=False)
    assert r.status_code == 200

    await web_hub.post(title="Farmers' market opens")
    await web_hub.wait_quiet()
    assert len(await web_hub.outbox("email")) == 1


async def test_a_digest_link_removes_the_digest_subscriptions_of_that_channel(
    web_hub: WebHub,
) -> None:
    _, [immediate] = await web_hub.person("maria", "impact.somerville.metric.>")
    digest = await web_hub.directory.subscribe("maria", "impact.*.milestone.>", "email", "digest")
    token = web_hub.signer.unsubscribe_token("maria", None, digest_channel="email")

    r = await web_hub.client.post(f"/unsubscribe/{token}")

    assert r.status_code == 200
    assert "Milestones from every initiative" in r.text
    assert not await exists(web_hub, digest.id)
    assert await exists(web_hub, immediate.id)
