"""Recipients and subscriptions over HTTP: same rules as the CLI, plus the token's scope."""

from __future__ import annotations

from services.directory.records import Directory
from tests.api.conftest import Api, bearer

MARIA = {"email": "maria@example.org", "name": "Maria Lopez", "timezone": "America/New_York"}


async def test_recipient_crud(api: Api, backbone: str) -> None:
    h = bearer(backbone)
    created = await api.client.put("/v1/recipients/maria", json=MARIA, headers=h)
    assert created.status_code == 201, created.text
    replaced = await api.client.put(
        "/v1/recipients/maria", json={**MARIA, "id": "maria", "locale": "es"}, headers=h
    )
    assert replaced.status_code == 200
    got = await api.client.get("/v1/recipients/maria", headers=h)
    assert got.json()["locale"] == "es"
    assert [r["id"] for r in (await api.client.get("/v1/recipients", headers=h)).json()] == [
        "maria"
    ]
    # the same directory the CLI uses
    assert (await (await Directory.open(api.bus)).get_recipient("maria")).email == MARIA["email"]
    assert (await api.client.delete("/v1/recipients/maria", headers=h)).status_code == 204
    assert (await api.client.get("/v1/recipients/maria", headers=h)).status_code == 404


async def test_recipient_input_errors(api: Api, backbone: str) -> None:
    h = bearer(backbone)
    r = await api.client.put("/v1/recipients/maria", json={**MARIA, "id": "other"}, headers=h)
    assert r.status_code == 422
    r = await api.client.put("/v1/recipients/maria", json={"timezone": "Mars/Base"}, headers=h)
    assert r.status_code == 422
    assert "timezone" in r.json()["detail"]
    r = await api.client.put("/v1/recipients/Maria", json=MARIA, headers=h)
    assert r.status_code == 422
    raw = {**h, "Content-Type": "application/json"}
    r = await api.client.put("/v1/recipients/maria", content=b"{", headers=raw)
    assert r.status_code == 400
    assert (await api.client.get("/v1/recipients/nobody", headers=h)).status_code == 404
    assert (await api.client.delete("/v1/recipients/nobody", headers=h)).status_code == 404


async def test_subscriptions_crud_and_scope(api: Api, backbone: str) -> None:
    h = bearer(backbone)
    await api.client.put("/v1/recipients/maria", json=MARIA, headers=h)
    body = {"recipient": "maria", "pattern": "impact.somerville.>", "channel": "email"}
    r = await api.client.post("/v1/subscriptions", json=body, headers=h)
    assert r.status_code == 201, r.text
    sub = r.json()
    again = await api.client.post("/v1/subscriptions", json=body, headers=h)
    assert again.json()["id"] == sub["id"]  # derived id: subscribing twice is one subscription
    for pattern in ("impact.cambridge.>", "impact.*.milestone.>", "impact.>"):
        r = await api.client.post("/v1/subscriptions", json={**body, "pattern": pattern}, headers=h)
        assert r.status_code == 403, pattern
    r = await api.client.post("/v1/subscriptions", json={**body, "pattern": "news.>"}, headers=h)
    assert r.status_code == 422
    r = await api.client.post("/v1/subscriptions", json={**body, "channel": "slack"}, headers=h)
    assert r.status_code == 422  # no slack contact
    r = await api.client.post("/v1/subscriptions", json={**body, "recipient": "ghost"}, headers=h)
    assert r.status_code == 404
    listed = (await api.client.get("/v1/subscriptions", headers=h)).json()
    assert [s["id"] for s in listed] == [sub["id"]]
    assert (await api.client.delete(f"/v1/subscriptions/{sub['id']}", headers=h)).status_code == 204
    assert (await api.client.delete(f"/v1/subscriptions/{sub['id']}", headers=h)).status_code == 404


async def test_partner_manages_only_its_own_recipient(api: Api, backbone: str) -> None:
    admin = bearer(await api.token("admin", ()))
    partner = bearer(await api.token("partner", ("somerville",), recipient="maria"))
    await api.client.put("/v1/recipients/maria", json=MARIA, headers=admin)
    await api.client.put("/v1/recipients/joe", json={"email": "joe@example.org"}, headers=admin)
    theirs = await api.client.post(
        "/v1/subscriptions",
        json={"recipient": "joe", "pattern": "impact.somerville.>", "channel": "email"},
        headers=admin,
    )
    elsewhere = await api.client.post(
        "/v1/subscriptions",
        json={"recipient": "maria", "pattern": "impact.cambridge.>", "channel": "email"},
        headers=admin,
    )
    assert [r["id"] for r in (await api.client.get("/v1/recipients", headers=partner)).json()] == [
        "maria"
    ]
    assert (await api.client.get("/v1/recipients/joe", headers=partner)).status_code == 403
    assert (await api.client.put("/v1/recipients/joe", json={}, headers=partner)).status_code == 403
    assert (await api.client.delete("/v1/recipients/maria", headers=partner)).status_code == 403
    mine = {"recipient": "maria", "pattern": "impact.somerville.metric.>", "channel": "email"}
    assert (
        await api.client.post("/v1/subscriptions", json=mine, headers=partner)
    ).status_code == 201
    r = await api.client.post(
        "/v1/subscriptions", json={**mine, "pattern": "impact.cambridge.>"}, headers=partner
    )
    assert r.status_code == 403
    r = await api.client.post(
        "/v1/subscriptions", json={**mine, "recipient": "joe"}, headers=partner
    )
    assert r.status_code == 403
    listed = (await api.client.get("/v1/subscriptions", headers=partner)).json()
    assert {s["recipient"] for s in listed} == {"maria"}
    assert len(listed) == 2
    sid = theirs.json()["id"]
    assert (await api.client.delete(f"/v1/subscriptions/{sid}", headers=partner)).status_code == 403
    # leaving is always allowed, even a subscription an admin made on another initiative
    sid = elsewhere.json()["id"]
    assert (await api.client.delete(f"/v1/subscriptions/{sid}", headers=partner)).status_code == 204


async def test_backbone_cannot_delete_a_recipient_subscribed_elsewhere(
    api: Api, backbone: str
) -> None:
    admin = bearer(await api.token("admin", ()))
    await api.client.put("/v1/recipients/maria", json=MARIA, headers=admin)
    await api.client.post(
        "/v1/subscriptions",
        json={"recipient": "maria", "pattern": "impact.cambridge.>", "channel": "email"},
        headers=admin,
    )
    r = await api.client.delete("/v1/recipients/maria", headers=bearer(backbone))
    assert r.status_code == 403
    assert (await api.client.delete("/v1/recipients/maria", headers=admin)).status_code == 204


async def test_system_token_has_no_directory_access(api: Api) -> None:
    system = bearer(await api.token("system", ("somerville",)))
    assert (await api.client.get("/v1/recipients", headers=system)).status_code == 403
    assert (await api.client.get("/v1/subscriptions", headers=system)).status_code == 403
    assert (await api.client.put("/v1/recipients/x", json={}, headers=system)).status_code == 403


async def test_a_change_that_drops_a_used_contact_asks_for_force(api: Api, backbone: str) -> None:
    h = bearer(backbone)
    await api.client.put("/v1/recipients/carol", json=MARIA, headers=h)
    body = {"recipient": "carol", "pattern": "impact.somerville.>", "channel": "email"}
    assert (await api.client.post("/v1/subscriptions", json=body, headers=h)).status_code == 201
    # a PUT with only a Slack channel would wipe the email her subscription delivers to
    slack_only = {"slack_channel": "C123", "timezone": "America/New_York"}
    r = await api.client.put("/v1/recipients/carol", json=slack_only, headers=h)
    assert r.status_code == 422
    assert "impact.somerville.> via email" in r.json()["detail"]
    assert "force=true" in r.json()["detail"]
    r = await api.client.patch("/v1/recipients/carol", json={"email": None}, headers=h)
    assert r.status_code == 422
    got = (await api.client.get("/v1/recipients/carol", headers=h)).json()
    assert got["email"] == MARIA["email"]  # nothing changed
    subs = (await api.client.get("/v1/subscriptions?recipient=carol", headers=h)).json()
    assert len(subs) == 1
    # asked for: the contact goes and so does the subscription that used it
    r = await api.client.put("/v1/recipients/carol?force=true", json=slack_only, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["email"] is None
    subs = (await api.client.get("/v1/subscriptions?recipient=carol", headers=h)).json()
    assert subs == []
