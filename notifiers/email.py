"""Email: compose a multipart message from the templates and send it over pooled SMTP.

:func:`compose_email` is pure: it renders the event's document once per (event,
locale, timezone) and reuses it for every recipient, splicing in only the recipient's
footer: the render costs more than the send, so it happens once per event, not once
per recipient.

Untrusted strings never reach a header unsanitised. Python 3.11's ``email`` package
decodes RFC 2047 encoded words on assignment, so a title such as
``=?utf-8?q?x=0D=0ABcc:_eve@x?=`` would otherwise become a real ``Bcc:`` header;
:func:`header_text` strips every line-breaking character and defuses ``=?``. Envelope
recipients are always passed explicitly, never taken from the headers.

:class:`EmailNotifier` sends through up to ``pool_size`` reused aiosmtplib connections
and translates aiosmtplib's exceptions into ``DeliveryError`` at one boundary
(:func:`_smtp_errors`), in the manner of httpx's ``map_httpcore_exceptions``.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from html import escape
from typing import ClassVar, Final, NamedTuple

import aiosmtplib
from markupsafe import Markup

from notifiers.base import (
    LinkMaker,
    Links,
    NotifierBase,
    PermanentDeliveryError,
    TransientDeliveryError,
    no_links,
)
from notifiers.render import render
from notifiers.settings import SmtpSettings
from notifiers.text import bar, local_time, metric_progress, number, with_unit, zone
from schemas.delivery import Delivery, DeliveryResult
from schemas.events import Event, MeetingNotes, MetricUpdate, Milestone, Update
from schemas.targets import EmailTarget

FOOTER_SLOT: Final = "<!--impactbus:footer-->"
"""Where the per-recipient footer goes. The layout puts it after all event content, so the
*last* occurrence is always the layout's own, even if user text contains the marker."""

SUBJECT_MAX: Final = 180

# C0, DEL, C1 (includes NEL U+0085) and the Unicode line/paragraph separators: all of
# them split lines somewhere (str.splitlines, mail clients), so none may enter a header.
_LINE_BREAKERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


# --------------------------------------------------------------------------- presentation
# Shared with notifiers/slack.py: how an event reads, independent of the channel's markup.

KIND_LABELS: Final = {
    "metric": "Metric update",
    "milestone": "Milestone",
    "meeting": "Meeting notes",
    "update": "Update",
}
STATUS_LABELS: Final = {
    "planned": "Planned",
    "reached": "Reached",
    "missed": "Missed",
    "at-risk": "At risk",
}


def paragraphs(text: str) -> list[list[str]]:
    """Paragraphs (split at blank lines), each a list of its lines."""
    blocks = re.split(r"\n(?:[ \t]*\n)+", text.strip())
    return [[line.rstrip() for line in b.split("\n")] for b in blocks if b.strip()]


def headline(event: Event) -> str:
    """One line naming the event: the subject line without the initiative."""
    match event.data:
        case MetricUpdate() as m:
            period = f" ({m.period})" if m.period else ""
            return f"{m.indicator}: {with_unit(m.value, m.unit)}{period}"
        case Milestone() as m:
            return f"Milestone {STATUS_LABELS[m.status].lower()}: {m.title}"
        case MeetingNotes() as m:
            return f"Meeting notes: {m.title}"
        case Update() as u:
            return u.title


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


# --------------------------------------------------------------------------- headers


def header_text(value: str) -> str:
    """``value`` made safe for a header: one line, no encoded words, no line breakers.

    Args:
        value: an untrusted string (title, display name...).

    Returns:
        The string with every control or line-breaking character replaced by a space,
        runs of whitespace collapsed, and ``=?`` turned into ``= ?`` so that the email
        package can never decode an RFC 2047 encoded word (which may carry CR/LF).
    """
    flat = " ".join(_LINE_BREAKERS.sub(" ", value).split())
    return flat.replace("=?", "= ?")


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def _angle(value: str) -> str:
    """A URL or message id for ``<...>`` in a header: nothing that ends the brackets."""
    return re.sub(r"[\s<>]", "", header_text(value))


class _UriListHeader(UnstructuredHeader, BaseHeader):
    """``List-Unsubscribe`` and friends: ``<uri>, <uri>`` kept verbatim.

    Python folds a long unstructured value into RFC 2047 encoded words, which is not
    allowed in these structured headers and breaks one-click unsubscribe (a signed URL is
    long). This folds only between the URIs and never encodes.
    """

    def fold(self, *, policy: Policy) -> str:
        name, parts = self.name, str(self).split(", ")
        if len(name) + 2 + len(str(self)) <= 78:
            return f"{name}: {self}{policy.linesep}"
        return f"{name}: " + f",{policy.linesep} ".join(parts) + policy.linesep


class _Registry(HeaderRegistry):
    """A header registry that builds each header class once.

    The stdlib's builds a new class every time a header is set (~0.5 ms a message here);
    the classes are stateless, so one per header name is enough.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        for name in ("list-unsubscribe", "list-unsubscribe-post", "list-id"):
            self.map_to_type(name, _UriListHeader)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


def _policy() -> Policy:
    # A registry of our own: the default policy's is shared by every user of `email`.
    return email_policy.default.clone(header_factory=_Registry())


POLICY: Final = _policy()
"""The default email policy, with ``List-*`` headers that are never encoded."""


def subject_line(event: Event) -> str:
    """``[<initiative>] <headline>``, one line of at most 180 characters."""
    return _clip(header_text(f"[{event.initiative}] {headline(event)}"), SUBJECT_MAX)


# --------------------------------------------------------------------------- rendering


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


# --------------------------------------------------------------------------- compose


def _email_target(delivery: Delivery) -> EmailTarget:
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
    target = _email_target(delivery)
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
    if in_reply_to and (ref := _angle(in_reply_to)):
        headers += [("In-Reply-To", f"<{ref}>"), ("References", f"<{ref}>")]
    if links.unsubscribe:
        targets = [f"<{_angle(links.unsubscribe)}>"]
        if links.unsubscribe_mailto:
            mailto = _angle(links.unsubscribe_mailto).removeprefix("mailto:")
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


# --------------------------------------------------------------------------- sending


@contextlib.contextmanager
def _smtp_errors() -> Iterator[None]:
    """Translate aiosmtplib's (and the socket's) exceptions into delivery errors."""
    try:
        yield
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)[:300]
        if codes and all(code >= 500 for code in codes):
            raise PermanentDeliveryError(f"recipient refused: {detail}") from exc
        raise TransientDeliveryError(f"recipient deferred: {detail}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        detail = f"SMTP {exc.code} {exc.message}"[:300]
        if exc.code >= 500:
            raise PermanentDeliveryError(detail, reason="rejected") from exc
        raise TransientDeliveryError(detail) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        # e.g. STARTTLS configured but not offered: retrying will not change that.
        raise PermanentDeliveryError(f"SMTP server: {exc}", reason="rejected") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientDeliveryError(f"SMTP: {exc or type(exc).__name__}") from exc


# Errors after which a connection is in an unknown state and must not be reused.
_BROKEN: Final = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


class EmailNotifier(NotifierBase):
    """Sends email through a pool of reused SMTP connections.

    Args:
        settings: the relay; ``pool_size`` bounds concurrent connections.
        links: builds each recipient's footer and ``List-Unsubscribe`` links.
    """

    channel: ClassVar[str] = "email"

    def __init__(self, settings: SmtpSettings, links: LinkMaker = no_links) -> None:
        self._settings = settings
        self._links = links
        self._envelope_from = parseaddr(settings.from_address)[1] or settings.from_address
        self._clients = [self._new_client() for _ in range(settings.pool_size)]
        # Idle connections (connected lazily); a sender waits here when all are busy.
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    @property
    def concurrency(self) -> int:
        """How many messages it sends at once (its SMTP connections).

        The delivery worker admits no more sends than this until their ``sent`` markers
        are stored, which bounds the duplicates a crash can cause to this number.
        """
        return self._settings.pool_size

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            use_tls=s.tls == "tls",
            start_tls=s.tls == "starttls",
            timeout=s.timeout,
        )

    async def send(self, delivery: Delivery, *, in_reply_to: str | None = None) -> DeliveryResult:
        """Send one delivery.

        Raises:
            TransientDeliveryError: refused or timed-out connection, disconnect, SMTP 4xx.
            PermanentDeliveryError: SMTP 5xx, refused recipient, unusable address.
        """
        target = _email_target(delivery)
        parts = email_parts(
            delivery, self._links(delivery), self._settings.from_address, in_reply_to=in_reply_to
        )
        raw: bytes | EmailMessage | None = wire_bytes(parts, delivery.job_id)
        if raw is None:  # non-ASCII address: let the email package encode it
            raw = compose_email(
                delivery,
                self._links(delivery),
                self._settings.from_address,
                in_reply_to=in_reply_to,
            )
        client = await self._idle.get()
        try:
            with _smtp_errors():
                await self._transmit(client, raw, target.address)
        finally:
            self._idle.put_nowait(client)
        return DeliveryResult(
            channel=self.channel,
            target=target.key,
            provider_id=parts.header("Message-ID"),
            sent_at=datetime.now(UTC),
        )

    async def _transmit(
        self, client: aiosmtplib.SMTP, msg: bytes | EmailMessage, rcpt: str
    ) -> None:
        reused = client.is_connected
        try:
            if not reused:
                await client.connect()
            try:
                await self._deliver(client, msg, rcpt)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The server dropped an idle pooled connection: reconnect once.
                client.close()
                await client.connect()
                await self._deliver(client, msg, rcpt)
        except (*_BROKEN, asyncio.CancelledError):
            client.close()
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing the channel
                client.close()
            raise

    async def _deliver(self, client: aiosmtplib.SMTP, msg: bytes | EmailMessage, rcpt: str) -> None:
        if isinstance(msg, bytes):
            await client.sendmail(self._envelope_from, [rcpt], msg)
        else:
            await client.send_message(msg, sender=self._envelope_from, recipients=[rcpt])

    async def aclose(self) -> None:
        """QUIT every pooled connection (call once no send is in flight)."""
        for client in self._clients:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
