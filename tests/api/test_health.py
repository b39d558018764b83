"""Probes, Prometheus metrics, OpenAPI, and robustness of the edge."""

from __future__ import annotations

import contextlib

from services.bus import Bus, EmbeddedNats, NatsSettings
from tests.api.conftest import Api, ApiFactory, bearer

METRIC = {
    "kind": "metric",
    "initiative": "somerville",
    "topic": "bmi",
    "data": {"indicator": "x", "value": 1},
}


async def test_probes(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_not_ready_without_the_events_stream(api: Api) -> None:
    await api.bus.js.delete_stream("EVENTS")
    r = await api.client.get("/readyz")
    assert r.status_code == 503
    assert "EVENTS" in r.json()["detail"]
    assert (await api.client.get("/healthz")).status_code == 200


async def test_metrics_use_route_templates_and_event_labels(api: Api, backbone: str) -> None:
    h = bearer(backbone)
    await api.client.post("/v1/events", json=METRIC, headers=h)
    await api.client.get("/v1/recipients/maria", headers=h)
    await api.client.get("/v1/recipients/joe", headers=h)
    await api.client.get("/no/such/path/42")
    text = (await api.client.get("/metrics")).text
    assert 'impactbus_api_events_ingested_total{initiative="somerville",kind="metric"} 1.0' in text
    assert (
        'impactbus_api_requests_total{method="GET",route="/v1/recipients/{recipient_id}",'
        'status="404"} 2.0'
    ) in text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/path" not in text
    assert "maria" not in text
    assert "impact.somerville.metric.bmi" not in text


async def test_errors_never_leak_a_traceback(api: Api, backbone: str) -> None:
    h = {**bearer(backbone), "Content-Type": "application/json"}
    bodies = [b"\x00" * 100, b"{" * 10_000, b'"' + b"\\" * 999 + b'"', b"1e999999", b"null"]
    for body in bodies:
        r = await api.client.post("/v1/events", content=body, headers=h)
        assert r.status_code in (400, 422), (body[:20], r.status_code)
        assert "Traceback" not in r.text
        assert "File " not in r.text
    assert await api.count() == 0
    assert (await api.client.get("/healthz")).status_code == 200


async def test_not_found_and_method_not_allowed_are_problems(api: Api) -> None:
    r = await api.client.get("/v2/nothing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    r = await api.client.delete("/v1/events")
    assert r.status_code == 405


async def test_openapi_documents_every_route_with_examples(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert "/v1/events:batch" in paths
    expected = {
        ("post", "/v1/events"),
        ("post", "/v1/events:batch"),
        ("get", "/v1/recipients"),
        ("get", "/v1/recipients/{recipient_id}"),
        ("put", "/v1/recipients/{recipient_id}"),
        ("delete", "/v1/recipients/{recipient_id}"),
        ("get", "/v1/subscriptions"),
        ("post", "/v1/subscriptions"),
        ("delete", "/v1/subscriptions/{subscription_id}"),
        ("get", "/v1/initiatives/{initiative}/events"),
    }
    found = {(m, p) for p, ops in paths.items() for m in ops}
    assert expected <= found
    for method, path in expected:
        op = paths[path][method]
        assert op["security"] == [{"bearer": []}]
        if "requestBody" in op:
            content = op["requestBody"]["content"]["application/json"]
            assert "example" in content or "examples" in content, (method, path)
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert ok, (method, path)
        for status, response in op["responses"].items():
            if status.startswith("2") and status != "204":
                media = response.get("content", {})
                assert any("example" in m or "examples" in m for m in media.values()), (
                    method,
                    path,
                    status,
                )
            if status.startswith(("4", "5")):
                assert "example" in response["content"]["application/problem+json"]
    schemas = doc["components"]["schemas"]
    assert {"Event", "ShortEvent", "Recipient", "SubscriptionIn", "MetricUpdate", "Problem"} <= set(
        schemas
    )
    assert "HTTPValidationError" not in schemas  # every 422 is a problem document


async def test_nats_down_is_503_and_the_worker_lives(
    api_factory: ApiFactory, nats_server: EmbeddedNats
) -> None:
    quick = await Bus.connect(
        nats_server.url, NatsSettings(url=nats_server.url, publish_timeout_s=0.3)
    )
    try:
        api = await api_factory(on_bus=quick)
        token = await api.token()
        assert (await api.client.get("/v1/recipients", headers=bearer(token))).status_code == 200
        nats_server.kill()
        assert (await api.client.get("/readyz")).status_code == 503
        r = await api.client.post("/v1/events", json=METRIC, headers=bearer(token))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        r = await api.client.get("/v1/recipients/maria", headers=bearer(token))
        assert r.status_code == 503, r.text
        assert (await api.client.get("/healthz")).status_code == 200
    finally:
        with contextlib.suppress(ConnectionError):  # Bus.close after the server died
            await quick.close()
