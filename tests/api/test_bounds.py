"""Bounds of new input over HTTP: numbers within 10^12, strict numbers, times 1900..2200."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, bearer

METRIC = {
    "kind": "metric",
    "initiative": "somerville",
    "topic": "bmi",
    "data": {"indicator": "Children at a healthy weight", "value": 71.5},
}
CLOUDEVENT = {
    "specversion": "1.0",
    "id": "crm-42",
    "source": "urn:example:crm",
    "type": "org.impactbus.meeting",
    "time": "2026-10-01T09:30:00Z",
    "subject": "steering",
    "initiative": "somerville",
    "data": {"kind": "meeting", "title": "Steering", "held_at": "2026-10-01T09:00:00Z"},
}


def metric(**data: object) -> dict[str, object]:
    return {**METRIC, "data": {**METRIC["data"], **data}}  # type: ignore[dict-item]


def cloudevent(**fields: object) -> dict[str, object]:
    data = fields.pop("data", {})
    return {**CLOUDEVENT, **fields, "data": {**CLOUDEVENT["data"], **data}}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (metric(value=1e308, baseline=-1e308, target=1e308), "data.value"),
        (metric(value=1.7e308, baseline=-1.7e308, target=0), "data.value"),
        (metric(value=1, baseline=-1e308, target=0), "data.baseline"),
        (metric(value=1, target=10**12 + 1), "data.target"),
        (metric(value=-(10**13)), "data.value"),
    ],
)
async def test_a_number_beyond_a_trillion_is_422_naming_the_bound(
    api: Api, backbone: str, body: object, field: str
) -> None:
    r = await api.client.post("/v1/events", json=body, headers=bearer(backbone))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"{field}: must be a number from minus one trillion to one trillion" in detail
    assert await api.count() == 0


async def test_numbers_at_the_bound_are_accepted(api: Api, backbone: str) -> None:
    body = metric(value=10**12, baseline=-(10**12), target=10**12)
    r = await api.client.post("/v1/events", json=body, headers=bearer(backbone))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("value", [True, False, "12"])
async def test_a_value_that_is_no_json_number_is_422(
    api: Api, backbone: str, value: object
) -> None:
    r = await api.client.post("/v1/events", json=metric(value=value), headers=bearer(backbone))
    assert r.status_code == 422, r.text
    assert "data.value: must be a number, not" in r.json()["detail"]
    assert await api.count() == 0


async def test_an_integer_value_is_a_number(api: Api, backbone: str) -> None:
    r = await api.client.post("/v1/events", json=metric(value=12), headers=bearer(backbone))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (cloudevent(time="9999-12-31T20:00:00-10:00"), "time"),
        (cloudevent(time="0001-01-01T00:30:00+14:00"), "time"),
        (cloudevent(data={"held_at": "9999-12-31T23:00:00-12:00"}), "data.held_at"),
        (cloudevent(data={"held_at": "1899-12-31T23:59:59Z"}), "data.held_at"),
        (
            cloudevent(data={"action_items": [{"task": "t", "owner": "o", "due": "9999-12-31"}]}),
            "data.action_items.0.due",
        ),
        ({**METRIC, "time": "2200-01-01T00:00:01Z"}, "time"),
    ],
)
async def test_a_time_outside_1900_to_2200_is_422_naming_the_range(
    api: Api, backbone: str, body: object, field: str
) -> None:
    r = await api.client.post("/v1/events", json=body, headers=bearer(backbone))
    assert r.status_code == 422, r.text
    assert f"{field}: must be between 1900-01-01 and 2200-01-01 (UTC)" in r.json()["detail"]
    assert await api.count() == 0


async def test_batch_reports_each_bound_broken(api: Api, backbone: str) -> None:
    batch = [metric(value=1), metric(value=1e308), metric(value=True)]
    r = await api.client.post("/v1/events:batch", json=batch, headers=bearer(backbone))
    results = r.json()["results"]
    assert [x["status"] for x in results] == [202, 422, 422]
    assert "one trillion" in str(results[1])
    assert "not true" in str(results[2])
    assert await api.count() == 1
