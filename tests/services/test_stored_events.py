"""Deliveries and digests of events stored under older rules, on real parts.

A delivery job queued before today's bounds (a 1e308 metric, a meeting held at the end of
the calendar, a reader in Kiritimati) is sent over SMTP, not dead-lettered; a digest of
such items previews. Both read the stored JSON leniently and render an en dash for what they
cannot show.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.bounds import UNSHOWN
from schemas.subjects import delivery_subject, digest_subject
from schemas.targets import EmailTarget
from services.bus import DIGESTS, Bus
from services.bus.itemstore import digest_item
from services.digest.service import DigestService
from services.directory.records import Directory
from tests.fakes.smtp import SmtpSink
from tests.oldrule import old_event, old_events
from tests.services.test_deliver import Rig, email_notifier


@pytest.fixture
async def rig(bus: Bus) -> AsyncIterator[Rig]:
    r = Rig(bus)
    yield r
    await r.close()


def old_job(raw: bytes, n: int, timezone: str) -> dict[str, Any]:
    # one reader per zone: a job's id (and sent marker) is per event and target
    local = timezone.replace("/", "-").replace("+", "plus").lower()
    target = EmailTarget(address=f"reader-{local}@example.org", name="Ann")
    return {
        "event": json.loads(raw),
        "recipient": "ann",
        "target": target.model_dump(mode="json"),
        "timezone": timezone,
        "subscription": f"s{n}",
    }


async def test_old_rule_jobs_are_sent_over_smtp_not_dead_lettered(
    rig: Rig, smtp_sink: SmtpSink
) -> None:
    raws = [*old_events(), old_event("update", {"title": "Invoice \u202egpj.exe"}, n=9)]
    jobs = [
        old_job(raw, i, tz)
        for i, raw in enumerate(raws)
        for tz in ("Pacific/Kiritimati", "Etc/GMT+12")
    ]
    worker = await rig.worker(email_notifier(smtp_sink))
    for i, job in enumerate(jobs):
        await rig.bus.js.publish(
            delivery_subject("email", "somerville"),
            json.dumps(job).encode(),
            headers={"Nats-Msg-Id": f"old-job-{i}"},
        )
    messages = await smtp_sink.wait_for_async(len(jobs))
    await rig.quiet("email")
    assert await rig.dead() == []
    assert worker.counts["sent"] == len(jobs)
    subjects = [str(m["Subject"]) for m in messages]
    assert any("Invoice gpj.exe" in s for s in subjects)
    assert not any("\u202e" in s for s in subjects)
    texts = [m.get_body(("plain",)).get_content() for m in messages]  # type: ignore[union-attr]
    assert any(UNSHOWN in t for t in texts)


async def test_digest_of_old_rule_items_previews(bus: Bus) -> None:
    directory = await Directory.open(bus)
    await directory.add_recipient(
        id="ana", name="Ana", email="ana@example.org", timezone="Pacific/Kiritimati"
    )
    await directory.subscribe("ana", "impact.somerville.>", "email", mode="digest")
    for raw in old_events():
        item = digest_item(raw, {"recipient": "ana", "channel": "email"})
        await bus.js.publish(digest_subject("ana"), item, stream=DIGESTS)
    service = await DigestService.open(bus)
    result = await service.preview("ana")
    assert result.outcome == "sent"
    assert result.items == len(old_events())
    [delivery] = result.deliveries
    assert delivery.rendered is not None
    assert UNSHOWN in delivery.rendered.text
    assert "Book the hall" in delivery.rendered.text
