"""Dead letters: list, show, replay and purge what the ``DEAD`` stream holds.

Two kinds of dead letter live on ``dead.<reason>.<initiative>``:

* a **delivery** that failed (written by :mod:`services.pipeline.deliver`): the reason
  (``rejected``, ``gone``, ``exhausted``...), the error, the attempts, the channel and the
  job as queued.
  It can be *replayed*: the job goes back on ``deliver.<channel>.<initiative>`` with the
  same job id (so its ``sent`` marker, webhook-id and email Message-ID are the same) under
  the ``Nats-Msg-Id`` ``<job id>:replay:<dead seq>`` (the original id would be dropped by
  JetStream's duplicate window), and the dead letter is deleted.
* an **invalid** message (reason ``invalid``, written by the router or a worker): the
  error and the original payload. It cannot be replayed: the publisher must fix it and
  publish again.
* a message its consumer **failed** to handle (reason ``failed``, or ``digest`` for a
  digest tick, written by :mod:`services.bus.failures`): the error, the consumer, the
  attempts and the original payload (a failed job, with its job: replayable).

A payload too large for a dead letter is cut: ``payload_truncated`` is set, with the
original's size (``payload_bytes``) and its sha256 (``payload_sha256``).

A replay is refused while the recipient's channel is disabled: enable it first
(:func:`enable_channel`, ``impactbus recipients enable``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.delivery import Delivery
from schemas.directory import Recipient
from schemas.errors import BusUnavailableError, ConflictError, InvalidInputError, NotFoundError
from schemas.events import describe
from schemas.subjects import DEAD_ROOT, delivery_subject, log_subject, validate_token
from schemas.targets import CHANNELS, Channel
from services.bus import DEAD, DELIVERIES, DELIVERY_LOG, KV_RECIPIENTS, Bus, map_nats_errors
from services.bus.kv import open_kv
from services.bus.streams import read_subject
from services.directory.records import Directory


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as read from the ``DEAD`` stream."""

    seq: int
    subject: str
    reason: str
    initiative: str
    error: str
    failed_at: str
    channel: str | None = None
    attempts: int | None = None
    recipient: str | None = None
    target: str | None = None
    job_id: str | None = None
    event_id: str | None = None
    original_subject: str | None = None
    job: dict[str, Any] | None = None
    payload: str | None = None
    payload_truncated: bool | None = None
    payload_bytes: int | None = None
    payload_sha256: str | None = None
    consumer: str | None = None

    @property
    def note(self) -> str:
        """What a listing adds to the error: a cut payload and its original size."""
        if not self.payload_truncated:
            return ""
        size = f"{self.payload_bytes:,} bytes" if self.payload_bytes is not None else "?"
        return f" (payload truncated: {size}, sha256 {(self.payload_sha256 or '?')[:12]}...)"

    @property
    def replayable(self) -> bool:
        """Whether this is a failed delivery (not an invalid message)."""
        return self.job is not None and self.channel in CHANNELS

    def as_json(self) -> dict[str, Any]:
        """Everything, for ``--json`` and ``dead show``."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ReplayReport:
    """What :func:`replay_all` did."""

    replayed: list[DeadLetter] = field(default_factory=list)
    skipped: list[tuple[DeadLetter, str]] = field(default_factory=list)


def parse_dead_letter(seq: int, subject: str, data: bytes) -> DeadLetter:
    """A dead letter from its stream sequence, subject and JSON body (pure).

    Tolerates bodies it does not understand: they show as reason ``unknown`` with the raw
    body as payload, and are not replayable.
    """
    parts = subject.split(".")
    reason = parts[1] if len(parts) == 3 else "unknown"
    initiative = parts[2] if len(parts) == 3 else "unknown"
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return DeadLetter(
            seq, subject, reason, initiative, "unreadable dead letter", "", payload=_text(data)
        )
    job = body.get("job")
    return DeadLetter(
        seq=seq,
        subject=subject,
        reason=str(body.get("reason") or reason),
        initiative=initiative,
        error=str(body.get("error") or ""),
        failed_at=str(body.get("failed_at") or ""),
        channel=_str(body.get("channel")),
        attempts=_int(body.get("attempts")),
        recipient=_str(body.get("recipient") or (job or {}).get("recipient")),
        target=_str(body.get("target")),
        job_id=_str(body.get("job_id")),
        event_id=_str(body.get("event_id") or ((job or {}).get("event") or {}).get("id")),
        original_subject=_str(body.get("subject")),
        job=job if isinstance(job, dict) else None,
        payload=_str(body.get("payload")),
        payload_truncated=True if body.get("payload_truncated") is True else None,
        payload_bytes=_int(body.get("payload_bytes")),
        payload_sha256=_str(body.get("payload_sha256")),
        consumer=_str(body.get("consumer")),
    )


def dead_filter(reason: str | None = None, initiative: str | None = None) -> str:
    """The ``dead.<reason>.<initiative>`` filter, ``*`` for what is not given.

    Raises:
        InvalidSubjectError: a bad reason or initiative token.
    """
    r = validate_token(reason, "reason") if reason else "*"
    i = validate_token(initiative, "initiative") if initiative else "*"
    return f"{DEAD_ROOT}.{r}.{i}"


async def list_dead(
    bus: Bus,
    *,
    reason: str | None = None,
    initiative: str | None = None,
    limit: int | None = None,
) -> tuple[list[DeadLetter], int]:
    """Dead letters matching the filters, oldest first.

    Args:
        bus: the hub's bus.
        reason: only this reason (``rejected``, ``exhausted``, ``invalid``...).
        initiative: only this initiative.
        limit: keep only the newest ``limit``.

    Returns:
        The dead letters (at most ``limit``) and how many matched in all.

    Raises:
        InvalidInputError: a bad filter or limit.
    """
    if limit is not None and limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    msgs = await read_subject(bus, DEAD, dead_filter(reason, initiative))
    letters = [parse_dead_letter(seq, subject, data) for seq, subject, data in msgs]
    total = len(letters)
    return (letters[-limit:] if limit else letters), total


async def get_dead(bus: Bus, seq: int) -> DeadLetter:
    """The dead letter with stream sequence ``seq``.

    Raises:
        NotFoundError: there is none (never was, replayed, purged or aged out).
    """
    if seq < 1:
        raise InvalidInputError(f"dead letter number {seq}: use the number `dead list` shows")
    try:
        with map_nats_errors():
            msg = await bus.js.get_msg(DEAD, seq)
    except NotFoundError:
        raise NotFoundError(f"no dead letter {seq} (see `impactbus dead list`)") from None
    assert msg.subject is not None
    return parse_dead_letter(seq, msg.subject, msg.data or b"")


async def replay(bus: Bus, seq: int) -> DeadLetter:
    """Queue a dead delivery again and delete the dead letter.

    Raises:
        NotFoundError: no dead letter ``seq``.
        InvalidInputError: it is an invalid message, its job is unreadable, or the
            recipient's channel is disabled.
    """
    letter = await get_dead(bus, seq)
    await _replay(bus, letter)
    return letter


async def replay_all(
    bus: Bus, *, reason: str | None = None, initiative: str | None = None
) -> ReplayReport:
    """Replay every replayable dead letter matching the filters; report the others."""
    report = ReplayReport()
    letters, _ = await list_dead(bus, reason=reason, initiative=initiative)
    for letter in letters:
        try:
            await _replay(bus, letter)
        except InvalidInputError as exc:
            report.skipped.append((letter, str(exc)))
        else:
            report.replayed.append(letter)
    return report


async def _replay(bus: Bus, letter: DeadLetter) -> None:
    if not letter.replayable or letter.job is None:
        raise InvalidInputError(
            f"dead letter {letter.seq} is an invalid message ({letter.error[:120]}): it cannot "
            "be replayed; fix the publisher and publish it again"
        )
    try:
        delivery = Delivery.model_validate(letter.job)
    except ValidationError as exc:
        raise InvalidInputError(
            f"dead letter {letter.seq} holds an unreadable job: {describe(exc)}"
        ) from None
    channel = delivery.target.channel
    recipient = await _recipient(bus, delivery.recipient)
    if recipient is not None and channel in recipient.disabled_channels:
        raise InvalidInputError(
            f"dead letter {letter.seq}: {recipient.id}'s {channel} target is disabled; enable "
            f"it first: impactbus recipients enable {recipient.id} {channel}"
        )
    record = {
        "status": "queued",
        "at": datetime.now(UTC).isoformat(),
        "channel": channel,
        "recipient": delivery.recipient,
        "target": delivery.target.key,
        "job_id": delivery.job_id,
        "attempt": 0,
        "event": delivery.event.id,
        "replayed_from": letter.seq,
    }
    # "queued" is stored before the job is published: a worker can send the job and log
    # "sent" within milliseconds, and a "queued" landing after that would read as the
    # delivery's last status.
    subject = log_subject(delivery.event.id)
    await bus.js.publish(subject, json.dumps(record).encode(), stream=DELIVERY_LOG)
    try:
        await bus.js.publish(
            delivery_subject(channel, delivery.event.initiative),
            json.dumps(letter.job).encode(),
            headers={
                "Nats-Msg-Id": f"{delivery.job_id}:replay:{letter.seq}",
                "Nats-Expected-Stream": DELIVERIES,
            },
        )
    except BaseException as exc:
        # not queued after all: the log goes back to dead (the dead letter is kept)
        error = f"replay failed: {type(exc).__name__}: {exc}"[:300]
        undo = {
            **record,
            "status": "dead",
            "at": datetime.now(UTC).isoformat(),
            "reason": letter.reason,
            "error": error,
        }
        with contextlib.suppress(Exception):
            await bus.nc.publish(subject, json.dumps(undo).encode())
        raise
    # NotFound: replayed by someone else at the same time; the msg id made it one job.
    with contextlib.suppress(NotFoundError), map_nats_errors():
        await bus.js.delete_msg(DEAD, letter.seq)


async def purge(bus: Bus, *, reason: str | None = None, initiative: str | None = None) -> int:
    """Delete the dead letters matching the filters; return how many.

    Dead letters that arrive while this runs are kept: only those up to the last one
    counted are purged.
    """
    subject = dead_filter(reason, initiative)
    msgs = await read_subject(bus, DEAD, subject)
    if not msgs:
        return 0
    last = msgs[-1][0]
    # purge removes the subject's messages *below* seq: last + 1 keeps later ones
    await bus.js.purge_stream(DEAD, subject=subject, seq=last + 1)
    return len(msgs)


async def enable_channel(bus: Bus, recipient_id: str, channel: str) -> tuple[Recipient, bool]:
    """Turn a recipient's disabled channel back on (after the target was fixed).

    Compare-and-set, so a concurrent change of the recipient is not overwritten.

    Returns:
        The recipient as now stored, and whether the channel was disabled before.

    Raises:
        NotFoundError: no such recipient.
        InvalidInputError: an unknown channel.
    """
    if channel not in CHANNELS:
        raise InvalidInputError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
    validate_token(recipient_id, "recipient id")
    kv = await open_kv(bus, KV_RECIPIENTS)
    for _ in range(10):
        try:
            entry = await kv.get(recipient_id)
        except NotFoundError:
            raise NotFoundError(f"no recipient {recipient_id!r}") from None
        assert entry.value is not None
        recipient = Recipient.model_validate_json(entry.value)
        if channel not in recipient.disabled_channels:
            return recipient, False
        kept: tuple[Channel, ...] = tuple(c for c in recipient.disabled_channels if c != channel)
        updated = recipient.model_copy(update={"disabled_channels": kept})
        try:
            await kv.update(recipient_id, updated.model_dump_json().encode(), last=entry.revision)
        except ConflictError:
            continue
        return updated, True
    raise InvalidInputError(f"{recipient_id!r} keeps changing: try again")


async def _recipient(bus: Bus, recipient_id: str) -> Recipient | None:
    try:
        return await (await Directory.open(bus)).get_recipient(recipient_id)
    except (NotFoundError, InvalidInputError, BusUnavailableError):
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
