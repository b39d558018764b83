"""The explicit channel -> notifier mapping (no plugin discovery).

Email and Slack fall back to the dev outbox when they are not configured, so the hub
works on embedded defaults and shows what it would have sent. Adding a channel is one
entry in :data:`FACTORIES`.

Notifiers know no bus and read no environment here: the caller (the hub's process edge)
hands over the settings it read once and the collaborators that reach the bus, a
:data:`~notifiers.outbox.Publish` for the outbox and a
:class:`~notifiers.webhook.SecretStore` for webhook signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from notifiers.base import LinkMaker, Notifier
from notifiers.email.smtp import EmailNotifier
from notifiers.outbox import OutboxNotifier, Publish
from notifiers.settings import SecretStoreSettings, SlackSettings, SmtpSettings, WebhookSettings
from notifiers.slack.client import SlackNotifier
from notifiers.webhook import SecretStore, WebhookNotifier
from schemas.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """The settings of every channel, read once where the process starts."""

    smtp: SmtpSettings
    slack: SlackSettings
    webhook: WebhookSettings
    webhook_secrets: SecretStoreSettings


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What notifiers are handed to reach the bus.

    Attributes:
        links: builds each recipient's links.
        publish: stores an outbox record (``services.bus.outbox.outbox_publisher``).
        secrets: the webhook signing secrets (``services.bus.webhook_secrets``).
    """

    links: LinkMaker
    publish: Publish
    secrets: SecretStore


def _email(settings: ChannelSettings, using: Collaborators) -> Notifier:
    if settings.smtp.configured:
        return EmailNotifier(settings.smtp, using.links)
    return OutboxNotifier(using.publish, "email", using.links, settings.smtp.from_address)


def _slack(settings: ChannelSettings, using: Collaborators) -> Notifier:
    if settings.slack.configured:
        return SlackNotifier(settings.slack, using.links)
    return OutboxNotifier(using.publish, "slack", using.links, settings.smtp.from_address)


def _webhook(settings: ChannelSettings, using: Collaborators) -> Notifier:
    return WebhookNotifier(settings.webhook, secrets=using.secrets)


FACTORIES: Final[dict[str, Callable[[ChannelSettings, Collaborators], Notifier]]] = {
    "email": _email,
    "slack": _slack,
    "webhook": _webhook,
}


def build_notifier(channel: str, settings: ChannelSettings, using: Collaborators) -> Notifier:
    """The notifier of one channel.

    Args:
        channel: a key of :data:`FACTORIES`.
        settings: every channel's settings.
        using: the links, outbox publisher and secret store to hand over.

    Raises:
        InvalidInputError: unknown channel.
    """
    try:
        factory = FACTORIES[channel]
    except KeyError:
        raise InvalidInputError(f"unknown channel {channel!r}") from None
    return factory(settings, using)


def build_notifiers(settings: ChannelSettings, using: Collaborators) -> dict[str, Notifier]:
    """One notifier per channel; the caller closes each with ``aclose()``."""
    return {channel: build_notifier(channel, settings, using) for channel in FACTORIES}
