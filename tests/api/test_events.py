"""POST /v1/events and /v1/events:batch over real HTTP, against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas.events import EVENT_ADAPTER
from services.bus import EVENTS
from tests.api.conftest import Api, ApiFactory, bearer

METRIC = {
    "kind": "metric",
    "initiative": "somerville",
    "topic": "bmi",
    "data": {"indicator": "Children at a healthy weight", "value": 71.5, "unit": "%"},
}
CLOUDEVENT = {
    "specversion": "1.0",
    "id": "crm-42",
    "source": "urn:example:crm",
    "type": "org.impactbus.milestone",
    "time": "2026-10-01T09:30:00Z",
    "subject": "farmers-market",
    "initiative": "somerville",
    "data": {"kind": "milestone", "title": "Market opens", "status": "reached"},
}


def json_body(token: str) -> dict[str, str]:
    """Headers of a raw JSON body (httpx sets the content type only for ``json=``)."""
    return {**bearer(token), "Content-Type": "application/json"}


def with_data(**data: object) -> dict[str, object]:
    return {**METRIC, "data": {**METRIC["data"], **data}}  # type: ignore[dict-item]


async def stored(api: Api, seq: int) -> dict[str, object]:
    msg = await api.bus.js.get_msg(EVENTS, seq)
    return EVENT_ADAPTER.validate_json(msg.data).model_dump(mode="json")


async def test_short_form_is_completed_and_stored(api: Api, backbone: str) -> None:
    r = await api.client.post("/v1/events", json=METRIC, headers=bearer(backbone))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["subject"] == "impact.somerville.metric.bmi"
    assert body["duplicate"] is False
    event = await stored(api, body["sequence"])
    token_id = backbone.split("_")[1]
    assert event["id"] == body["id"]
    assert event["source"] == f"urn:impactbus:token:{token_id}"
    assert event["type"] == "org.impactbus.metric"
    assert event["data"]["value"] == 71.5  # type: ignore[index]


async def test_cloudevent_is_stored_as_sent(api: Api, backbone: str) -> None:
    r = await api.client.post("/v1/events", json=CLOUDEVENT, headers=bearer(backbone))
    assert r.status_code == 202, r.text
    event = await stored(api, r.json()["sequence"])
    assert event["id"] == "crm-42"
    assert event["source"] == "urn:example:crm"
    assert r.json()["subject"] == "impact.somerville.milestone.farmers-market"


async def test_idempotency_key_makes_a_retry_the_same_event(api: Api, backbone: str) -> None:
    headers = {**bearer(backbone), "Idempotency-Key": "crm-sync-2026-10-01-bmi"}
    first = await api.client.post("/v1/events", json=METRIC, headers=headers)
    again = await api.client.post("/v1/events", json=METRIC, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == "crm-sync-2026-10-01-bmi"
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert await api.count() == 1


async def test_cloudevents_source_and_id_make_a_retry_the_same_event(
    api: Api, backbone: str
) -> None:
    for _ in range(3):
        r = await api.client.post("/v1/events", json=CLOUDEVENT, headers=bearer(backbone))
        assert r.status_code == 202
    assert r.json()["duplicate"] is True
    assert await api.count() == 1


async def test_without_idempotency_key_each_post_is_a_new_event(api: Api, backbone: str) -> None:
    for _ in range(2):
        assert (
            await api.client.post("/v1/events", json=METRIC, headers=bearer(backbone))
        ).status_code == 202
    assert await api.count() == 2


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**METRIC, "kind": "gossip"}, "kind"),
        ({**CLOUDEVENT, "specversion": "0.3"}, "specversion"),
        ({**METRIC, "initiative": "Somerville"}, "initiative"),
        ({**METRIC, "topic": "bmi.children"}, "topic"),
        ({**METRIC, "topic": ">"}, "topic"),
        (with_data(indicator="bad\x00name"), "data.indicator"),
        (with_data(indicator="two\nlines"), "data.indicator"),
        (with_data(unit="x" * 41), "data.unit"),
        (with_data(indicator="x" * 201), "data.indicator"),
        (with_data(value="lots"), "data.value"),
        (with_data(surprise=True), "data.surprise"),
        ({**METRIC, "extra": 1}, "extra"),
        ({**CLOUDEVENT, "type": "org.impactbus.update"}, "type"),
        ({**CLOUDEVENT, "id": "has space"}, "id"),
        ({k: v for k, v in METRIC.items() if k != "data"}, "data"),
        ([METRIC], "body"),
    ],
)
async def test_schema_violations_are_422_with_the_field(
    api: Api, backbone: str, payload: object, field: str
) -> None:
    r = await api.client.post("/v1/events", json=payload, headers=bearer(backbone))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in r.json()["detail"]
    assert await api.count() == 0


async def test_nan_is_refused(api: Api, backbone: str) -> None:
    raw = (
        b'{"kind":"metric","initiative":"somerville","topic":"bmi",'
        b'"data":{"indicator":"x","value":NaN}}'
    )
    r = await api.client.post("/v1/events", content=raw, headers=json_body(backbone))
    assert r.status_code == 422
    assert "data.value" in r.json()["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"kind": "metric",', b"\xff\xfe", b"[1,]"])
async def test_malformed_json_is_400(api: Api, backbone: str, raw: bytes) -> None:
    r = await api.client.post("/v1/events", content=raw, headers=json_body(backbone))
    assert r.status_code == 400, r.text
    assert "Traceback" not in r.text
    assert await api.count() == 0


async def test_bad_idempotency_key_is_422(api: Api, backbone: str) -> None:
    headers = {**bearer(backbone), "Idempotency-Key": "x" * 101}
    r = await api.client.post("/v1/events", json=METRIC, headers=headers)
    assert r.status_code == 422
    assert "Idempotency-Key" in r.json()["detail"]


async def test_body_over_the_limit_is_413(api_factory: ApiFactory) -> None:
    api = await api_factory(max_body=4096)
    token = await api.token()
    big = with_data(note="x" * 5000)
    r = await api.client.post("/v1/events", json=big, headers=bearer(token))
    assert r.status_code == 413
    assert await api.count() == 0


async def test_chunked_body_over_the_limit_is_413_without_content_length(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_body=4096)
    token = await api.token()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"kind":"update","initiative":"somerville","topic":"t","data":{"title":"x","body":"'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    r = await api.client.post("/v1/events", content=chunks(), headers=json_body(token))
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert await api.count() == 0
    assert (await api.client.get("/healthz")).status_code == 200


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-token",
        "Bearer ib_0123456789abcdef_wrongsecret",
        "Bearer ib_0123456789ABCDEF_secret",
    ],
)
async def test_missing_or_bad_token_is_401(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = await api.client.post("/v1/events", json=METRIC, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert await api.count() == 0


async def test_right_id_wrong_secret_is_401(api: Api, backbone: str) -> None:
    forged = backbone[: backbone.rindex("_") + 1] + "A" * 43
    r = await api.client.post("/v1/events", json=METRIC, headers=bearer(forged))
    assert r.status_code == 401


async def test_another_initiative_is_403(api: Api, backbone: str) -> None:
    r = await api.client.post(
        "/v1/events", json={**METRIC, "initiative": "cambridge"}, headers=bearer(backbone)
    )
    assert r.status_code == 403
    assert "cambridge" in r.json()["detail"]
    assert await api.count() == 0


async def test_system_token_publishes_metrics_only(api: Api) -> None:
    system = await api.token("system", ("somerville",))
    assert (
        await api.client.post("/v1/events", json=METRIC, headers=bearer(system))
    ).status_code == 202
    r = await api.client.post("/v1/events", json=CLOUDEVENT, headers=bearer(system))
    assert r.status_code == 403
    assert await api.count() == 1


async def test_partner_cannot_publish(api: Api) -> None:
    partner = await api.token("partner", ("somerville",), recipient="maria")
    r = await api.client.post("/v1/events", json=METRIC, headers=bearer(partner))
    assert r.status_code == 403


async def test_admin_publishes_anywhere(api: Api) -> None:
    admin = await api.token("admin", ())
    r = await api.client.post(
        "/v1/events", json={**METRIC, "initiative": "anywhere"}, headers=bearer(admin)
    )
    assert r.status_code == 202


async def test_a_flooding_token_gets_429_with_retry_after(api_factory: ApiFactory) -> None:
    api = await api_factory(rate_per_s=0.5, rate_burst=3)
    flooder, other = await api.token(), await api.token()
    statuses = [
        (await api.client.get("/v1/recipients", headers=bearer(flooder))).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    r = await api.client.post("/v1/events", json=METRIC, headers=bearer(flooder))
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert (await api.client.get("/v1/recipients", headers=bearer(other))).status_code == 200
    assert await api.count() == 0


# ----------------------------------------------------------------------------- batch


async def test_batch_publishes_the_valid_and_reports_each(api: Api, backbone: str) -> None:
    batch = [
        METRIC,
        {**METRIC, "data": {"indicator": ""}},
        {**METRIC, "initiative": "cambridge"},
        CLOUDEVENT,
        "not an event",
    ]
    r = await api.client.post("/v1/events:batch", json=batch, headers=bearer(backbone))
    assert r.status_code == 207, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert [x["status"] for x in results] == [202, 422, 403, 202, 422]
    assert "data.indicator" in results[1]["error"]
    assert results[3]["subject"] == "impact.somerville.milestone.farmers-market"
    assert await api.count() == 2


async def test_batch_all_valid_is_202_and_idempotent_with_a_key(api: Api, backbone: str) -> None:
    batch = [with_data(value=float(i)) for i in range(50)]
    headers = {**bearer(backbone), "Idempotency-Key": "nightly-2026-10-01"}
    first = await api.client.post("/v1/events:batch", json=batch, headers=headers)
    again = await api.client.post("/v1/events:batch", json=batch, headers=headers)
    assert first.status_code == again.status_code == 202
    assert [x["id"] for x in first.json()["results"]] == [
        f"nightly-2026-10-01-{i}" for i in range(50)
    ]
    assert all(x["duplicate"] for x in again.json()["results"])
    assert await api.count() == 50


@pytest.mark.parametrize(
    ("payload", "status"), [({"events": []}, 422), ([], 422), ([METRIC] * 1001, 422)]
)
async def test_batch_shape_errors(api: Api, backbone: str, payload: object, status: int) -> None:
    r = await api.client.post("/v1/events:batch", json=payload, headers=bearer(backbone))
    assert r.status_code == status
    assert await api.count() == 0


async def test_batch_of_1000_is_accepted(api: Api, backbone: str) -> None:
    batch = [with_data(value=float(i)) for i in range(1000)]
    r = await api.client.post("/v1/events:batch", json=batch, headers=bearer(backbone))
    assert r.status_code == 202
    assert await api.count() == 1000
