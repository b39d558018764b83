"""JSON routes refuse a body declared as anything else with 415, before reading it."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import Api, bearer

METRIC = {
    "kind": "metric",
    "initiative": "somerville",
    "topic": "bmi",
    "data": {"indicator": "Children at a healthy weight", "value": 71.5},
}
RECIPIENT = {"name": "Maria Lopez", "email": "maria@example.org"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/events", METRIC),
        ("POST", "/v1/events:batch", [METRIC]),
        ("PUT", "/v1/recipients/maria", RECIPIENT),
        ("POST", "/v1/subscriptions", {"recipient": "maria", "pattern": "impact.>"}),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    api: Api, method: str, path: str, body: object
) -> None:
    admin = bearer(await api.token("admin", ()))
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {**admin, **({"Content-Type": content_type} if content_type else {})}
        r = await api.client.request(method, path, content=json.dumps(body), headers=headers)
        assert r.status_code == 415, (content_type, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "application/json" in r.json()["detail"]
    assert await api.count() == 0
    assert (await api.client.get("/v1/recipients", headers=admin)).json() == []


async def test_cloudevents_media_types_are_json(api: Api, backbone: str) -> None:
    one = await api.client.post(
        "/v1/events",
        content=json.dumps(METRIC),
        headers={**bearer(backbone), "Content-Type": "application/cloudevents+json"},
    )
    assert one.status_code == 202, one.text
    batch = await api.client.post(
        "/v1/events:batch",
        content=json.dumps([METRIC]),
        headers={
            **bearer(backbone),
            "Content-Type": "application/cloudevents-batch+json; charset=utf-8",
        },
    )
    assert batch.status_code == 202, batch.text
    assert await api.count() == 2


async def test_a_batch_media_type_is_not_one_event(api: Api, backbone: str) -> None:
    r = await api.client.post(
        "/v1/events",
        content=json.dumps(METRIC),
        headers={**bearer(backbone), "Content-Type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 415
    assert "application/cloudevents+json" in r.json()["detail"]
