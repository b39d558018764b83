"""Signed outgoing webhooks (Standard Webhooks 1.0), sent through the SSRF guard.

Every delivery is one ``POST`` of JSON to the target's URL::

    POST /hook HTTP/1.1
    content-type: application/json
    webhook-id: 3f1c...e9             the delivery's job id: the same on every retry
    webhook-timestamp: 1790000000     unix seconds of this attempt
    webhook-signature: v1,<base64>    one signature per configured secret, space-separated

    {"type": "org.impactbus.milestone",     "org.impactbus.<kind>"
     "timestamp": "2026-10-01T09:00:00Z",   the event's time
     "data": {...}}                         the CloudEvent, exactly as the hub ingests it

A digest delivery is ``{"type": "org.impactbus.digest", "timestamp": <newest event's
time>, "data": {"period": "2026-10-01", "subject": ..., "text": <the digest as text>}}``.

The signature is ``base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))``
where ``key`` is the base64 text after ``whsec_`` in the secret (signing and the
secret format: :mod:`notifiers.webhook_signing`). Receivers check it with
:func:`~notifiers.webhook_signing.verify` (or any Standard Webhooks library), refuse
timestamps more than five minutes away and drop repeated ``webhook-id`` values. With two
secrets configured (a rotation), both signatures are sent, so either secret verifies.

Outcomes of a send:

* 2xx: sent; the result's ``provider_id`` is the ``webhook-id``.
* 3xx: :class:`PermanentDeliveryError` ``reason="redirect"``; redirects are never followed.
* 408, 429, 5xx, timeouts, connection errors: :class:`TransientDeliveryError`, with
  ``retry_after`` from a ``Retry-After`` header.
* 410: :class:`PermanentDeliveryError` ``reason="gone"``, ``disable_target=True``.
* other 4xx: :class:`PermanentDeliveryError`.
* a forbidden address (see :mod:`notifiers.ssrf`): :class:`PermanentDeliveryError`
  ``reason="ssrf"``, ``disable_target=True``; no connection is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar, Final, Protocol

import aiohttp
from pydantic import AwareDatetime, BaseModel, ConfigDict

from notifiers.base import (
    DeliveryError,
    NotifierBase,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from notifiers.settings import WebhookSettings
from notifiers.ssrf import BlockedSocketError, check_address, guarded_connector, parse_host
from notifiers.webhook_signing import signature_header
from schemas.delivery import Delivery, DeliveryResult
from schemas.events import TYPE_PREFIX, Event
from schemas.targets import WebhookTarget

USER_AGENT: Final = "impactbus-webhook/0.1"
_DRAIN_LIMIT: Final = 64 * 1024


class SecretStore(Protocol):
    """Where a target's signing secrets come from (newest first)."""

    async def get(self, target_key: str) -> list[str]:
        """The secrets for the target with key ``target_key``; empty if it has none."""
        ...


class SettingsSecretStore:
    """The same secrets for every target, from ``IMPACTBUS_WEBHOOK_SECRET``."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._secrets = settings.secrets

    async def get(self, target_key: str) -> list[str]:
        """The configured secrets, newest first."""
        return list(self._secrets)


class DigestData(BaseModel):
    """The ``data`` of a digest webhook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    period: str | None
    subject: str
    text: str


class WebhookPayload(BaseModel):
    """The JSON body of a webhook (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    timestamp: AwareDatetime
    data: Event | DigestData


def payload_for(delivery: Delivery) -> WebhookPayload:
    """The body of the webhook for ``delivery``."""
    event = delivery.event
    if delivery.rendered is not None:
        data = DigestData(
            period=delivery.digest_period,
            subject=delivery.rendered.subject,
            text=delivery.rendered.text,
        )
        return WebhookPayload(type=f"{TYPE_PREFIX}digest", timestamp=event.time, data=data)
    return WebhookPayload(type=event.type, timestamp=event.time, data=event)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def status_error(status: int, retry_after: float | None = None) -> DeliveryError | None:
    """The error for an HTTP response status, or ``None`` for a 2xx success."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return PermanentDeliveryError(
            f"HTTP {status}: redirects are not followed", reason="redirect"
        )
    if status in (408, 429) or status >= 500:
        return TransientDeliveryError(f"HTTP {status}", retry_after=retry_after)
    if status == 410:
        return PermanentDeliveryError("HTTP 410: endpoint gone", reason="gone", disable_target=True)
    return PermanentDeliveryError(f"HTTP {status}: refused by the endpoint")


class WebhookNotifier(NotifierBase):
    """Sends signed JSON webhooks through one shared, SSRF-guarded aiohttp session.

    Args:
        settings: timeout, loopback permission and (for the default store) secrets.
        secrets: where each target's signing secrets come from; the settings by default.
        clock: unix time, for ``webhook-timestamp``.
    """

    channel: ClassVar[str] = "webhook"

    def __init__(
        self,
        settings: WebhookSettings | None = None,
        *,
        secrets: SecretStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or WebhookSettings()
        self._secrets = secrets or SettingsSecretStore(self.settings)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(allow_loopback=self.settings.allow_loopback),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                trust_env=False,  # an environment proxy would be an unguarded hop
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def send(self, delivery: Delivery) -> DeliveryResult:
        """POST the delivery's event, signed, to its webhook target.

        Raises:
            TransientDeliveryError: timeout, connection error, HTTP 408, 429 or 5xx.
            PermanentDeliveryError: HTTP 3xx or 4xx, a forbidden address, no secret.
        """
        target = delivery.target
        if not isinstance(target, WebhookTarget):
            raise PermanentDeliveryError(f"not a webhook target: {target.key}", reason="channel")
        literal = parse_host(target.url.host or "")
        if literal is not None:  # fail fast; the connector checks again at connect time
            check_address(literal, allow_loopback=self.settings.allow_loopback)
        secrets = await self._secrets.get(target.key)
        if not secrets:
            raise PermanentDeliveryError(f"no signing secret for {target.key}", reason="no-secret")
        body = payload_for(delivery).model_dump_json().encode()
        msg_id = delivery.job_id
        timestamp = int(self._clock())
        try:
            signature = signature_header(secrets, msg_id, timestamp, body)
        except ValueError as exc:
            raise PermanentDeliveryError(
                f"bad secret for {target.key}: {exc}", reason="secret"
            ) from None
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        status, retry_after = await self._post(str(target.url), body, headers)
        error = status_error(status, retry_after)
        if error is not None:
            raise error
        return DeliveryResult(
            channel=self.channel, target=target.key, provider_id=msg_id, sent_at=datetime.now(UTC)
        )

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, float | None]:
        """POST and return the status and ``Retry-After``; aiohttp errors translated."""
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                read = 0
                async for chunk in response.content.iter_any():  # drained: connection reused
                    read += len(chunk)
                    if read > _DRAIN_LIMIT:
                        break
                retry_after = retry_after_seconds(
                    response.headers.get("Retry-After"), datetime.now(UTC)
                )
                return response.status, retry_after
        except TimeoutError:
            raise TransientDeliveryError(
                f"no response within {self.settings.timeout:g} s from {url}"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedSocketError):
                raise PermanentDeliveryError(
                    str(exc.os_error), reason="ssrf", disable_target=True
                ) from None
            raise TransientDeliveryError(f"cannot connect to {url}: {exc.os_error}") from None
        except aiohttp.InvalidURL as exc:
            raise PermanentDeliveryError(f"invalid webhook URL: {exc}", reason="bad-url") from None
        except aiohttp.ClientError as exc:
            raise TransientDeliveryError(f"webhook to {url} failed: {exc!r}") from None

    async def aclose(self) -> None:
        """Close the shared session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
