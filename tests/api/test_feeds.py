"""GET /v1/initiatives/{initiative}/events, read straight from the EVENTS stream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.conftest import Api, bearer


def metric(initiative: str, value: float, kind: str = "metric") -> dict[str, object]:
    data: dict[str, object] = (
        {"indicator": "bmi", "value": value} if kind == "metric" else {"title": f"u{value:g}"}
    )
    return {"kind": kind, "initiative": initiative, "topic": "t", "data": data}


async def post_all(api: Api, events: list[dict[str, object]]) -> list[int]:
    admin = bearer(await api.token("admin", ()))
    r = await api.client.post("/v1/events:batch", json=events, headers=admin)
    assert r.status_code == 202, r.text
    return [x["sequence"] for x in r.json()["results"]]


async def test_last_events_newest_last_with_kind_filter(api: Api, backbone: str) -> None:
    await post_all(api, [metric("somerville", i) for i in range(10)])
    await post_all(api, [metric("cambridge", i) for i in range(5)])
    await post_all(api, [metric("somerville", 100 + i, "update") for i in range(3)])
    h = bearer(backbone)
    r = await api.client.get("/v1/initiatives/somerville/events?limit=4", headers=h)
    assert r.status_code == 200, r.text
    titles = [e["data"].get("title") or e["data"]["value"] for e in r.json()["events"]]
    assert titles == [9.0, "u100", "u101", "u102"]
    r = await api.client.get("/v1/initiatives/somerville/events?kind=metric&limit=3", headers=h)
    assert [e["data"]["value"] for e in r.json()["events"]] == [7.0, 8.0, 9.0]
    assert r.json()["kind"] == "metric"
    r = await api.client.get("/v1/initiatives/somerville/events", headers=h)
    assert len(r.json()["events"]) == 13  # default limit 50


async def test_tail_is_found_in_a_long_uneven_history(api: Api, backbone: str) -> None:
    await post_all(api, [metric("somerville", i) for i in range(3)])
    await post_all(api, [metric("cambridge", i) for i in range(900)])
    await post_all(api, [metric("somerville", 3)])
    await post_all(api, [metric("cambridge", i) for i in range(100)])
    r = await api.client.get("/v1/initiatives/somerville/events?limit=2", headers=bearer(backbone))
    assert [e["data"]["value"] for e in r.json()["events"]] == [2.0, 3.0]


async def test_since_sequence_pages_forward(api: Api, backbone: str) -> None:
    seqs = await post_all(api, [metric("somerville", i) for i in range(7)])
    h = bearer(backbone)
    url = f"/v1/initiatives/somerville/events?since={seqs[0]}&limit=3"
    page1 = (await api.client.get(url, headers=h)).json()
    assert [e["data"]["value"] for e in page1["events"]] == [0.0, 1.0, 2.0]
    url = f"/v1/initiatives/somerville/events?since={page1['next_since']}&limit=3"
    page2 = (await api.client.get(url, headers=h)).json()
    assert [e["data"]["value"] for e in page2["events"]] == [3.0, 4.0, 5.0]
    url = f"/v1/initiatives/somerville/events?since={seqs[-1] + 1}"
    empty = (await api.client.get(url, headers=h)).json()
    assert empty["events"] == []
    assert empty["next_since"] == seqs[-1] + 1


async def test_since_time(api: Api, backbone: str) -> None:
    await post_all(api, [metric("somerville", i) for i in range(3)])
    cut = datetime.now(UTC)
    await post_all(api, [metric("somerville", 10 + i) for i in range(2)])
    r = await api.client.get(
        "/v1/initiatives/somerville/events",
        params={"since": cut.isoformat()},
        headers=bearer(backbone),
    )
    assert [e["data"]["value"] for e in r.json()["events"]] == [10.0, 11.0]


async def test_empty_stream(api: Api, backbone: str) -> None:
    r = await api.client.get("/v1/initiatives/somerville/events", headers=bearer(backbone))
    assert r.status_code == 200
    assert r.json()["events"] == []


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "kind=gossip"])
async def test_bad_query_is_422(api: Api, backbone: str, query: str) -> None:
    r = await api.client.get(f"/v1/initiatives/somerville/events?{query}", headers=bearer(backbone))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "since",
    [
        "yesterday",
        "2026-10-01T00:00:00",  # no offset
        "18446744073709551616",  # one past the largest JetStream sequence
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "2262-04-12T00:00:00Z",  # past nats-server's Unix nanoseconds: would read from the start
        "1969-12-31T23:59:59Z",
        "\u0661\u0662",  # digits, but not ASCII ones
    ],
)
async def test_unreadable_since_is_400_naming_the_accepted_forms(
    api: Api, backbone: str, since: str
) -> None:
    r = await api.client.get(
        "/v1/initiatives/somerville/events", params={"since": since}, headers=bearer(backbone)
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "stream sequence from 1 to 18446744073709551615" in r.json()["detail"]
    assert "RFC 3339 time with an offset" in r.json()["detail"]


async def test_since_at_the_bounds_reads_an_empty_page(api: Api, backbone: str) -> None:
    await post_all(api, [metric("somerville", 1)])
    for since in ("18446744073709551615", "2262-04-11T23:47:16Z"):
        r = await api.client.get(
            "/v1/initiatives/somerville/events", params={"since": since}, headers=bearer(backbone)
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == []


async def test_bad_initiative_is_422(api: Api) -> None:
    admin = bearer(await api.token("admin", ()))
    r = await api.client.get("/v1/initiatives/Some.Ville/events", headers=admin)
    assert r.status_code == 422


async def test_partner_reads_only_its_initiatives(api: Api) -> None:
    await post_all(api, [metric("somerville", 1), metric("cambridge", 2)])
    partner = bearer(await api.token("partner", ("somerville",), recipient="maria"))
    mine = await api.client.get("/v1/initiatives/somerville/events", headers=partner)
    assert mine.status_code == 200
    assert [e["initiative"] for e in mine.json()["events"]] == ["somerville"]
    other = await api.client.get("/v1/initiatives/cambridge/events", headers=partner)
    assert other.status_code == 403
    assert "events" not in other.json()


async def test_system_token_cannot_read(api: Api) -> None:
    system = bearer(await api.token("system", ("somerville",)))
    r = await api.client.get("/v1/initiatives/somerville/events", headers=system)
    assert r.status_code == 403
