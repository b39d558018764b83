"""The dev outbox page (``/outbox``): what the hub would have sent, as recipients see it.

Only there while the dev outbox is in use (no SMTP relay or no Slack token configured),
and only for a signed-in backbone user, who sees only the messages of its initiatives:
the messages carry each recipient's personal links (see :func:`visible`). Emails are
shown in sandboxed ``<iframe srcdoc>`` elements (no scripts, no access to this page;
links open in a new tab), never inserted into the page. Slack Block Kit is
turned into plain structures here (:func:`slack_view`) and rendered by the autoescaping
template: mrkdwn links become ``<a>`` only for http(s) and mailto URLs.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Final, Literal

from fastapi import APIRouter, Request
from pydantic import JsonValue
from starlette.responses import Response

from notifiers.outbox import OUTBOX_CHANNELS, OutboxEntry
from notifiers.registry import ChannelSettings
from notifiers.text import local_time
from services.bus.outbox import read_outbox
from services.directory.access import foreign_initiatives
from services.directory.auth import Principal
from services.web.pages import CSP_OUTBOX, HtmlRoute, error_page, login_redirect, page
from services.web.session import current_session
from services.web.state import Web

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

SHOWN: Final = 50
_TOKEN: Final = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>|\*([^*\n]+)\*")
_LINKABLE: Final = ("https://", "http://", "mailto:")
# Links in a shown email open in a new tab, outside the sandbox.
EMAIL_PREFIX: Final = '<base target="_blank">'


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of Slack text: plain, bold, or a link."""

    text: str
    style: Literal["plain", "bold", "link"] = "plain"
    url: str | None = None


@dataclass(frozen=True, slots=True)
class BlockView:
    """One Slack block, reduced to what the page shows."""

    type: str
    lines: list[list[Span]] = field(default_factory=list)
    fields: list[list[Span]] = field(default_factory=list)


def outbox_channels(settings: ChannelSettings) -> list[str]:
    """The channels whose messages go to the dev outbox (not configured for real)."""
    configured = {"email": settings.smtp.configured, "slack": settings.slack.configured}
    return [c for c in OUTBOX_CHANNELS if not configured[c]]


def mrkdwn_spans(text: str) -> list[Span]:
    """Slack mrkdwn as spans: ``<url|label>`` links, ``*bold*``, the rest plain (unescaped)."""
    spans: list[Span] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            spans.append(Span(html.unescape(text[pos : m.start()])))
        if m.group(3) is not None:
            spans.append(Span(html.unescape(m.group(3)), "bold"))
        else:
            url = html.unescape(m.group(1))
            label = html.unescape(m.group(2) or m.group(1))
            linkable = url.startswith(_LINKABLE)
            spans.append(Span(label, "link" if linkable else "plain", url if linkable else None))
        pos = m.end()
    if pos < len(text):
        spans.append(Span(html.unescape(text[pos:])))
    return spans


def _text_of(obj: JsonValue) -> str:
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else ""
    return ""


def slack_view(blocks: list[JsonValue]) -> list[BlockView]:
    """Block Kit blocks as :class:`BlockView` s (unknown blocks are left out)."""
    views: list[BlockView] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "header":
            views.append(BlockView("header", [[Span(_text_of(block.get("text")))]]))
        elif kind == "section":
            lines = [mrkdwn_spans(_text_of(block.get("text")))] if block.get("text") else []
            raw_fields = block.get("fields")
            field_list = raw_fields if isinstance(raw_fields, list) else []
            fields = [mrkdwn_spans(_text_of(f)) for f in field_list]
            views.append(BlockView("section", lines, fields))
        elif kind == "context":
            elements = block.get("elements")
            parts = elements if isinstance(elements, list) else []
            views.append(BlockView("context", [mrkdwn_spans(_text_of(e)) for e in parts]))
        elif kind == "divider":
            views.append(BlockView("divider"))
    return views


def _when(value: JsonValue, tz: tzinfo) -> str:
    try:
        return local_time(datetime.fromisoformat(str(value)), tz)
    except ValueError:
        return str(value)


def entry_view(entry: OutboxEntry, tz: tzinfo = UTC) -> dict[str, object]:
    """What the page shows of one outbox entry (its time in ``tz``, the hub's zone)."""
    common = {
        "channel": entry.get("channel"),
        "recipient": entry.get("recipient"),
        "sent_at": _when(entry.get("sent_at"), tz),
    }
    if entry.get("channel") == "slack":
        blocks = entry.get("blocks")
        return {
            **common,
            "conversation": entry.get("conversation"),
            "text": entry.get("text"),
            "blocks": slack_view(blocks if isinstance(blocks, list) else []),
        }
    headers = entry.get("headers")
    unsubscribe = headers.get("List-Unsubscribe") if isinstance(headers, dict) else None
    return {
        **common,
        "to": entry.get("to"),
        "subject": entry.get("subject"),
        "srcdoc": EMAIL_PREFIX + str(entry.get("html") or ""),
        "text": entry.get("text"),
        "unsubscribe": unsubscribe,
    }


def visible(entry: OutboxEntry, principal: Principal, follows: dict[str, list[str]]) -> bool:
    """Whether ``principal`` may see an outbox entry (an admin sees every one).

    A message about one event belongs to that event's initiative. A digest may cover
    several initiatives, and an entry recorded before entries named their initiative
    says nothing: those are shown only when everything their recipient follows (now) is
    on the token's initiatives, the same test as for changing that recipient.

    Args:
        entry: one outbox record.
        principal: the signed-in token.
        follows: every recipient's subscription patterns (unused for an admin).
    """
    if principal.role == "admin":
        return True
    initiative = entry.get("initiative")
    if isinstance(initiative, str) and entry.get("digest") is False:
        return principal.in_scope(initiative)
    patterns = follows.get(str(entry.get("recipient")), [])
    return bool(patterns) and not foreign_initiatives(principal, patterns)


@router.get("/outbox")
async def outbox(request: Request, web: Web, channel: str | None = None) -> Response:
    """The newest messages the dev outbox caught, newest first."""
    channels = outbox_channels(web.channels)
    if not channels:
        return error_page(
            404, "No dev outbox", "Email and Slack are configured: messages are really sent."
        )
    session = await current_session(request, web)
    if session is None:
        return login_redirect(request)
    wanted = channel if channel in channels else None
    entries = await read_outbox(web.bus.js, wanted, SHOWN)
    follows: dict[str, list[str]] = {}
    if session.principal.role != "admin":
        for sub in await web.directory.list_subscriptions():
            follows.setdefault(sub.recipient, []).append(sub.pattern)
    shown = [
        entry_view(e, web.hub.zone)
        for e in reversed(entries)
        if e.get("channel") in channels and visible(e, session.principal, follows)
    ]
    return page(
        "outbox.html.j2",
        csp=CSP_OUTBOX,
        entries=shown,
        channels=channels,
        channel=wanted,
        signed_in=True,
        csrf=session.csrf,
    )
