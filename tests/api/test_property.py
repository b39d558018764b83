"""Property-based: valid events of every kind come out of EVENTS exactly as they went in;
invalid ones are refused with 422 and publish nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.bounds import DATE_MAX, DATE_MIN, NUMBER_LIMIT
from schemas.events import DATA_ADAPTER, EVENT_ADAPTER
from services.bus import EVENTS
from tests.api.conftest import Api, ApiFactory, bearer

token = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)
line = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029"),
    min_size=1,
    max_size=200,
)
short_line = line.filter(lambda s: len(s) <= 40)
text = st.text(
    st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from(["\n", "\t"]), max_size=500
)
number = st.floats(-NUMBER_LIMIT, NUMBER_LIMIT)  # the bounds of new input
day = st.dates(DATE_MIN, DATE_MAX).map(lambda d: d.isoformat())
moment = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat())


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def data_of(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]]
    optional_fields: dict[str, st.SearchStrategy[Any]]
    if kind == "metric":
        fields = {"indicator": line, "value": number}
        optional_fields = {
            "unit": short_line,
            "period": short_line,
            "baseline": number,
            "target": number,
            "note": text,
            "direction": st.sampled_from(["increase", "decrease"]),
        }
    elif kind == "milestone":
        fields = {
            "title": line,
            "status": st.sampled_from(["planned", "reached", "missed", "at-risk"]),
        }
        optional_fields = {"due": day, "note": text}
    elif kind == "meeting":
        fields = {"title": line, "held_at": moment}
        optional_fields = {
            "attendees": st.lists(line, max_size=5),
            "summary": text,
            "decisions": st.lists(text, max_size=3),
            "action_items": st.lists(
                st.fixed_dictionaries({"task": line, "owner": line}, optional={"due": day}),
                max_size=3,
            ),
        }
    else:
        fields = {"title": line}
        optional_fields = {"body": text, "url": token.map(lambda t: f"https://{t}.example.org/{t}")}
    return st.fixed_dictionaries(fields, optional=optional_fields)


short_event = st.sampled_from(["metric", "milestone", "meeting", "update"]).flatmap(
    lambda kind: st.fixed_dictionaries(
        {"kind": st.just(kind), "initiative": token, "topic": token, "data": data_of(kind)}
    )
)

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(event=short_event)
async def test_valid_events_come_out_as_they_went_in(
    api_factory: ApiFactory, event: dict[str, Any]
) -> None:
    api, admin = await shared_api(api_factory)
    r = await api.client.post("/v1/events", json=event, headers=bearer(admin))
    assert r.status_code == 202, r.text
    msg = await api.bus.js.get_msg(EVENTS, r.json()["sequence"])
    stored = EVENT_ADAPTER.validate_json(msg.data)
    assert msg.subject == f"impact.{event['initiative']}.{event['kind']}.{event['topic']}"
    assert (stored.kind, stored.initiative, stored.topic) == (
        event["kind"],
        event["initiative"],
        event["topic"],
    )
    assert stored.id == r.json()["id"]
    # equal to what went in, as the model reads it (floats, dates and times round-trip exactly)
    assert stored.data == DATA_ADAPTER.validate_python({**event["data"], "kind": event["kind"]})
    assert stored.source == f"urn:impactbus:token:{admin.split('_')[1]}"


def breakages() -> st.SearchStrategy[dict[str, Any]]:
    """Valid events, then broken in one way."""
    bad_token = st.text(min_size=1, max_size=80).filter(
        lambda s: (
            not (len(s) <= 64 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in s))
        )
    )
    control = st.sampled_from([chr(c) for c in range(0x20) if c not in (0x09, 0x0A)] + ["\x7f"])
    return st.one_of(
        st.tuples(
            short_event,
            st.text(max_size=20).filter(
                lambda k: k not in ("metric", "milestone", "meeting", "update")
            ),
        ).map(lambda p: {**p[0], "kind": p[1]}),
        st.tuples(short_event, bad_token).map(lambda p: {**p[0], "initiative": p[1]}),
        st.tuples(short_event, bad_token).map(lambda p: {**p[0], "topic": p[1]}),
        st.tuples(short_event, control).map(
            lambda p: {**p[0], "data": {**p[0]["data"], _title(p[0]): f"a{p[1]}b"}}
        ),
        st.tuples(short_event, st.integers(201, 2000)).map(
            lambda p: {**p[0], "data": {**p[0]["data"], _title(p[0]): "x" * p[1]}}
        ),
        st.tuples(short_event, st.text(min_size=1, max_size=10))
        .filter(lambda p: p[1] not in ("kind", "initiative", "topic", "data", "time"))
        .map(lambda p: {**p[0], p[1]: 1}),
        short_event.map(lambda e: {**e, "data": {**e["data"], "unexpected_field": True}}),
        short_event.map(
            lambda e: {
                "specversion": "0.3",
                "id": "x",
                "source": "s",
                "type": f"org.impactbus.{e['kind']}",
                "time": "2026-10-01T00:00:00Z",
                "subject": e["topic"],
                "initiative": e["initiative"],
                "data": {**e["data"], "kind": e["kind"]},
            }
        ),
    )


def _title(event: dict[str, Any]) -> str:
    return "indicator" if event["kind"] == "metric" else "title"


@PROPERTY
@given(event=breakages())
async def test_invalid_events_are_422_and_publish_nothing(
    api_factory: ApiFactory, event: dict[str, Any]
) -> None:
    api, admin = await shared_api(api_factory)
    before = await api.count()
    r = await api.client.post("/v1/events", json=event, headers=bearer(admin))
    assert r.status_code == 422, (event, r.text)
    assert r.json()["detail"]
    assert await api.count() == before


_current: list[tuple[ApiFactory, Api, str]] = []


async def shared_api(api_factory: ApiFactory) -> tuple[Api, str]:
    """One API (and admin token) for all examples of one test: hypothesis runs many
    examples per fixture instance. Holding the factory keeps its identity unambiguous."""
    if not _current or _current[0][0] is not api_factory:
        api = await api_factory(rate_per_s=0)
        _current[:] = [(api_factory, api, await api.token("admin", ()))]
    return _current[0][1], _current[0][2]
