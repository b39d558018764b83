"""A recipient that would not read back is refused on write; one stored anyway (by an older
hub, or straight to NATS) never poisons the listings."""

from __future__ import annotations

import json

import pytest

from services.bus import KV_RECIPIENTS
from tests.api.conftest import Api, bearer

# pydantic percent-encodes the path: 1,000 "é" become 6,000 characters, over the
# 2,083 a URL may have, so the stored record failed validation on every read
LONG_ONCE_NORMALISED = "https://example.org/" + "é" * 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webhook_url", LONG_ONCE_NORMALISED),
        ("timezone", "America"),  # a directory of the tz database
        ("timezone", "a" * 300),  # too long a file name
    ],
)
async def test_a_value_that_would_not_read_back_is_422_and_listings_still_answer(
    api: Api, field: str, value: str
) -> None:
    admin = bearer(await api.token("admin", ()))
    ok = await api.client.put("/v1/recipients/ana", json={"name": "Ana"}, headers=admin)
    assert ok.status_code == 201
    r = await api.client.put("/v1/recipients/maria", json={field: value}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in r.json()["detail"]
    listing = await api.client.get("/v1/recipients", headers=admin)
    assert listing.status_code == 200
    assert [x["id"] for x in listing.json()] == ["ana"]
    assert (await api.client.get("/v1/recipients/maria", headers=admin)).status_code == 404


async def test_an_unreadable_stored_recipient_is_skipped_named_and_repairable(
    api: Api, backbone: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = bearer(backbone)
    assert (await api.client.put("/v1/recipients/ana", json={}, headers=h)).status_code == 201
    kv = await api.bus.kv(KV_RECIPIENTS)
    bad = {"id": "maria", "webhook_url": LONG_ONCE_NORMALISED.replace("é", "%C3%A9")}
    await kv.put("maria", json.dumps(bad).encode())

    listing = await api.client.get("/v1/recipients", headers=h)
    assert listing.status_code == 200
    assert [x["id"] for x in listing.json()] == ["ana"]
    assert "skipping recipient 'maria'" in caplog.text

    one = await api.client.get("/v1/recipients/maria", headers=h)
    assert one.status_code == 409, one.text
    assert one.headers["content-type"] == "application/problem+json"
    assert "recipient 'maria' is stored in a form this hub cannot read" in one.json()["detail"]
    assert "webhook_url" in one.json()["detail"]

    # a partner cannot take over what the hub set on it; a backbone token repairs it
    partner = bearer(await api.token("partner", ("somerville",), recipient="maria"))
    r = await api.client.put("/v1/recipients/maria", json={"name": "M"}, headers=partner)
    assert r.status_code == 409
    r = await api.client.put("/v1/recipients/maria", json={"name": "Maria"}, headers=h)
    assert r.status_code == 200, r.text
    assert (await api.client.get("/v1/recipients/maria", headers=h)).json()["name"] == "Maria"

    await kv.put("maria", json.dumps(bad).encode())
    assert (await api.client.delete("/v1/recipients/maria", headers=h)).status_code == 204
    assert (await api.client.get("/v1/recipients/maria", headers=h)).status_code == 404
