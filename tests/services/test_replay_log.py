"""A replayed dead letter's log: "queued" is in the log before the job can be sent.

The race this pins down: a worker can take a replayed job, send it and log "sent" within
milliseconds. If the replay logged "queued" after publishing the job, that "queued" could
land last and the log would show the delivered job as waiting.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.delivery import Delivery
from schemas.events import new_event
from schemas.subjects import dead_subject, delivery_subject, log_subject
from schemas.targets import EmailTarget
from services.bus import DELIVERIES, Bus
from services.pipeline.deadletters import list_dead, replay
from services.pipeline.deliverylog import event_log


async def test_a_job_sent_the_moment_it_is_replayed_shows_as_sent(bus: Bus) -> None:
    event = new_event("update", "somerville", "news", {"title": "Hi", "body": "b"}, event_id="e1")
    delivery = Delivery(
        event=event,
        recipient="ana",
        target=EmailTarget(address="ana@school.example"),
        timezone="UTC",
        locale="en",
    )
    job = json.loads(delivery.model_dump_json())
    letter = {
        "reason": "rejected",
        "error": "550 no such mailbox",
        "attempts": 1,
        "channel": "email",
        "job_id": delivery.job_id,
        "recipient": "ana",
        "target": delivery.target.key,
        "event_id": "e1",
        "failed_at": datetime.now(UTC).isoformat(),
        "subject": delivery_subject("email", "somerville"),
        "job": job,
    }
    await bus.js.publish(dead_subject("rejected", "somerville"), json.dumps(letter).encode())

    # a "worker" that logs "sent" the instant the replayed job reaches DELIVERIES
    async def sent_at_once(msg: object) -> None:
        record = {
            "status": "sent",
            "at": datetime.now(UTC).isoformat(),
            "channel": "email",
            "recipient": "ana",
            "target": delivery.target.key,
            "job_id": delivery.job_id,
            "attempt": 1,
            "event": "e1",
        }
        await bus.nc.publish(log_subject("e1"), json.dumps(record).encode())

    sub = await bus.nc.subscribe(delivery_subject("email", "somerville"), cb=sent_at_once)
    [dead], _ = await list_dead(bus)
    await replay(bus, dead.seq)
    await bus.nc.flush()
    await sub.unsubscribe()

    info = await bus.js.stream_info(DELIVERIES)
    assert info.state.messages == 1
    log = await event_log(bus, "e1")
    [target] = log.targets
    assert [h.split()[1] for h in target.history] == ["queued", "sent"]
    assert target.status == "sent"
    assert await list_dead(bus) == ([], 0)
