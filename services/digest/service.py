"""Digests: the server schedules, this service renders and hands them to delivery.

* Each recipient gets one NATS message schedule on ``schedule.<recipient>`` (cron in their
  time zone, see :mod:`services.digest.schedule`); the server publishes ``digest-tick.<recipient>``
  at each run. No in-process timer: nothing to lose in a restart, and several digest
  processes share one durable consumer, so each tick is handled once. The schedule is
  (re)published whenever a recipient changes; a newer schedule replaces the older one.
* On a tick: claim the period in KV ``digest_state`` (compare-and-set on the revision),
  read the recipient's items up to the last sequence, render once, publish one delivery
  per channel to DELIVERIES with a deterministic ``Nats-Msg-Id``, purge the items up to and
  including that sequence, then mark the period done with the metric values shown.

Exactly one digest per recipient per period: a repeated tick (DST fall-back, a redelivery)
finds the period done; a run killed midway is resumed from the claimed state with the
same last sequence, so it renders the same digest under the same job id, which JetStream's
duplicate window drops if it was already queued.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_settings import BaseSettings, SettingsConfigDict
from ulid import ULID

from notifiers.base import LinkMaker, no_links
from schemas.delivery import Delivery, Rendered
from schemas.directory import Recipient, version_of
from schemas.errors import InvalidInputError, NotFoundError
from schemas.events import EVENT_ADAPTER, Event
from schemas.subjects import dead_subject, delivery_subject, digest_subject, tick_subject
from schemas.targets import CHANNELS, Channel
from services.bus import DIGESTS, KV_DIGEST_STATE, KV_RECIPIENTS, SCHEDULES, Bus
from services.bus.acks import ack_mux
from services.bus.apisubjects import stream_purge
from services.bus.failures import DEFAULT_POLICY, Failures, RetryPolicy
from services.bus.itemstore import StoredMsg, read_subject, split_digest_item
from services.bus.kv import Kv, is_refused, open_kv
from services.bus.markers import KeyLookup
from services.bus.streams import Msg
from services.bus.watch import KvMirror
from services.config import Runtime
from services.digest.schedule import period_key, schedule_headers
from services.digest.slack import digest_blocks, fallback_text
from services.digest.view import (
    DigestView,
    build_digest,
    digest_subject_line,
    render_digest_email,
)
from services.directory.records import Directory

log = logging.getLogger("impactbus.digest")
EmailRenderer = Callable[[DigestView, str | None], tuple[str, str, str]]
"""(view, preferences link) -> (subject, text, HTML) of a digest email."""
Outcome = Literal["sent", "empty", "done-already", "busy", "no-recipient"]


class _Item(BaseModel):
    """A digest item as the router queues it (extra routing fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    event: Event
    channel: Channel = "email"


_ITEM: Final = TypeAdapter(_Item)
ACK_WAIT_S: Final = 5.0
"""How long a digest run waits for JetStream to acknowledge what it wrote."""
EVENT_CACHE: Final = 4096
"""Parsed events kept for reuse between recipients (a few KiB each)."""


def read_item(data: bytes) -> tuple[Event, Channel]:
    """The event and channel of one digest item.

    An event routed to many recipients is stored once per recipient with the same event
    JSON, so it is parsed once (:func:`_event`, keyed by those bytes) and shared: events
    are frozen. Items laid out otherwise are validated whole.

    Raises:
        ValidationError: the item or its event is invalid.
        ValueError: its channel is not one of ours.
    """
    try:
        raw, fields = split_digest_item(data)
    except ValueError:
        item = _ITEM.validate_json(data)
        return item.event, item.channel
    channel = fields.get("channel", "email")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return _event(raw), channel


@lru_cache(maxsize=EVENT_CACHE)
def _event(raw: bytes) -> Event:
    return EVENT_ADAPTER.validate_json(raw)


class DigestSettings(BaseSettings):
    """``IMPACTBUS_DIGEST_*``."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_DIGEST_", env_file=".env", extra="ignore"
    )

    send_empty: bool = Field(False, description="send a digest when nothing is new")
    stale_days: int = Field(30, ge=1, description="flag a metric with no update for N days")


@dataclass
class DigestResult:
    """What one run did."""

    outcome: Outcome
    period: str
    items: int = 0
    channels: list[str] = field(default_factory=list)
    view: DigestView | None = None
    deliveries: list[Delivery] = field(default_factory=list)


class DigestService:
    """Schedules, runs and previews digests."""

    def __init__(
        self,
        bus: Bus,
        recipients: Kv,
        state: Kv,
        *,
        links: LinkMaker = no_links,
        settings: DigestSettings | None = None,
        render_email: EmailRenderer = render_digest_email,
    ) -> None:
        """A digest service over ``recipients`` and ``state``.

        Args:
            bus: the hub's bus.
            recipients: the recipients bucket (followed).
            state: the ``digest_state`` bucket.
            links: builds the preferences link of each digest.
            settings: ``IMPACTBUS_DIGEST_*``.
            render_email: renders a digest email (subject, text, HTML) from its view and
                preferences link.
        """
        self.bus = bus
        self.render_email = render_email
        self.state = state
        self.links = links
        self.settings = settings or DigestSettings()
        self.recipients = KvMirror(recipients, Recipient.model_validate_json, self._on_recipient)
        self._pending_schedules: list[Recipient] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._lookup: KeyLookup | None = None
        self.counts: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        bus: Bus,
        *,
        links: LinkMaker = no_links,
        settings: DigestSettings | None = None,
        render_email: EmailRenderer = render_digest_email,
    ) -> DigestService:
        """A service over the hub's buckets (call :meth:`start` to follow recipients)."""
        return cls(
            bus,
            await open_kv(bus, KV_RECIPIENTS),
            await open_kv(bus, KV_DIGEST_STATE),
            links=links,
            settings=settings,
            render_email=render_email,
        )

    # ----------------------------------------------------------------- schedules

    async def start(self) -> None:
        """Load recipients, (re)publish every schedule, then follow changes."""
        await self.recipients.start()
        await self.flush_schedules()

    async def stop(self) -> None:
        """Stop following recipients."""
        await self.recipients.stop()
        if self._lookup is not None:
            await self._lookup.close()
            self._lookup = None

    def _on_recipient(self, key: str, old: Recipient | None, new: Recipient | None) -> None:
        if new is None:
            self._background(unschedule(self.bus, key))
        elif old is None or (old.digest, old.timezone) != (new.digest, new.timezone):
            self._pending_schedules.append(new)
            if self.recipients.ready.is_set():
                self._background(self.flush_schedules())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush_schedules(self) -> None:
        """Publish the schedules of recipients that are new or changed."""
        todo, self._pending_schedules = self._pending_schedules, []
        for recipient in todo:
            await schedule(self.bus, recipient)

    # ---------------------------------------------------------------------- runs

    async def handle_tick(self, msg: Msg) -> None:
        """Run the digest a tick asks for, then ack the tick.

        A tick whose run raises is settled by the consumer loop with :meth:`failures`:
        retried with backoff if the failure is transient, else dead-lettered; the next
        tick of the schedule runs either way, and other recipients' ticks are not held.
        """
        recipient_id = msg.subject.split(".", 1)[1]
        at = msg.metadata.timestamp or datetime.now(UTC)
        try:
            result = await self.run(recipient_id, at)
        except NotFoundError:
            result = DigestResult("no-recipient", "")
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome == "busy":
            await msg.nak(delay=5)
            return
        await msg.ack()

    def failures(self, policy: RetryPolicy = DEFAULT_POLICY) -> Failures:
        """How the consumer loop settles a tick whose digest run raised.

        Its dead letter is ``dead.digest.digest`` (digest deliveries' initiative is
        ``digest`` too), with the recipient and the error.
        """

        def letter(msg: Msg, exc: BaseException) -> tuple[str, dict[str, Any]]:
            recipient = msg.subject.split(".", 1)[-1]
            return dead_subject("digest", "digest"), {"reason": "digest", "recipient": recipient}

        return Failures(self.bus.nc, "digest", policy, dead_letter=letter)

    async def _recipient(self, recipient_id: str) -> Recipient:
        r = self.recipients.get(recipient_id)
        if r is not None:
            return r
        # not mirrored (yet): the CLI's preview/send-now, or a recipient added a moment ago
        return await (await Directory.open(self.bus)).get_recipient(recipient_id)

    async def run(self, recipient_id: str, at: datetime, *, manual: bool = False) -> DigestResult:
        """Run one recipient's digest for the period of ``at`` (or now, ``manual``).

        Raises:
            NotFoundError: no such recipient.
        """
        recipient = await self._recipient(recipient_id)
        period = (
            f"manual-{ULID()}" if manual else period_key(recipient.digest, recipient.timezone, at)
        )
        state, revision = await self._state(recipient.id)
        if state.get("period") == period and state.get("status") == "done":
            return DigestResult("done-already", period)
        subject = digest_subject(recipient.id)
        if state.get("period") == period and state.get("status") == "sending":
            # resume the interrupted run as it was: the same items, the same job ids
            after, through = _after(state), int(state["through_seq"])
            items = await read_subject(
                self.bus, DIGESTS, subject, after_seq=after, up_to_seq=through
            )
        else:
            after = _after(state)
            items = await read_subject(self.bus, DIGESTS, subject, after_seq=after)
            if not items and not self.settings.send_empty:
                return DigestResult("empty", period)
            through = items[-1].seq if items else after
            claimed = {
                **state,
                "period": period,
                "status": "sending",
                "after_seq": after,
                "through_seq": through,
            }
            new_revision = await self._cas(recipient.id, claimed, revision)
            if new_revision is None:
                return DigestResult("busy", period)
            state, revision = claimed, new_revision
        result = self.compose(recipient, items, state.get("previous", {}), at, period)
        mux = ack_mux(self.bus.nc)
        tokens = [
            await mux.publish(
                delivery_subject(d.target.channel, "digest"),
                d.__pydantic_serializer__.to_json(d),  # model_dump_json's bytes, not re-encoded
                {"Nats-Msg-Id": d.job_id},
            )
            for d in result.deliveries
        ]
        queued_before = bool(tokens)
        for outcome in await mux.gather(tokens, ACK_WAIT_S):
            if isinstance(outcome, BaseException):
                raise outcome  # not queued: the tick is retried, the same job ids dedupe
            queued_before = queued_before and outcome.duplicate
        previous = result.view.next_values if result.view else state.get("previous", {})
        done = {
            "period": period,
            "status": "done",
            "through_seq": through,
            "previous": dict(previous),
            "sent_at": datetime.now(UTC).isoformat(),
        }
        # The purge and the "done" mark go out together. Reads start after the last
        # digest's through_seq, so items a failed purge leaves behind are never sent again;
        # the next digest's purge takes them away.
        tokens = [await self._cas_publish(recipient.id, done, revision)]
        if items:
            purge = {"filter": subject, "seq": through + 1}
            tokens.append(await mux.request(stream_purge(DIGESTS), json.dumps(purge).encode()))
        outcomes = await mux.answers(tokens, ACK_WAIT_S)
        if len(outcomes) > 1 and isinstance(outcomes[1], BaseException):
            log.warning(
                "could not purge the digest items of %s up to %d (%s); the next digest will",
                recipient.id,
                through,
                outcomes[1],
            )
        marked = outcomes[0]
        if isinstance(marked, BaseException) and not is_refused(marked):
            raise marked  # not known to be marked: the retried tick sees what it is
        # A resumed run whose digest was already queued (by the run that was killed, or by
        # one still going in another process) finishes its work but did not send it.
        if queued_before:
            result.outcome = "done-already"
        else:
            result.outcome = "sent" if result.deliveries else "empty"
        return result

    def compose(
        self,
        recipient: Recipient,
        items: list[StoredMsg],
        previous: dict[str, float],
        at: datetime,
        period: str,
    ) -> DigestResult:
        """Render the digest of ``items`` (no I/O): one delivery per channel asked for."""
        events: list[Event] = []
        channels: list[Channel] = []
        skipped: list[tuple[int, str]] = []
        for item in items:
            try:
                event, channel = read_item(item.data)
            except Exception as exc:  # one bad item never stops the digest
                skipped.append((item.seq, type(exc).__name__))
                continue
            events.append(event)
            if channel not in channels:
                channels.append(channel)
        if skipped:  # one line per digest, however many items
            log.warning(
                "digest of %s: skipped %d unreadable item(s) (first: %d, %s)",
                recipient.id,
                len(skipped),
                *skipped[0],
            )
        result = DigestResult("sent", period, items=len(events))
        if not events:
            return result
        view = build_digest(
            recipient, events, previous, at, stale_after=timedelta(days=self.settings.stale_days)
        )
        result.view = view
        newest = max(events, key=lambda e: e.time)
        for channel in channels:
            try:
                target = recipient.target(channel)
            except InvalidInputError:
                continue
            base = Delivery(
                event=newest,
                recipient=recipient.id,
                recipient_name=recipient.name,
                target=target,
                timezone=recipient.timezone,
                locale=recipient.locale,
                recipient_version=version_of(recipient.created),
                digest_period=period,
            )
            if channel == "slack":  # Block Kit and its text fallback: no email to render
                rendered = Rendered(
                    subject=digest_subject_line(view)[:300],
                    text=fallback_text(view),
                    blocks=digest_blocks(view),
                )
            else:
                subject, text, html = self.render_email(view, self.links(base).preferences)
                rendered = Rendered(subject=subject[:300], text=text, html=html)
            result.deliveries.append(base.model_copy(update={"rendered": rendered}))
            result.channels.append(channel)
        return result

    async def preview(self, recipient_id: str, at: datetime | None = None) -> DigestResult:
        """What the recipient would get now, without sending or purging anything.

        Raises:
            NotFoundError: no such recipient.
        """
        recipient = await self._recipient(recipient_id)
        at = at or datetime.now(UTC)
        state, _ = await self._state(recipient.id)
        items = await read_subject(
            self.bus, DIGESTS, digest_subject(recipient.id), after_seq=_after(state)
        )
        period = period_key(recipient.digest, recipient.timezone, at)
        result = self.compose(recipient, items, state.get("previous", {}), at, period)
        result.outcome = "sent" if result.deliveries else "empty"
        return result

    # --------------------------------------------------------------------- state

    # The state is read with the batched lookup (the concurrent runs of a tick burst share
    # one request) and written with a plain publish carrying the expected last revision,
    # acknowledged through the connection's multiplexer: what ``Kv.get``/``update``
    # do, without a request, inbox future and timeout per call.

    async def _state(self, recipient_id: str) -> tuple[dict[str, Any], int]:
        """The recipient's state and its revision (0: never written).

        A deleted state reads as empty, with the revision of the delete to write after.
        """
        if self._lookup is None:
            self._lookup = KeyLookup(self.bus.nc, self.state.bucket)
        entry = await self._lookup.last(recipient_id)
        if entry is None:
            return {}, 0
        return (json.loads(entry.value) if entry.value else {}), entry.revision

    async def _cas(self, recipient_id: str, value: dict[str, Any], revision: int) -> int | None:
        """Write ``value`` if the state is still at ``revision``; the new revision, or None.

        Raises:
            TimeoutError: JetStream did not acknowledge the write in time.
            nats.errors.Error: the write could not be sent.
        """
        mux = ack_mux(self.bus.nc)
        [outcome] = await mux.gather(
            [await self._cas_publish(recipient_id, value, revision)], ACK_WAIT_S
        )
        if is_refused(outcome):  # another run wrote first
            return None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome.seq

    async def _cas_publish(self, recipient_id: str, value: dict[str, Any], revision: int) -> str:
        """Send the write of :meth:`_cas`; its token, for the connection's ack mux."""
        return await ack_mux(self.bus.nc).publish(
            self.state.subject(recipient_id),
            json.dumps(value).encode(),
            {"Nats-Expected-Last-Subject-Sequence": str(revision)},
        )


def _after(state: dict[str, Any]) -> int:
    """The last item sequence that an earlier digest already showed (0: none)."""
    if state.get("status") == "done":
        return int(state.get("through_seq", 0))
    return int(state.get("after_seq", 0))  # a claimed run reads what came after its own


async def schedule(bus: Bus, recipient: Recipient) -> None:
    """Publish (or replace) ``recipient``'s digest schedule on the server."""
    headers = schedule_headers(recipient.digest, recipient.timezone, tick_subject(recipient.id))
    await bus.js.publish(f"schedule.{recipient.id}", b"", headers=headers, stream=SCHEDULES)


async def unschedule(bus: Bus, recipient_id: str) -> None:
    """Stop ``recipient``'s digest schedule."""
    await bus.js.purge_stream(SCHEDULES, subject=f"schedule.{recipient_id}")


async def run_digest(rt: Runtime) -> None:
    """The digest service (``impactbus run digest``)."""
    from services.bus import DIGEST_CONSUMER
    from services.bus.consumer import ConsumerStats, run_each

    service = await DigestService.open(rt.bus, links=rt.links)
    await service.start()
    stats = rt.stats.setdefault("digest", ConsumerStats("digest"))
    try:
        await run_each(
            rt.bus,
            SCHEDULES,
            DIGEST_CONSUMER,
            service.handle_tick,
            stop=rt.stop,
            max_in_flight=16,
            stats=stats,
            failures=service.failures(rt.hub.failure_policy),
        )
    finally:
        await service.stop()
