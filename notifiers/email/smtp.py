"""Sending email: a pool of reused aiosmtplib connections behind :class:`EmailNotifier`.

It sends through up to ``pool_size`` connections and translates aiosmtplib's exceptions
into ``DeliveryError`` at one boundary (:func:`_smtp_errors`), in the manner of httpx's
``map_httpcore_exceptions``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import ClassVar, Final

import aiosmtplib

from notifiers.base import (
    LinkMaker,
    NotifierBase,
    PermanentDeliveryError,
    TransientDeliveryError,
    no_links,
)
from notifiers.email.compose import compose_email, email_parts, email_target, wire_bytes
from notifiers.settings import SmtpSettings
from schemas.delivery import Delivery, DeliveryResult


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
        target = email_target(delivery)
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
