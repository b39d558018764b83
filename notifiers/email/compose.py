"""Composing an email (pure): the rendered bodies, the headers, the MIME or wire bytes.

:func:`compose_email` renders the event's document once per (event, locale, timezone)
and reuses it for every recipient, splicing in only the recipient's footer: the render
costs more than the send, so it happens once per event, not once per recipient. Envelope
recipients are never taken from these headers: the sender passes them explicitly.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from html import escape
from typing import Final, NamedTuple

from markupsafe import Markup

from notifiers.base import Links, PermanentDeliveryError
from notifiers.email.headers import POLICY, angle, header_text, subject_line
from notifiers.presentation import KIND_LABELS, STATUS_LABELS, headline, paragraphs
from notifiers.render import render
from notifiers.text import bar, local_time, metric_progress, number, with_unit, zone
from schemas.delivery import Delivery
from schemas.events import Event, MetricUpdate
from schemas.targets import EmailTarget

FOOTER_SLOT: Final = "<!--impactbus:footer-->"
"""Where the per-recipient footer goes. The layout puts it after all event content, so the
*last* occurrence is always the layout's own, even if user text contains the marker."""


def event_context(event: Event, timezone: str) -> dict[str, object]:
    """What the ``email/<kind>.*.j2`` templates see (times in the recipient's zone)."""
    tz = zone(timezone)
    when: Callable[[datetime], str] = lambda moment: local_time(moment, tz)  # noqa: E731
    ctx: dict[str, object] = {
        "event": event,
        "data": event.data,
        "kind": event.kind,
        "kind_label": KIND_LABELS[event.kind],
        "initiative": event.initiative,
        "topic": event.topic,
        "headline": headline(event),
        "when": when(event.time),
        "time": when,
        "paras": paragraphs,
        "number": number,
        "bar": bar,
        "status_labels": STATUS_LABELS,
    }
    if isinstance(event.data, MetricUpdate):
        m = event.data
        ctx["value"] = with_unit(m.value, m.unit)
        ctx["baseline"] = None if m.baseline is None else with_unit(m.baseline, m.unit)
        ctx["target"] = None if m.target is None else with_unit(m.target, m.unit)
        ctx["progress"] = metric_progress(m)
    return ctx


class _Document(NamedTuple):
    subject: str
    html: tuple[str, str]
    text: tuple[str, str]


class _RenderKey:
    """Carries an event into the cache; equal when event content, locale and zone are.

    Events hold lists, so they are not hashable themselves. The key is a digest of the
    event's JSON, not just its id: an id reused after the duplicate window must not get
    the old text. The timezone is in the key because times show in the recipient's zone.
    """

    __slots__ = ("event", "key", "locale", "timezone")

    def __init__(self, event: Event, locale: str, timezone: str) -> None:
        self.event, self.locale, self.timezone = event, locale, timezone
        digest = hashlib.blake2b(event.model_dump_json().encode(), digest_size=16).digest()
        self.key = (digest, locale, timezone)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RenderKey) and other.key == self.key


def _split(document: str) -> tuple[str, str]:
    head, slot, tail = document.rpartition(FOOTER_SLOT)
    if not slot:
        raise RuntimeError("email layout lost its footer slot")
    return head, tail


@lru_cache(maxsize=128)  # deliveries of one event arrive together: a few suffice
def _document(rk: _RenderKey) -> _Document:
    # Only "en" templates exist so far; the locale is in the key for when others do.
    ctx = event_context(rk.event, rk.timezone)
    kind = rk.event.kind
    html = render(f"email/{kind}.html.j2", footer_slot=Markup(FOOTER_SLOT), **ctx)  # noqa: S704 - constant
    text = render(f"email/{kind}.txt.j2", footer_slot=FOOTER_SLOT, **ctx)
    return _Document(subject_line(rk.event), _split(html), _split(text))


def _with_footer(doc: _Document, delivery: Delivery, links: Links) -> tuple[str, str]:
    text_footer, html_footer = _footer(links, delivery.event.initiative)
    return doc.text[0] + text_footer + doc.text[1], doc.html[0] + html_footer + doc.html[1]


@lru_cache(maxsize=8192)  # one per (recipient's links, initiative): reused across messages
def _footer(links: Links, initiative: str) -> tuple[str, str]:
    footer = {"links": links, "initiative": initiative}
    return render("email/_footer.txt.j2", **footer), render("email/_footer.html.j2", **footer)


def render_bodies(delivery: Delivery, links: Links) -> tuple[str, str]:
    """The (text, HTML) bodies of ``delivery`` with the recipient's footer.

    The event's part is rendered once per (event, locale, timezone) and cached.
    """
    doc = _document(_RenderKey(delivery.event, delivery.locale, delivery.timezone))
    return _with_footer(doc, delivery, links)


def email_target(delivery: Delivery) -> EmailTarget:
    """The delivery's email target.

    Raises:
        PermanentDeliveryError: the delivery is for another channel.
    """
    if not isinstance(delivery.target, EmailTarget):
        raise PermanentDeliveryError(
            f"email notifier got a {delivery.target.channel} target", reason="rejected"
        )
    return delivery.target


_MAX_HEADER: Final = 900  # SMTP lines end at 998; longer values take the folding path


@dataclass(frozen=True, slots=True)
class EmailParts:
    """What an email is made of, before MIME: headers in order, text and HTML bodies."""

    headers: tuple[tuple[str, str], ...]
    text: str
    html: str

    def header(self, name: str) -> str | None:
        """The value of header ``name``, if present."""
        return next((v for k, v in self.headers if k == name), None)


def email_parts(
    delivery: Delivery,
    links: Links,
    sender: str,
    *,
    in_reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailParts:
    """The headers and bodies of one delivery's email (see :func:`compose_email`).

    The dev outbox records these directly: building MIME costs more than rendering.

    Raises:
        PermanentDeliveryError: the target is not an email address that can be used.
    """
    target = email_target(delivery)
    event = delivery.event
    in_reply_to = in_reply_to or delivery.reply_to
    if delivery.rendered is not None:  # a digest: rendered once by the digest service
        subject = header_text(delivery.rendered.subject)
        text = delivery.rendered.text
        html = delivery.rendered.html or f"<pre>{escape(text)}</pre>"
    else:
        doc = _document(_RenderKey(event, delivery.locale, delivery.timezone))
        subject = doc.subject
        text, html = _with_footer(doc, delivery, links)
    to = _to_header(header_text(target.name or delivery.recipient_name or ""), target.address)
    headers = [
        ("Subject", subject),
        ("From", header_text(sender)),
        ("To", to),
        ("Date", format_datetime(now or datetime.now(UTC))),
        ("Message-ID", f"<{delivery.job_id}@impactbus>"),
        ("List-Id", f"{event.initiative} <{event.initiative}.impactbus>"),
        ("Auto-Submitted", "auto-generated"),
    ]
    if in_reply_to and (ref := angle(in_reply_to)):
        headers += [("In-Reply-To", f"<{ref}>"), ("References", f"<{ref}>")]
    if links.unsubscribe:
        targets = [f"<{angle(links.unsubscribe)}>"]
        if links.unsubscribe_mailto:
            mailto = angle(links.unsubscribe_mailto).removeprefix("mailto:")
            targets.append(f"<mailto:{mailto}>")
        headers += [
            ("List-Unsubscribe", ", ".join(targets)),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
    for key, value in headers:
        # Defence in depth: no header may carry a line break, whatever got past above.
        if "\r" in value or "\n" in value:
            raise PermanentDeliveryError(f"header {key} would span lines", reason="rejected")
    return EmailParts(tuple(headers), text, html)


@lru_cache(maxsize=65_536)
def _to_header(name: str, address: str) -> str:
    """``Name <address>`` with the name quoted as needed (cached: one per recipient)."""
    try:
        return str(Address(display_name=name, addr_spec=header_text(address)))
    except (ValueError, IndexError) as exc:
        raise PermanentDeliveryError(f"unusable address: {exc}", reason="rejected") from None


def wire_bytes(parts: EmailParts, boundary_seed: str) -> bytes | None:
    """The message as SMTP DATA bytes, built straight from ``parts``.

    Building an ``EmailMessage`` and flattening it costs about 2.5 ms of CPU per mail,
    more than SMTP itself; this costs about 0.3 ms and parses to the same message (see
    tests/notifiers/test_email.py). ``None`` when an address header is not ASCII: such a
    mail takes the ``EmailMessage`` path, which encodes display names properly.
    """
    lines: list[str] = []
    for key, value in parts.headers:
        if value.isascii():
            if len(value) > _MAX_HEADER:
                return None
            lines.append(f"{key}: {value}")
        elif key == "Subject":
            encoded = Header(value, "utf-8", header_name=key).encode(linesep="\r\n")
            lines.append(f"{key}: {encoded}")
        else:
            return None
    boundary = f"=_impactbus_{boundary_seed}"
    lines += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    out = [head]
    for subtype, body in (("plain", parts.text), ("html", parts.html)):
        out += [
            f"\r\n--{boundary}\r\n".encode(),
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode(),
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            binascii.b2a_qp(body.encode("utf-8"), quotetabs=False, istext=True),
        ]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


def compose_email(
    delivery: Delivery,
    links: Links,
    sender: str,
    *,
    in_reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """Build the multipart/alternative (text + HTML) message for one delivery.

    Args:
        delivery: the event and its email target.
        links: the recipient's personal links (footer, ``List-Unsubscribe``).
        sender: the ``From`` header, e.g. ``"impactbus <noreply@example.org>"``.
        in_reply_to: Message-ID of the topic's first message, to thread under it
            (default: ``delivery.reply_to``, which the delivery worker sets).
        now: the ``Date`` header (default: the current time).

    Returns:
        The message, with a ``Message-ID`` derived from ``delivery.job_id`` so that a
        retry carries the same id.

    Raises:
        PermanentDeliveryError: the target is not an email address that can be used.
    """
    parts = email_parts(delivery, links, sender, in_reply_to=in_reply_to, now=now)
    msg = EmailMessage(policy=POLICY)
    for key, value in parts.headers:
        msg[key] = value
    # Quoted-printable outright: left to choose, `email` encodes long-line HTML both as
    # QP and as base64 to keep the shorter, which costs more than the render.
    msg.set_content(parts.text, cte="quoted-printable")
    msg.add_alternative(parts.html, subtype="html", cte="quoted-printable")
    for key, value in msg.items():
        # The header classes re-render values: check what will go on the wire too.
        if "\r" in str(value) or "\n" in str(value):
            raise PermanentDeliveryError(f"header {key} would span lines", reason="rejected")
    return msg
