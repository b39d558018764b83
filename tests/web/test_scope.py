"""No token reaches past its initiative, end to end: real HTTP, router, worker, outbox.

Two initiatives, each with its backbone token: somerville (A) and oporajita (B).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from notifiers.outbox import OutboxEntry
from services.directory.auth import Principal
from services.web.outbox import visible
from tests.api.conftest import bearer
from tests.web.conftest import WebHub

BEA = {"email": "bea@oporajita.example", "name": "Bea", "timezone": "Asia/Dhaka"}


async def test_backbone_a_cannot_redirect_b_recipients_mail(web_hub: WebHub) -> None:
    c = web_hub.client
    a = bearer(await web_hub.token("backbone", ("somerville",)))
    b = bearer(await web_hub.token("backbone", ("oporajita",)))
    assert (await c.put("/v1/recipients/bea", json=BEA, headers=b)).status_code == 201
    sub = {"recipient": "bea", "pattern": "impact.oporajita.>", "channel": "email"}
    assert (await c.post("/v1/subscriptions", json=sub, headers=b)).status_code == 201

    stolen = {**BEA, "email": "attacker@evil.example"}
    put = await c.put("/v1/recipients/bea", json=stolen, headers=a)
    assert put.status_code == 403, put.text
    assert "oporajita" in put.json()["detail"]
    assert "email address" in put.json()["detail"]
    patch = await c.patch("/v1/recipients/bea", json={"email": "attacker@evil.example"}, headers=a)
    assert patch.status_code == 403
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    pause = await c.patch("/v1/recipients/bea", json={"paused_until": until}, headers=a)
    assert pause.status_code == 403
    disable = await c.patch("/v1/recipients/bea", json={"disabled_channels": ["email"]}, headers=a)
    assert disable.status_code == 403
    assert (await c.delete("/v1/recipients/bea", headers=a)).status_code == 403
    # A may still add its own initiative's news to Bea, and Bea is then shared
    mine = {**sub, "pattern": "impact.somerville.milestone.>"}
    assert (await c.post("/v1/subscriptions", json=mine, headers=a)).status_code == 201
    assert (await c.put("/v1/recipients/bea", json=stolen, headers=a)).status_code == 403

    await web_hub.post("milestone", initiative="oporajita", topic="girls-school")
    [mail] = await web_hub.wait_outbox(1, "email")
    assert mail["to"] == "Bea <bea@oporajita.example>"
    got = await c.get("/v1/recipients/bea", headers=b)
    assert got.json()["email"] == "bea@oporajita.example"
    assert got.json()["paused_until"] is None


async def test_patch_merges_and_b_may_change_its_own_recipient(web_hub: WebHub) -> None:
    c = web_hub.client
    b = bearer(await web_hub.token("backbone", ("oporajita",)))
    assert (await c.put("/v1/recipients/bea", json=BEA, headers=b)).status_code == 201
    sub = {"recipient": "bea", "pattern": "impact.oporajita.>", "channel": "email"}
    assert (await c.post("/v1/subscriptions", json=sub, headers=b)).status_code == 201
    r = await c.patch("/v1/recipients/bea", json={"email": "bea@new.example"}, headers=b)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "bea@new.example"
    assert r.json()["timezone"] == "Asia/Dhaka"  # kept: a patch changes only what it names
    assert r.json()["name"] == "Bea"
    r = await c.patch("/v1/recipients/bea", json={"name": None}, headers=b)
    assert r.json()["name"] is None  # null clears
    r = await c.patch("/v1/recipients/bea", json={"timezone": "Mars/Base"}, headers=b)
    assert r.status_code == 422
    r = await c.patch("/v1/recipients/bea", json={"id": "other"}, headers=b)
    assert r.status_code == 422
    assert (await c.patch("/v1/recipients/nobody", json={}, headers=b)).status_code == 404


async def test_the_outbox_shows_a_backbone_only_its_initiatives_mail(web_hub: WebHub) -> None:
    await web_hub.person("maria", "impact.somerville.>")
    await web_hub.person("bea", "impact.oporajita.>")
    await web_hub.post(initiative="somerville", title="Market opens")
    await web_hub.post(initiative="oporajita", topic="girls-school", title="School opens")
    await web_hub.wait_outbox(2, "email")
    await web_hub.wait_quiet()

    await web_hub.login()  # a backbone token of somerville
    page = (await web_hub.client.get("/outbox")).text
    assert "maria@school.example" in page
    assert "Market opens" in page
    assert "bea@school.example" not in page
    assert "School opens" not in page
    bea_links = web_hub.signer.preferences_token("bea")
    assert bea_links not in page

    async with httpx.AsyncClient(base_url=web_hub.url) as admin:
        await web_hub.login(admin, role="admin")
        page = (await admin.get("/outbox")).text
    assert "bea@school.example" in page
    assert "maria@school.example" in page


def test_an_outbox_digest_is_shown_only_when_its_recipient_is_wholly_in_scope() -> None:
    backbone = Principal("1" * 16, "backbone", frozenset({"somerville"}))
    follows = {"maria": ["impact.somerville.>"], "both": ["impact.somerville.>", "impact.b.>"]}
    digest: OutboxEntry = {"recipient": "maria", "initiative": "somerville", "digest": True}
    assert visible(digest, backbone, follows)
    assert not visible({**digest, "recipient": "both"}, backbone, follows)
    assert not visible({**digest, "recipient": "gone"}, backbone, follows)
    old: OutboxEntry = {"recipient": "maria"}  # recorded before entries named their initiative
    assert visible(old, backbone, follows)
    shared: OutboxEntry = {"recipient": "both"}
    assert not visible(shared, backbone, follows)
