"""Slack: Block Kit messages through one shared ``AsyncWebClient``.

:func:`compose_slack` is pure: a header, the kind's fields and texts, a context line and
the recipient's links, within Slack's limits (header 150 characters, section text 3000,
field 2000, 50 blocks). Every untrusted string in ``mrkdwn`` goes through
:func:`escape_mrkdwn`, and ``link_names`` is never set, so user text cannot mention
``@channel`` or a person, nor make a link.

:class:`SlackNotifier` keeps one client with one aiohttp session (about 4x the
throughput of a session per call) and lets slack-sdk's ``AsyncRateLimitErrorRetryHandler``
honour 429 + ``Retry-After``. Errors are translated at one boundary (:func:`_slack_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar, Final, NotRequired, TypedDict

import aiohttp
from pydantic import JsonValue
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from notifiers.base import (
    LinkMaker,
    Links,
    NotifierBase,
    PermanentDeliveryError,
    TransientDeliveryError,
    no_links,
)
from notifiers.presentation import KIND_LABELS, STATUS_LABELS, headline
from notifiers.settings import SlackSettings
from notifiers.text import local_time, metric_progress, with_unit, zone
from schemas.delivery import Delivery, DeliveryResult
from schemas.events import Event, MeetingNotes, MetricUpdate, Milestone, Update
from schemas.targets import SlackTarget

HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
FIELDS_MAX: Final = 10
BLOCKS_MAX: Final = 50
_PACE_MARGIN_S: Final = 0.1  # clock differences between us and Slack
_PACE_MAX_CHANNELS: Final = 10_000

STATUS_EMOJI: Final = {
    "planned": ":calendar:",
    "reached": ":white_check_mark:",
    "missed": ":x:",
    "at-risk": ":warning:",
}
# Slack error codes that say "this conversation cannot receive": stop sending to it.
DISABLE_TARGET: Final = frozenset({"channel_not_found", "is_archived", "not_in_channel"})
# ``ok: false`` answers that describe Slack's side, not ours: worth retrying.
TRANSIENT_ERRORS: Final = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

Block = dict[str, JsonValue]


class SlackMessage(TypedDict):
    """The arguments of ``chat.postMessage`` for one delivery."""

    channel: str
    text: str
    blocks: list[Block]
    thread_ts: NotRequired[str]


# --------------------------------------------------------------------------- mrkdwn


def escape_mrkdwn(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack requires.

    After this, ``<!channel>``, ``<!here>``, ``<@U123>`` and ``<https://x|click>`` in user
    text show as typed instead of notifying or linking.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(escaped: str, limit: int) -> int:
    # Where to cut `escaped` to at most `limit` characters: never inside an entity such
    # as `&amp;`, and at a space when there is one in the second half.
    cut = limit
    amp = escaped.rfind("&", max(0, limit - 4), limit)
    if amp != -1 and escaped.find(";", amp, limit) == -1:
        cut = amp
    space = escaped.rfind(" ", limit // 2, cut)
    return space + 1 if space > 0 else cut


def chunk_mrkdwn(text: str, limit: int = SECTION_MAX) -> list[str]:
    """Escape ``text`` and split it into pieces of at most ``limit`` characters.

    Pieces break at line ends where possible, never inside an ``&amp;``-style entity.
    """
    pieces: list[str] = []
    for line in text.split("\n"):
        escaped = escape_mrkdwn(line)
        while len(escaped) > limit:
            cut = _cut(escaped, limit)
            pieces.append(escaped[:cut])
            escaped = escaped[cut:]
        pieces.append(escaped)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= limit:
            chunks[-1] += "\n" + piece
        else:
            chunks.append(piece)
    return [c.strip("\n") for c in chunks if c.strip()]


def _clip_escaped(text: str, limit: int) -> str:
    escaped = escape_mrkdwn(text)
    return escaped if len(escaped) <= limit else escaped[: _cut(escaped, limit - 1)] + "…"


def _link(url: str, label: str) -> str:
    return f"<{escape_mrkdwn(url).replace('|', '%7C')}|{escape_mrkdwn(label)}>"


# --------------------------------------------------------------------------- blocks


def _sections(text: str, title: str | None = None) -> list[Block]:
    prefix = f"*{title}*\n" if title else ""
    chunks = chunk_mrkdwn(text, SECTION_MAX - len(prefix))
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": (prefix if i == 0 else "") + c}}
        for i, c in enumerate(chunks)
    ]


def _fields(pairs: list[tuple[str, str | None]]) -> list[Block]:
    fields: list[JsonValue] = []
    for label, value in pairs:
        if value and len(fields) < FIELDS_MAX:
            text = f"*{label}*\n{_clip_escaped(value, FIELD_MAX - 20)}"
            fields.append({"type": "mrkdwn", "text": text})
    return [{"type": "section", "fields": fields}] if fields else []


def _context(*parts: str) -> Block:
    text = " · ".join(p for p in parts if p)
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_MAX]}]}


def _kind_blocks(event: Event, timezone: str) -> list[Block]:
    match event.data:
        case MetricUpdate() as m:
            blocks = _fields(
                [
                    ("Value", with_unit(m.value, m.unit)),
                    ("Period", m.period),
                    ("Baseline", None if m.baseline is None else with_unit(m.baseline, m.unit)),
                    ("Target", None if m.target is None else with_unit(m.target, m.unit)),
                    (
                        "Good",
                        "higher is better" if m.direction == "increase" else "lower is better",
                    ),
                ]
            )
            if (pct := metric_progress(m)) is not None:
                bar = "█" * (pct // 10) + "░" * (10 - pct // 10)
                blocks += _sections(f"{bar}  {pct}% of the way from baseline to target")
            return blocks + _sections(m.note or "")
        case Milestone() as m:
            status = f"{STATUS_EMOJI[m.status]} {STATUS_LABELS[m.status]}"
            fields = _fields([("Status", status), ("Due", m.due.isoformat() if m.due else None)])
            return fields + _sections(m.note or "")
        case MeetingNotes() as m:
            held = local_time(m.held_at, zone(timezone))
            blocks = _fields([("Held", held), ("Attendees", ", ".join(m.attendees))])
            blocks += _sections(m.summary, "Summary")
            decisions = "\n".join(f"{i}. {d}" for i, d in enumerate(m.decisions, 1))
            blocks += _sections(decisions, "Decisions")
            actions = "\n".join(
                f"• {a.task} — {a.owner}" + (f" (due {a.due.isoformat()})" if a.due else "")
                for a in m.action_items
            )
            return blocks + _sections(actions, "Action items")
        case Update() as u:
            link = [_section_raw(_link(str(u.url), "Read more"))] if u.url else []
            return _sections(u.body) + link


def _section_raw(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def _footer(links: Links) -> list[Block]:
    parts = [
        _link(url, label)
        for url, label in (
            (links.event, "View online"),
            (links.preferences, "Preferences"),
            (links.unsubscribe, "Unsubscribe"),
        )
        if url
    ]
    return [_context(*parts)] if parts else []


def compose_slack(
    delivery: Delivery,
    links: Links,
    *,
    thread_ts: str | None = None,
) -> SlackMessage:
    """Build the ``chat.postMessage`` arguments for one delivery.

    Args:
        delivery: the event and its Slack target.
        links: the recipient's personal links, shown in a context block at the end.
        thread_ts: ``ts`` of the topic's first message, to reply in its thread
            (default: ``delivery.reply_to``, which the delivery worker sets).

    Returns:
        Channel, escaped fallback text and at most 50 blocks (longer content is cut,
        with a note saying so).

    Raises:
        PermanentDeliveryError: the target is not a Slack conversation.
    """
    target = _slack_target(delivery)
    thread_ts = thread_ts or delivery.reply_to
    if delivery.rendered is not None and delivery.rendered.blocks:
        # a digest: blocks built (and escaped) once by the digest service
        digest: SlackMessage = {
            "channel": target.conversation,
            "text": escape_mrkdwn(delivery.rendered.text),
            "blocks": delivery.rendered.blocks[:BLOCKS_MAX],
        }
        if thread_ts:
            digest["thread_ts"] = thread_ts
        return digest
    event = delivery.event
    title = event.data.indicator if isinstance(event.data, MetricUpdate) else event.data.title
    when = local_time(event.time, zone(delivery.timezone))
    head: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "emoji": True, "text": _clip(title, HEADER_MAX)},
        },
        _context(
            *(
                escape_mrkdwn(p)
                for p in (event.initiative, event.topic, KIND_LABELS[event.kind], when)
            )
        ),
    ]
    body = head + _kind_blocks(event, delivery.timezone)
    footer = _footer(links)
    room = BLOCKS_MAX - len(footer)
    if len(body) > room:
        hidden = len(body) - (room - 1)
        body = [*body[: room - 1], _context(f"_…{hidden} more blocks not shown._")]
    message: SlackMessage = {
        "channel": target.conversation,
        "text": _clip_escaped(f"[{event.initiative}] {headline(event)}", SECTION_MAX),
        "blocks": body + footer,
    }
    if thread_ts:
        message["thread_ts"] = thread_ts
    return message


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_target(delivery: Delivery) -> SlackTarget:
    if not isinstance(delivery.target, SlackTarget):
        raise PermanentDeliveryError(f"slack notifier got a {delivery.target.channel} target")
    return delivery.target


# --------------------------------------------------------------------------- sending


def _retry_after(response: object) -> float | None:
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _slack_errors() -> Iterator[None]:
    """Translate slack-sdk's and aiohttp's exceptions into delivery errors."""
    try:
        yield
    except SlackApiError as exc:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        data = getattr(exc.response, "data", None)
        error = str(data.get("error") or "") if isinstance(data, dict) else ""
        detail = f"Slack HTTP {status}: {error or 'error'}"
        if status == 429 or status >= 500 or error in TRANSIENT_ERRORS:
            raise TransientDeliveryError(detail, retry_after=_retry_after(exc.response)) from exc
        raise PermanentDeliveryError(detail, disable_target=error in DISABLE_TARGET) from exc
    except SlackRequestError as exc:  # the client refused our arguments: a bug, not luck
        raise PermanentDeliveryError(f"Slack request: {exc}") from exc
    except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise TransientDeliveryError(f"Slack: {exc or type(exc).__name__}") from exc


class SlackNotifier(NotifierBase):
    """Posts deliveries with one shared ``AsyncWebClient`` and aiohttp session.

    Args:
        settings: token, API URL, timeout and how often to retry a 429.
        links: builds each recipient's footer links.
    """

    channel: ClassVar[str] = "slack"

    def __init__(self, settings: SlackSettings, links: LinkMaker = no_links) -> None:
        self._settings = settings
        self._next_slot: dict[str, float] = {}
        self._links = links
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    def _web(self) -> AsyncWebClient:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._client is None:
            s = self._settings
            self._session = aiohttp.ClientSession()
            self._client = AsyncWebClient(
                token=s.token.get_secret_value() if s.token else None,
                base_url=s.api_url,
                timeout=s.timeout,
                session=self._session,
                retry_handlers=[
                    AsyncRateLimitErrorRetryHandler(max_retry_count=s.rate_limit_retries)
                ],
            )
        return self._client

    async def send(self, delivery: Delivery, *, thread_ts: str | None = None) -> DeliveryResult:
        """Post one delivery; ``thread_ts`` replies in that thread.

        Raises:
            TransientDeliveryError: 429 after retries, 5xx, timeout, connection error.
            PermanentDeliveryError: any other ``ok: false``; ``disable_target`` is set for
                ``channel_not_found``, ``is_archived`` and ``not_in_channel``.
        """
        target = _slack_target(delivery)
        message = compose_slack(delivery, self._links(delivery), thread_ts=thread_ts)
        await self._pace(message["channel"])
        with _slack_errors():
            response: AsyncSlackResponse = await self._web().chat_postMessage(
                channel=message["channel"],
                text=message["text"],
                blocks=message["blocks"],
                thread_ts=message.get("thread_ts"),
                unfurl_links=False,
                unfurl_media=False,
            )
        ts = response.get("ts")
        return DeliveryResult(
            channel=self.channel,
            target=target.key,
            provider_id=str(ts) if ts else None,
            sent_at=datetime.now(UTC),
        )

    async def _pace(self, conversation: str) -> None:
        """Wait for this conversation's next slot.

        Slack allows about one post per second per channel, and a 429 costs more than
        waiting. The slot is reserved before sleeping, so concurrent sends to one channel
        queue up in order. One process paces itself; across processes the rate-limit retry
        handler is the backstop.
        """
        rate = self._settings.per_channel_per_s
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_slot.get(conversation, now))
        self._next_slot[conversation] = slot + 1.0 / rate + _PACE_MARGIN_S
        if len(self._next_slot) > _PACE_MAX_CHANNELS:
            self._next_slot = {k: v for k, v in self._next_slot.items() if v > now}
        if slot > now:
            await asyncio.sleep(slot - now)

    async def aclose(self) -> None:
        """Close the shared aiohttp session."""
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()
