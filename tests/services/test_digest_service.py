"""The digest service on a real nats-server: one digest per period, crash-resume, races."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from schemas.events import new_event
from schemas.subjects import digest_subject
from services.bus import DELIVERIES, DIGESTS, Bus
from services.bus.acks import AckMux
from services.digest.service import DigestService
from services.directory.records import Directory
from services.pipeline.ingest import publish_events
from services.pipeline.router import Router

AT = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)  # 08:00 in New York


async def _setup(bus: Bus) -> None:
    d = await Directory.open(bus)
    await d.add_recipient(
        id="ana",
        email="ana@school.example",
        name="Ana",
        organisation="Healey School",
        timezone="America/New_York",
        digest="daily@08:00",
    )
    await d.subscribe("ana", "impact.somerville.>", "email", mode="digest")
    events = [
        new_event(
            "metric",
            "somerville",
            "bmi",
            {
                "indicator": "Children with obesity",
                "value": 17.0,
                "unit": "%",
                "baseline": 20.0,
                "target": 15.0,
                "direction": "decrease",
            },
        ),
        new_event(
            "milestone", "somerville", "market", {"title": "Market opens", "status": "reached"}
        ),
        new_event(
            "meeting",
            "somerville",
            "steering",
            {
                "title": "Steering committee",
                "held_at": "2026-11-18T18:00:00-05:00",
                "decisions": ["Extend the walking school bus"],
                "action_items": [
                    {"task": "Map the routes", "owner": "Healey School", "due": "2026-11-01"}
                ],
            },
        ),
    ]
    router = await Router.open(bus)
    await router.start()
    await publish_events(bus, events)
    sub = await bus.js.pull_subscribe_bind(durable="router", stream="EVENTS")
    await router.handle(await sub.fetch(10, timeout=5))
    await router.stop()
    await sub.unsubscribe()


async def _jobs(bus: Bus) -> list[dict[str, object]]:
    info = await bus.js.stream_info(DELIVERIES)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        out.append(json.loads((await bus.js.get_msg(DELIVERIES, seq)).data))
    return out


async def _waiting(bus: Bus, recipient: str) -> int:
    info = await bus.js.stream_info(DIGESTS, subjects_filter=digest_subject(recipient))
    return sum((info.state.subjects or {}).values())


async def test_a_tick_sends_one_digest_and_purges_the_items(bus: Bus) -> None:
    await _setup(bus)
    assert await _waiting(bus, "ana") == 3
    service = await DigestService.open(bus)
    result = await service.run("ana", AT)
    assert result.outcome == "sent"
    assert result.items == 3
    assert await _waiting(bus, "ana") == 0
    [job] = await _jobs(bus)
    rendered = job["rendered"]
    assert isinstance(rendered, dict)
    assert "Children with obesity" in rendered["text"]
    assert "60%" in rendered["text"]  # 20 -> 17 toward 15, decrease is good
    assert "Map the routes" in rendered["html"]
    # The same period again (a repeated tick): nothing more.
    again = await service.run("ana", AT.replace(minute=30))
    assert again.outcome == "done-already"
    assert len(await _jobs(bus)) == 1


async def test_new_items_wait_for_the_next_period(bus: Bus) -> None:
    await _setup(bus)
    service = await DigestService.open(bus)
    assert (await service.run("ana", AT)).outcome == "sent"
    await bus.js.publish(
        digest_subject("ana"),
        json.dumps(
            {
                "event": json.loads(
                    new_event("update", "somerville", "news", {"title": "Later"}).model_dump_json()
                ),
                "channel": "email",
            }
        ).encode(),
    )
    assert (await service.run("ana", AT.replace(hour=20))).outcome == "done-already"
    assert await _waiting(bus, "ana") == 1
    nxt = await service.run("ana", AT.replace(day=21))
    assert nxt.outcome == "sent"
    assert nxt.items == 1


async def test_a_run_killed_midway_resumes_without_a_second_digest(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _setup(bus)
    service = await DigestService.open(bus)
    real_write = DigestService._cas_publish

    async def crash(self: DigestService, rid: str, value: dict[str, object], rev: int) -> str:
        if value["status"] == "done":  # the done mark and the purge go out together
            raise RuntimeError("killed between queueing the digest and purging the items")
        return await real_write(self, rid, value, rev)

    monkeypatch.setattr(DigestService, "_cas_publish", crash)
    with pytest.raises(RuntimeError):
        await service.run("ana", AT)
    assert len(await _jobs(bus)) == 1  # queued before the "crash"
    # an item arrives while the run is dead: it must wait for the next digest
    await bus.js.publish(
        digest_subject("ana"),
        json.dumps(
            {
                "event": json.loads(
                    new_event(
                        "update", "somerville", "news", {"title": "Meanwhile"}
                    ).model_dump_json()
                ),
                "channel": "email",
            }
        ).encode(),
    )
    monkeypatch.setattr(DigestService, "_cas_publish", real_write)
    restarted = await DigestService.open(bus)
    result = await restarted.run("ana", AT)
    assert result.outcome == "done-already"  # it had been queued before the crash
    assert result.items == 3  # the same digest as before the crash...
    assert len(await _jobs(bus)) == 1  # ...which JetStream dropped as a duplicate
    assert await _waiting(bus, "ana") == 1  # "Meanwhile" waits for the next period


def _later_item(title: str) -> bytes:
    event = new_event("update", "somerville", "news", {"title": title})
    return json.dumps({"event": json.loads(event.model_dump_json()), "channel": "email"}).encode()


async def test_items_a_failed_purge_left_are_not_sent_again(
    bus: Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _setup(bus)
    service = await DigestService.open(bus)
    real_request = AckMux.request

    async def lost_purge(self: AckMux, subject: str, payload: bytes) -> str:
        # the purge reaches no stream: JetStream answers with an error
        return await real_request(self, subject.replace(DIGESTS, "NO_SUCH_STREAM"), payload)

    monkeypatch.setattr(AckMux, "request", lost_purge)
    first = await service.run("ana", AT)
    assert first.outcome == "sent"
    assert "could not purge the digest items of ana" in caplog.text
    assert await _waiting(bus, "ana") == 3  # still there...

    monkeypatch.setattr(AckMux, "request", real_request)
    await bus.js.publish(digest_subject("ana"), _later_item("Next day"))
    nxt = await service.run("ana", AT.replace(day=21))
    assert nxt.outcome == "sent"
    assert nxt.items == 1  # ...but not shown again
    assert await _waiting(bus, "ana") == 0  # and the next digest's purge took them away
    assert len(await _jobs(bus)) == 2


async def test_two_digest_processes_give_one_digest(bus: Bus, nats_server: object) -> None:
    await _setup(bus)
    other_bus = await Bus.connect(bus.nc.connected_url.geturl())  # a second process's view
    try:
        a = await DigestService.open(bus)
        b = await DigestService.open(other_bus)
        results = await asyncio.gather(a.run("ana", AT), b.run("ana", AT))
        assert sorted(r.outcome for r in results) in (
            ["busy", "sent"],
            ["done-already", "sent"],
            ["empty", "sent"],
        )
        assert len(await _jobs(bus)) == 1
    finally:
        await other_bus.close()


async def test_preview_changes_nothing(bus: Bus) -> None:
    await _setup(bus)
    service = await DigestService.open(bus)
    preview = await service.preview("ana", AT)
    assert preview.items == 3
    assert await _waiting(bus, "ana") == 3
    assert await _jobs(bus) == []


async def test_schedule_is_a_server_side_cron_in_the_recipients_zone(bus: Bus) -> None:
    service = await DigestService.open(bus)
    await (await Directory.open(bus)).add_recipient(
        id="rahim", email="r@ngo.example", timezone="Asia/Dhaka", digest="weekly@sun-09:30"
    )
    await service.start()
    try:
        msg = await bus.js.get_last_msg("SCHEDULES", "schedule.rahim")
        assert msg.headers is not None
        assert msg.headers["Nats-Schedule"] == "0 30 9 * * 0"
        assert msg.headers["Nats-Schedule-Time-Zone"] == "Asia/Dhaka"
        assert msg.headers["Nats-Schedule-Target"] == "digest-tick.rahim"
        # changing the time zone replaces the schedule
        await (await Directory.open(bus)).add_recipient(
            id="rahim", email="r@ngo.example", timezone="Europe/Berlin", digest="weekly@sun-09:30"
        )
        for _ in range(100):
            msg = await bus.js.get_last_msg("SCHEDULES", "schedule.rahim")
            if msg.headers and msg.headers["Nats-Schedule-Time-Zone"] == "Europe/Berlin":
                break
            await asyncio.sleep(0.02)
        assert msg.headers is not None
        assert msg.headers["Nats-Schedule-Time-Zone"] == "Europe/Berlin"
    finally:
        await service.stop()


def test_a_slack_digest_is_block_kit_with_its_fallback_and_no_email_render() -> None:
    from schemas.directory import Recipient
    from services.bus.itemstore import StoredMsg, digest_item
    from services.digest.slack import fallback_text

    reader = Recipient(id="ana", email="ana@ngo.example", slack_channel="#ana", name="Ana")
    event = new_event("update", "somerville", "news", {"title": "Hall <booked>"})
    raw = event.model_dump_json().encode()
    items = [
        StoredMsg(i + 1, "digest.ana", digest_item(raw, {"recipient": "ana", "channel": ch}))
        for i, ch in enumerate(("email", "slack"))
    ]
    result = DigestService(None, None, None).compose(  # type: ignore[arg-type]
        reader, items, {}, AT, "2026-11-20"
    )
    email, slack = result.deliveries
    assert (email.target.channel, slack.target.channel) == ("email", "slack")
    assert email.rendered is not None
    assert slack.rendered is not None
    assert "Hall &lt;booked&gt;" in (email.rendered.html or "")
    assert slack.rendered.html is None
    assert slack.rendered.blocks
    assert result.view is not None
    assert slack.rendered.text == fallback_text(result.view)
    assert slack.rendered.subject == email.rendered.subject
