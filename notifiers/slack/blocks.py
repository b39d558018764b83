"""Slack Block Kit messages (pure): :func:`compose_slack` and the mrkdwn escaping.

A header, the kind's fields and texts, a context line and the recipient's links, within
Slack's limits (header 150 characters, section text 3000, field 2000, 50 blocks). Every
untrusted string in ``mrkdwn`` goes through :func:`escape_mrkdwn`, and ``link_names`` is
never set, so user text cannot mention ``@channel`` or a person, nor make a link.
"""

from __future__ import annotations

from typing import Final, NotRequired, TypedDict

from pydantic import JsonValue

from notifiers.base import Links, PermanentDeliveryError
from notifiers.presentation import KIND_LABELS, STATUS_LABELS, headline
from notifiers.text import local_time, metric_progress, with_unit, zone
from schemas.delivery import Delivery
from schemas.events import Event, MeetingNotes, MetricUpdate, Milestone, Update
from schemas.targets import SlackTarget

HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
FIELDS_MAX: Final = 10
BLOCKS_MAX: Final = 50

STATUS_EMOJI: Final = {
    "planned": ":calendar:",
    "reached": ":white_check_mark:",
    "missed": ":x:",
    "at-risk": ":warning:",
}
# Slack error codes that say "this conversation cannot receive": stop sending to it.

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
    target = slack_target(delivery)
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


def slack_target(delivery: Delivery) -> SlackTarget:
    """The delivery's Slack target.

    Raises:
        PermanentDeliveryError: the delivery is for another channel.
    """
    if not isinstance(delivery.target, SlackTarget):
        raise PermanentDeliveryError(f"slack notifier got a {delivery.target.channel} target")
    return delivery.target
