"""The bus-backed collaborators notifiers are built with.

Notifiers know no bus (:mod:`notifiers.registry`): the hub hands them an outbox
publisher and a webhook secret store that live here, on its connection.
"""

from __future__ import annotations

from notifiers.base import LinkMaker
from notifiers.registry import ChannelSettings, Collaborators
from services.bus.connection import Bus
from services.bus.outbox import outbox_publisher
from services.bus.webhook_secrets import KvSecretStore


def bus_collaborators(bus: Bus, settings: ChannelSettings, links: LinkMaker) -> Collaborators:
    """Links, the outbox publisher and the KV secret store on ``bus``.

    Args:
        bus: the hub's bus, its topology declared.
        settings: the channels' settings (the secret store's and the shared secrets).
        links: builds each recipient's links.
    """
    return Collaborators(
        links=links,
        publish=outbox_publisher(bus.nc, bus.settings.publish_timeout_s),
        secrets=KvSecretStore(bus, settings.webhook_secrets, settings.webhook.secrets),
    )
