"""Idempotency-Key: one key, one body, across API processes sharing NATS."""

from __future__ import annotations

import json

from services.bus import Bus, EmbeddedNats, NatsSettings
from tests.api.conftest import Api, ApiFactory, bearer

METRIC = {
    "kind": "metric",
    "initiative": "somerville",
    "topic": "bmi",
    "data": {"indicator": "Children at a healthy weight", "value": 71.5, "unit": "%"},
}
OTHER = {**METRIC, "data": {**METRIC["data"], "value": 80.0}}


def keyed(token: str, key: str) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key}


def assert_key_reused(r: object, key: str) -> None:
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    assert key in detail
    assert "already used for other content" in detail


async def test_same_key_other_body_is_409_same_body_is_the_same_event(
    api: Api, backbone: str
) -> None:
    h = keyed(backbone, "crm-sync-bmi")
    first = await api.client.post("/v1/events", json=METRIC, headers=h)
    assert first.status_code == 202, first.text
    assert_key_reused(await api.client.post("/v1/events", json=OTHER, headers=h), "crm-sync-bmi")
    # the same content, keys reordered and spaced differently, is a retry
    raw = json.dumps(dict(reversed(METRIC.items())), indent=2)
    again = await api.client.post(
        "/v1/events", content=raw, headers={**h, "Content-Type": "application/json"}
    )
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] == "crm-sync-bmi"
    assert again.json()["duplicate"] is True
    assert await api.count() == 1


async def test_the_key_is_remembered_across_api_processes(
    api_factory: ApiFactory, nats_server: EmbeddedNats
) -> None:
    one = await api_factory()
    other_bus = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    try:
        two = await api_factory(on_bus=other_bus)
        token = await one.token()
        h = keyed(token, "nightly-1")
        assert (await one.client.post("/v1/events", json=METRIC, headers=h)).status_code == 202
        assert_key_reused(await two.client.post("/v1/events", json=OTHER, headers=h), "nightly-1")
        retry = await two.client.post("/v1/events", json=METRIC, headers=h)
        assert retry.status_code == 202
        assert retry.json()["duplicate"] is True
        assert await one.count() == 1
    finally:
        two.rt.stop.set()
        await two.task
        await other_bus.close()


async def test_batch_key_with_other_content_is_409(api: Api, backbone: str) -> None:
    h = keyed(backbone, "batch-7")
    first = await api.client.post("/v1/events:batch", json=[METRIC, OTHER], headers=h)
    assert first.status_code == 202, first.text
    assert_key_reused(
        await api.client.post("/v1/events:batch", json=[OTHER, METRIC], headers=h), "batch-7"
    )
    again = await api.client.post("/v1/events:batch", json=[METRIC, OTHER], headers=h)
    assert again.status_code == 202
    assert [r["duplicate"] for r in again.json()["results"]] == [True, True]
    assert await api.count() == 2


async def test_a_refused_request_does_not_use_up_the_key(api: Api, backbone: str) -> None:
    h = keyed(backbone, "k-1")
    invalid = {**METRIC, "data": {"value": 1}}
    assert (await api.client.post("/v1/events", json=invalid, headers=h)).status_code == 422
    assert (await api.client.post("/v1/events", json=METRIC, headers=h)).status_code == 202


async def test_a_key_belongs_to_its_token_and_route(api: Api, backbone: str) -> None:
    other = await api.token("backbone", ("somerville",))
    assert (
        await api.client.post("/v1/events", json=METRIC, headers=keyed(backbone, "k"))
    ).status_code == 202
    r = await api.client.post("/v1/events", json=OTHER, headers=keyed(other, "k"))
    assert r.status_code == 202, r.text
    r = await api.client.post("/v1/events:batch", json=[OTHER], headers=keyed(backbone, "k"))
    assert r.status_code == 202, r.text
    assert await api.count() == 3
