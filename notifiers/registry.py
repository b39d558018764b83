"""The explicit channel -> notifier mapping (no plugin discovery).

Email and Slack fall back to the dev outbox when they are not configured, so the hub
works on embedded defaults and shows what it would have sent. Adding a channel is one
entry in :data:`FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from nats.js import JetStreamContext

from notifiers.base import LinkMaker, Notifier
from notifiers.email import EmailNotifier, SmtpSettings
from notifiers.outbox import OutboxNotifier
from notifiers.slack import SlackNotifier, SlackSettings
from notifiers.webhook import WebhookNotifier, WebhookSettings
from notifiers.webhook_secrets import KvSecretStore
from schemas.errors import InvalidInputError


def _email(js: JetStreamContext, links: LinkMaker) -> Notifier:
    smtp = SmtpSettings()
    if smtp.configured:
        return EmailNotifier(smtp, links)
    return OutboxNotifier(js, "email", links, smtp.from_address)


def _slack(js: JetStreamContext, links: LinkMaker) -> Notifier:
    slack = SlackSettings()
    if slack.configured:
        return SlackNotifier(slack, links)
    return OutboxNotifier(js, "slack", links, SmtpSettings().from_address)


def _webhook(js: JetStreamContext, links: LinkMaker) -> Notifier:
    settings = WebhookSettings()
    return WebhookNotifier(settings, secrets=KvSecretStore(js, settings))


FACTORIES: Final[dict[str, Callable[[JetStreamContext, LinkMaker], Notifier]]] = {
    "email": _email,
    "slack": _slack,
    "webhook": _webhook,
}


def build_notifier(channel: str, js: JetStreamContext, *, links: LinkMaker) -> Notifier:
    """The notifier of one channel, configured from the environment.

    Raises:
        InvalidInputError: unknown channel.
    """
    try:
        factory = FACTORIES[channel]
    except KeyError:
        raise InvalidInputError(f"unknown channel {channel!r}") from None
    return factory(js, links)


def build_notifiers(js: JetStreamContext, *, links: LinkMaker) -> dict[str, Notifier]:
    """One notifier per channel; the caller closes each with ``aclose()``."""
    return {channel: build_notifier(channel, js, links=links) for channel in FACTORIES}
