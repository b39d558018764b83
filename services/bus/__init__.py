"""The only package that talks to NATS.

Connection, embedded server, topology, consumer loops, acknowledgements, typed KV buckets
(:mod:`services.bus.kv`), stream reads and the message type (:mod:`services.bus.streams`),
the ``$KV.``/``$JS.API.`` subjects (:mod:`services.bus.apisubjects`), failure policy, the
AsyncAPI export.

Everything above it (directory, pipeline, digest, the faces, the runtime) reaches NATS
through these modules. It imports nothing of ``services`` outside itself.
"""

from services.bus.connection import (
    Bus,
)
from services.bus.embedded import (
    DEFAULT_PORT,
    EmbeddedNats,
    HubLocation,
    MiB,
    NatsSettings,
    free_port,
    hub_file,
    locate_hub,
    nats_server_binary,
    port_is_free,
    read_hub_file,
    remove_hub_file,
    resolve_nats_url,
    stop_orphaned_server,
    write_hub_file,
)
from services.bus.errors import hub_error, map_nats_errors
from services.bus.names import (
    DEAD,
    DELIVERIES,
    DELIVERY_LOG,
    DIGEST_CONSUMER,
    DIGESTS,
    EVENTS,
    KV_DIGEST_STATE,
    KV_IDEMPOTENCY,
    KV_RECIPIENTS,
    KV_SENT,
    KV_SUBSCRIPTIONS,
    KV_THREADS,
    KV_TOKENS,
    KV_WEBHOOK_SECRETS,
    OUTBOX,
    ROUTER_CONSUMER,
    SCHEDULES,
)

__all__ = [
    "DEAD",
    "DEFAULT_PORT",
    "DELIVERIES",
    "DELIVERY_LOG",
    "DIGESTS",
    "DIGEST_CONSUMER",
    "EVENTS",
    "KV_DIGEST_STATE",
    "KV_IDEMPOTENCY",
    "KV_RECIPIENTS",
    "KV_SENT",
    "KV_SUBSCRIPTIONS",
    "KV_THREADS",
    "KV_TOKENS",
    "KV_WEBHOOK_SECRETS",
    "OUTBOX",
    "ROUTER_CONSUMER",
    "SCHEDULES",
    "Bus",
    "EmbeddedNats",
    "HubLocation",
    "MiB",
    "NatsSettings",
    "free_port",
    "hub_error",
    "hub_file",
    "locate_hub",
    "map_nats_errors",
    "nats_server_binary",
    "port_is_free",
    "read_hub_file",
    "remove_hub_file",
    "resolve_nats_url",
    "stop_orphaned_server",
    "write_hub_file",
]
