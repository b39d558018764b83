"""The Notifier protocol and the delivery errors notifiers raise.

A notifier sends one :class:`~schemas.delivery.Delivery` and returns a
:class:`~schemas.delivery.DeliveryResult`, or raises:

* :class:`TransientDeliveryError`: timeouts, refused connections, SMTP 4xx, HTTP 429/5xx.
  The delivery worker naks the job with an exponential, jittered delay.
* :class:`PermanentDeliveryError`: bad address, SMTP 5xx, HTTP 4xx, Slack
  ``channel_not_found``/``invalid_auth``. The job is dead-lettered, not retried.

Notifiers never return ``False`` for a failure: they raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Protocol, Self, runtime_checkable

from schemas.delivery import Delivery, DeliveryResult
from schemas.errors import ImpactbusError


class DeliveryError(ImpactbusError):
    """A delivery failed. ``reason`` is a short token used in ``dead.<reason>.…``."""

    reason: str = "failed"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason
        self.retry_after = retry_after


class TransientDeliveryError(DeliveryError):
    """Retry later: the receiving side is down, slow or rate-limiting."""

    reason = "exhausted"


class PermanentDeliveryError(DeliveryError):
    """Never retry: the target or the content is refused."""

    reason = "rejected"

    def __init__(
        self, message: str, *, reason: str | None = None, disable_target: bool = False
    ) -> None:
        super().__init__(message, reason=reason)
        self.disable_target = disable_target


@dataclass(frozen=True, slots=True)
class Links:
    """Personal links for the footer of a message."""

    preferences: str | None = None
    unsubscribe: str | None = None
    unsubscribe_mailto: str | None = None
    event: str | None = None


class LinkMaker(Protocol):
    """Builds a delivery's personal links (signed preference and unsubscribe URLs)."""

    def __call__(self, delivery: Delivery) -> Links: ...


def no_links(delivery: Delivery) -> Links:
    """The :class:`LinkMaker` of a hub with no web face configured."""
    return Links()


@runtime_checkable
class Notifier(Protocol):
    """Sends deliveries on one channel."""

    channel: ClassVar[str]

    async def send(self, delivery: Delivery) -> DeliveryResult:
        """Send one delivery.

        Raises:
            TransientDeliveryError: retry later.
            PermanentDeliveryError: do not retry.
        """
        ...

    async def aclose(self) -> None:
        """Close pooled connections and sessions."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NotifierBase:
    """Async-context-manager plumbing for notifiers (``aclose`` on exit)."""

    async def aclose(self) -> None:
        """Close pooled connections and sessions."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
