"""Sending to Slack: :class:`SlackNotifier` and its one shared ``AsyncWebClient``.

It keeps one client with one aiohttp session (about 4x the throughput of a session per
call), lets slack-sdk's ``AsyncRateLimitErrorRetryHandler`` honour 429 + ``Retry-After``
and paces posts per conversation. Errors are translated at one boundary
(:func:`_slack_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar, Final

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from notifiers.base import (
    LinkMaker,
    NotifierBase,
    PermanentDeliveryError,
    TransientDeliveryError,
    no_links,
)
from notifiers.settings import SlackSettings
from notifiers.slack.blocks import compose_slack, slack_target
from schemas.delivery import Delivery, DeliveryResult

_PACE_MARGIN_S: Final = 0.1  # clock differences between us and Slack
_PACE_MAX_CHANNELS: Final = 10_000

DISABLE_TARGET: Final = frozenset({"channel_not_found", "is_archived", "not_in_channel"})
# ``ok: false`` answers that describe Slack's side, not ours: worth retrying.
TRANSIENT_ERRORS: Final = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


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
        target = slack_target(delivery)
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
